"""Fixtures for the agent's tests: a fake relay (real WebSocket), a canned backend (real HTTP)."""

import pytest
import trio

from tests.agent.fakes import CannedBackend, FakeRelay, start_fake_relay


@pytest.fixture
async def fake_relay(nursery: trio.Nursery) -> FakeRelay:
    """A `FakeRelay` listening on 127.0.0.1 (``fake_relay.url``)."""
    return await start_fake_relay(nursery)


@pytest.fixture
async def canned_backend(nursery: trio.Nursery) -> CannedBackend:
    """A `CannedBackend` listening on 127.0.0.1 (``canned_backend.url``)."""
    backend = CannedBackend()
    await nursery.start(backend.run)
    return backend
