"""A lease's hand-off from the worker's reader to the request's task (relay/worker_hub.py)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import wire
from relay.boundary import ClientWriter, Sent
from relay.worker_hub import FLUSH, Lease


@pytest.fixture
def lease() -> Lease:
    # feed/finish/receive never reach the worker below the byte bounds.
    return Lease("r1", worker=None, max_buffered=1000, max_total=10_000)  # type: ignore[arg-type]


async def test_what_is_waiting_comes_in_one_batch_in_order(lease: Lease) -> None:
    done = wire.ResponseComplete("r1", 200)
    lease.feed("a")
    lease.feed("bb")
    lease.finish(done)
    assert lease.buffered == 3
    assert await lease.receive() == ["a", "bb", done]
    assert lease.buffered == 0


async def test_a_waiting_receive_wakes_with_everything_fed_meanwhile(lease: Lease, nursery) -> None:
    got: list[object] = []

    async def request_task() -> None:
        got.extend(await lease.receive())

    nursery.start_soon(request_task)
    await trio.testing.wait_all_tasks_blocked()
    lease.feed("x")
    lease.feed("y")  # before the woken task runs: same batch
    await trio.testing.wait_all_tasks_blocked()
    assert got == ["x", "y"]


async def test_cancelled_while_waiting_then_fed_is_harmless(lease: Lease, autojump_clock) -> None:
    with trio.move_on_after(1) as waited:
        await lease.receive()
    assert waited.cancelled_caught
    lease.feed("late")  # no waiter left to wake
    assert await lease.receive() == ["late"]


async def test_receive_is_a_cancellation_point_even_with_items_waiting(lease: Lease) -> None:
    lease.feed("x")
    with trio.CancelScope() as scope:
        scope.cancel()
        await lease.receive()
        pytest.fail("a cancelled receive must raise")
    assert await lease.receive() == ["x"]


class _Client:
    """The server's `send_now` behind `Lease.direct`: records pieces, answers as told."""

    def __init__(self, answer: Sent) -> None:
        self.answer = answer
        self.written: list[str] = []

    def __call__(self, body: bytes) -> Sent:
        if self.answer is not Sent.NONE:
            self.written.append(body.decode())
        return self.answer


async def _no_send(message: object) -> None:
    raise AssertionError("these tests write through send_now only")


def _direct(lease: Lease, answer: Sent) -> _Client:
    client = _Client(answer)
    lease.direct = ClientWriter(_no_send, client)
    return client


async def _parked(
    lease: Lease, nursery: trio.Nursery, answer: Sent
) -> tuple[Lease, _Client, list[object]]:
    """A lease whose request task waits in `receive()`, its direct writes answered
    with `answer`; the list fills with what that receive returns."""
    client = _direct(lease, answer)
    got: list[object] = []

    async def request_task() -> None:
        got.extend(await lease.receive())

    nursery.start_soon(request_task)
    await trio.testing.wait_all_tasks_blocked()
    return lease, client, got


async def test_a_lone_chunk_goes_straight_to_the_client_and_the_task_sleeps_on(
    lease: Lease, nursery
) -> None:
    lease, client, got = await _parked(lease, nursery, Sent.ALL)
    lease.feed("a")
    lease.feed("b")
    await trio.testing.wait_all_tasks_blocked()
    assert client.written == ["a", "b"]
    assert got == []  # not woken: nothing for it to do
    assert lease.buffered == 0
    done = wire.ResponseComplete("r1", 200)
    lease.finish(done)  # the end always goes through the request task
    await trio.testing.wait_all_tasks_blocked()
    assert got == [done]


async def test_a_chunk_written_in_part_wakes_the_task_to_write_the_rest(
    lease: Lease, nursery
) -> None:
    lease, client, got = await _parked(lease, nursery, Sent.PART)
    lease.feed("abc")
    await trio.testing.wait_all_tasks_blocked()
    assert client.written == ["abc"]
    assert got == [FLUSH]
    assert lease.buffered == 0


async def test_a_chunk_the_socket_refuses_is_queued_as_always(lease: Lease, nursery) -> None:
    lease, client, got = await _parked(lease, nursery, Sent.NONE)
    lease.feed("abc")
    await trio.testing.wait_all_tasks_blocked()
    assert client.written == []
    assert got == ["abc"]
    assert lease.buffered == 0


async def test_no_direct_write_past_a_queued_item_or_without_a_waiting_task(
    lease: Lease,
) -> None:
    client = _direct(lease, Sent.ALL)
    lease.feed("first")  # nobody waits: queued
    lease.feed("second")  # behind a queued item: queued, order kept
    assert client.written == []
    assert await lease.receive() == ["first", "second"]
