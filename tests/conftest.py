"""Shared fixtures: the fake LLM backend (tests/fake_backend.py) on a real socket."""

import pytest
import trio

from tests.fake_backend import FakeBackend


@pytest.fixture
async def fake_backend(nursery: trio.Nursery) -> FakeBackend:
    """A `FakeBackend` serving on 127.0.0.1 (``fake_backend.url``) for the test's duration."""
    backend = FakeBackend()
    await nursery.start(backend.run)
    return backend
