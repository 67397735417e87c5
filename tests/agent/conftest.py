"""Fixtures for the agent's tests: a fake relay on a real WebSocket."""

import pytest
import trio

from tests.agent.fakes import FakeRelay, start_fake_relay


@pytest.fixture
async def fake_relay(nursery: trio.Nursery) -> FakeRelay:
    """A `FakeRelay` listening on 127.0.0.1 (``fake_relay.url``)."""
    return await start_fake_relay(nursery)
