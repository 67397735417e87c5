"""A fleet agent's budget refusal (`fleet_busy`) at the relay.

An agent connected to several relays has one concurrency budget across them,
so it refuses a request its budget cannot take even when this relay counts a
free slot. That refusal is not a fault: the request goes back to the head of
the queue without counting against the requeue cap, the worker keeps its
capacity, and it is routed nothing more until it says it has room (a
completion at this relay, or a pong below its capacity).

In memory (tests/relay/memory_relay.py), ordered by frames and
`wait_all_tasks_blocked`.
"""

from __future__ import annotations

import trio
import trio.testing

import wire
from tests.relay.memory_relay import refusal

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
FLEET = (wire.CAPABILITY_DRAIN, wire.CAPABILITY_FLEET)


async def test_the_relay_agrees_the_fleet_capability(memory_relay) -> None:
    worker = await memory_relay.attach_worker(capabilities=FLEET)
    assert worker.ack.capabilities is not None
    assert wire.CAPABILITY_FLEET in worker.ack.capabilities


async def test_budget_refusal_bounces_without_counting_or_lowering_capacity(
    memory_relay,
) -> None:
    """Refused more times than --max-requeues allows: still served, capacity kept."""
    hub = memory_relay.hub
    worker = await memory_relay.attach_worker(max_concurrent=2, capabilities=FLEET)
    state = hub.workers[worker.worker_id]
    held_exchange = memory_relay.start(json_body=CHAT)
    with trio.fail_after(5):
        held = await worker.recv_request()
        bounced_exchange = memory_relay.start(json_body=CHAT)
        for _ in range(hub.config.max_requeues + 2):
            bounced = await worker.recv_request()
            await worker.send(refusal(bounced, wire.REFUSED_FLEET_BUSY))
            await trio.testing.wait_all_tasks_blocked()
            assert state.saturated
            assert state.max_concurrent == 2  # its claim was honest
            assert len(hub.queue) == 1  # waiting for room, not sent again
            assert not bounced_exchange.finished.is_set()
            # Room again (the agent's unsolicited pong): the queue's head goes to it.
            await worker.send(wire.Pong(current_load=1))
        last = await worker.recv_request()
        await worker.reply(last, '{"bounced":"served"}')
        await worker.reply(held, '{"held":"served"}')
        await bounced_exchange.finished.wait()
        await held_exchange.finished.wait()
    assert bounced_exchange.response().json() == {"bounced": "served"}
    assert held_exchange.response().json() == {"held": "served"}
    assert hub.stats.requeues == 0
    assert state.backend_errors == 0  # a refusal is not the backend failing
    assert not state.saturated


async def test_a_completion_ends_the_saturation(memory_relay) -> None:
    """A request finishing at this relay frees a slot of the agent's budget."""
    hub = memory_relay.hub
    worker = await memory_relay.attach_worker(max_concurrent=2, capabilities=FLEET)
    first = memory_relay.start(json_body=CHAT)
    with trio.fail_after(5):
        held = await worker.recv_request()
        second = memory_relay.start(json_body=CHAT)
        await worker.send(refusal(await worker.recv_request(), wire.REFUSED_FLEET_BUSY))
        await trio.testing.wait_all_tasks_blocked()
        assert hub.workers[worker.worker_id].saturated
        await worker.reply(held, "{}")
        await worker.reply(await worker.recv_request(), "{}")
        await first.finished.wait()
        await second.finished.wait()
    assert first.response().status == second.response().status == 200


async def test_a_pong_at_full_load_keeps_the_worker_saturated(memory_relay) -> None:
    hub = memory_relay.hub
    worker = await memory_relay.attach_worker(max_concurrent=1, capabilities=FLEET)
    exchange = memory_relay.start(json_body=CHAT)
    with trio.fail_after(5):
        await worker.send(refusal(await worker.recv_request(), wire.REFUSED_FLEET_BUSY))
        await worker.send(wire.Pong(current_load=1))  # still full elsewhere
        await trio.testing.wait_all_tasks_blocked()
        assert hub.workers[worker.worker_id].saturated
        assert len(hub.queue) == 1
        await worker.send(wire.Pong(current_load=0))
        await worker.reply(await worker.recv_request(), "{}")
        await exchange.finished.wait()
    assert exchange.response().status == 200
