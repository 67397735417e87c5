"""Hub timing logic on a memory transport and the autojump clock.

No sockets: virtual time makes heartbeat and cancel-grace deadlines exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

import wire
from relay.worker_hub import Hub, Ticket
from tests.relay.conftest import make_config
from tests.relay.memory_relay import MemoryTransport

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def hub(tmp_path: Path) -> Hub:
    return Hub(make_config(tmp_path, heartbeat_interval=15.0, heartbeat_timeout=45.0))


@pytest.fixture
async def agent(hub: Hub, nursery: trio.Nursery) -> MemoryTransport:
    """A worker registered on `hub`: the agent's end of its memory transport."""
    agent = MemoryTransport()
    nursery.start_soon(hub.run_session, agent, "mem")
    await agent.agent_send(wire.Register(worker_name="w", models=("m",), max_concurrent=1))
    assert isinstance(await agent.agent_recv(), wire.RegisterAck)
    return agent


async def test_pings_every_interval_and_drops_after_timeout(
    hub: Hub, agent: MemoryTransport, autojump_clock: trio.testing.MockClock
) -> None:
    start = trio.current_time()
    ping = await agent.agent_recv()
    assert isinstance(ping, wire.Ping)
    assert trio.current_time() - start == pytest.approx(15.0)
    # Silence: the worker is gone 45 s after its last frame (the register).
    await agent.closed_event.wait()
    assert trio.current_time() - start == pytest.approx(45.0)
    assert agent.closed[0] == 1001
    assert not hub.workers


async def test_any_frame_counts_as_an_answer(
    hub: Hub, agent: MemoryTransport, autojump_clock: trio.testing.MockClock
) -> None:
    for _ in range(10):  # 300 virtual seconds of models_updates, no pongs
        await trio.sleep(30)
        await agent.agent_send(wire.ModelsUpdate(models=("m",), current_load=0))
    assert len(hub.workers) == 1
    assert agent.closed is None


async def test_unanswered_cancel_holds_slot_for_grace(
    hub: Hub, agent: MemoryTransport, autojump_clock: trio.testing.MockClock
) -> None:
    (worker,) = hub.workers.values()
    ticket = Ticket(request_id="r1", model="m", arrival=trio.current_time())
    lease = await hub.acquire(ticket)
    lease.post_request("{}")
    lease.close(wire.CancelReason.CLIENT_DISCONNECT)
    assert worker.in_flight == 1
    cancelled_at = trio.current_time()
    second = Ticket(request_id="r2", model="m", arrival=trio.current_time())
    await hub.acquire(second)  # waits in the queue for the held slot
    assert trio.current_time() - cancelled_at == pytest.approx(hub.config.cancel_grace)
