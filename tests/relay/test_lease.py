"""A lease's hand-off from the worker's reader to the request's task (relay/worker_hub.py)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import wire
from relay.worker_hub import Lease


def _lease() -> Lease:
    # feed/finish/receive never reach the worker below the byte bounds.
    return Lease("r1", worker=None, max_buffered=1000, max_total=10_000)  # type: ignore[arg-type]


async def test_what_is_waiting_comes_in_one_batch_in_order() -> None:
    lease = _lease()
    done = wire.ResponseComplete("r1", 200)
    lease.feed("a")
    lease.feed("bb")
    lease.finish(done)
    assert lease.buffered == 3
    assert await lease.receive() == ["a", "bb", done]
    assert lease.buffered == 0


async def test_a_waiting_receive_wakes_with_everything_fed_meanwhile(nursery) -> None:
    lease = _lease()
    got: list[object] = []

    async def request_task() -> None:
        got.extend(await lease.receive())

    nursery.start_soon(request_task)
    await trio.testing.wait_all_tasks_blocked()
    lease.feed("x")
    lease.feed("y")  # before the woken task runs: same batch
    await trio.testing.wait_all_tasks_blocked()
    assert got == ["x", "y"]


async def test_cancelled_while_waiting_then_fed_is_harmless(autojump_clock) -> None:
    lease = _lease()
    with trio.move_on_after(1) as waited:
        await lease.receive()
    assert waited.cancelled_caught
    lease.feed("late")  # no waiter left to wake
    assert await lease.receive() == ["late"]


async def test_receive_is_a_cancellation_point_even_with_items_waiting() -> None:
    lease = _lease()
    lease.feed("x")
    with trio.CancelScope() as scope:
        scope.cancel()
        await lease.receive()
        pytest.fail("a cancelled receive must raise")
    assert await lease.receive() == ["x"]
