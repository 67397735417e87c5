"""Queueing, cancellation, worker loss and requeue on the proxy path.

In memory (tests/relay/memory_relay.py): scripted workers on memory
transports stage each case, ordering comes from frames and
`wait_all_tasks_blocked`, and deadlines run on the autojump clock, so the
timeouts are asserted exactly in virtual time.
"""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

import wire
from tests.relay.memory_relay import refusal

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**CHAT, "stream": True}


@pytest.mark.parametrize("extensions", [True, False], ids=["hangup-watch", "http.disconnect"])
async def test_client_disconnect_sends_cancel(memory_relay, extensions) -> None:
    hub = memory_relay.hub
    async with memory_relay.worker() as worker:
        exchange = memory_relay.start(json_body=CHAT, extensions=extensions)
        with trio.fail_after(5):
            request = await worker.recv_request()
            exchange.hang_up()  # the client goes away mid-flight
            cancel = await worker.recv_cancel()
            await exchange.finished.wait()
        assert cancel.request_id == request.request_id
        assert cancel.reason == wire.CancelReason.CLIENT_DISCONNECT
        assert exchange.status is None  # nothing was sent to a client that left
        # The slot stays taken until the agent's 499 arrives.
        state = hub.workers[worker.worker_id]
        assert state.in_flight == 1
        await worker.send(wire.ResponseComplete(request_id=request.request_id, status_code=499))
        # Late chunks for the finished request are dropped and counted, not fatal.
        await worker.chunk(request, "late")
        await trio.testing.wait_all_tasks_blocked()
        assert state.in_flight == 0
        assert hub.stats.dropped_frames == 1
    tally = memory_relay.relay.stats.models["m1"]
    assert (tally.requests, tally.cancelled) == (1, 1)


async def test_unanswered_cancel_frees_slot_after_grace(memory_relay, autojump_clock) -> None:
    grace = memory_relay.hub.config.cancel_grace
    async with memory_relay.worker() as worker:
        exchange = memory_relay.start(json_body=CHAT)
        await worker.recv_request()
        exchange.hang_up()
        await worker.recv_cancel()
        cancelled_at = trio.current_time()
        # An upstream agent sends nothing after a cancel: the next request
        # still gets the slot once the grace has passed, not before.
        second = memory_relay.start(json_body=CHAT)
        request = await worker.recv_request()
        assert trio.current_time() - cancelled_at == pytest.approx(grace)
        await worker.reply(request, '{"second":true}')
        await second.finished.wait()
    assert second.response().json() == {"second": True}


async def test_queue_full_is_429_with_retry_after(start_memory_relay) -> None:
    relay = start_memory_relay(max_queue_len=1)
    async with relay.worker() as worker:
        first = relay.start(json_body=CHAT)
        held = await worker.recv_request()
        queued = relay.start(json_body=CHAT)
        await trio.testing.wait_all_tasks_blocked()
        assert len(relay.hub.queue) == 1
        response = await relay.post(json_body=CHAT)
        assert response.status == 429
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["code"] == "queue_full"
        await worker.reply(held, "{}")
        await worker.reply(await worker.recv_request(), "{}")
        await first.finished.wait()
        await queued.finished.wait()
    assert queued.response().status == 200


async def test_queue_timeout_is_504(start_memory_relay, autojump_clock) -> None:
    relay = start_memory_relay(queue_timeout=30)
    async with relay.worker() as worker:
        relay.start(json_body=CHAT)
        first = await worker.recv_request()  # the worker's one slot is taken
        start = trio.current_time()
        response = await relay.post(json_body=CHAT)
        assert trio.current_time() - start == pytest.approx(30)
        assert response.status == 504
        assert "queue timeout" in response.json()["error"]["message"]
        assert not relay.hub.queue
        await worker.reply(first, "{}")


async def test_request_timeout_is_504_and_cancels_worker(
    start_memory_relay, autojump_clock
) -> None:
    relay = start_memory_relay(request_timeout=60)
    async with relay.worker() as worker:
        exchange = relay.start(json_body=CHAT)
        request = await worker.recv_request()
        sent_at = trio.current_time()
        cancel = await worker.recv_cancel()
        assert trio.current_time() - sent_at == pytest.approx(60)
        await exchange.finished.wait()
    response = exchange.response()
    assert response.status == 504
    assert "request timeout" in response.json()["error"]["message"]
    assert cancel.request_id == request.request_id
    assert cancel.reason == wire.CancelReason.TIMEOUT


async def test_worker_lost_before_any_byte_requeues(memory_relay) -> None:
    doomed = await memory_relay.attach_worker(name="doomed")
    exchange = memory_relay.start(json_body=CHAT)
    with trio.fail_after(5):
        await doomed.recv_request()
        await doomed.disconnect()  # dies holding the request
        await trio.testing.wait_all_tasks_blocked()
        assert len(memory_relay.hub.queue) == 1  # back in the queue, at its head
        async with memory_relay.worker(name="survivor") as survivor:
            await survivor.reply(await survivor.recv_request(), '{"ok":true}')
            await exchange.finished.wait()
    response = exchange.response()
    assert response.status == 200
    assert response.json() == {"ok": True}
    assert memory_relay.hub.stats.requeues == 1
    assert memory_relay.relay.stats.models["m1"].requeued == 1


async def test_requeue_exhausted_is_503(memory_relay) -> None:
    first = await memory_relay.attach_worker()
    exchange = memory_relay.start(json_body=CHAT)
    with trio.fail_after(5):
        worker = first
        for _ in range(4):
            await worker.recv_request()
            await worker.disconnect()
            await trio.testing.wait_all_tasks_blocked()
            if exchange.finished.is_set():
                break
            worker = await memory_relay.attach_worker()
    response = exchange.response()
    assert response.status == 503
    assert "lost 4 times" in response.json()["error"]["message"]
    assert int(response.headers["retry-after"]) >= 1
    assert memory_relay.hub.stats.requeues == memory_relay.hub.config.max_requeues == 3


async def test_worker_lost_mid_stream_ends_with_error_event(memory_relay) -> None:
    async with memory_relay.worker() as worker:
        exchange = memory_relay.start(json_body=STREAM)
        with trio.fail_after(5):
            request = await worker.recv_request()
            await worker.chunk(request, "data: {}\n\n")
            await exchange.started.wait()
            await worker.disconnect()
            await exchange.finished.wait()
    response = exchange.response()
    assert response.status == 200
    first, second = response.text.split("\n\n", 1)
    assert first == "data: {}"
    event = json.loads(second.removeprefix("data: ").strip())
    assert event["error"]["code"] == "worker_lost"
    assert "[DONE]" not in response.text
    assert response.complete
    assert memory_relay.hub.stats.requeues == 0  # bytes had gone out: no second try


async def test_anthropic_stream_error_event_dialect(memory_relay) -> None:
    async with memory_relay.worker() as worker:
        exchange = memory_relay.start("/v1/messages", {"model": "m1", "stream": True})
        with trio.fail_after(5):
            request = await worker.recv_request()
            await worker.chunk(request, "event: ping\ndata: {}\n\n")
            await exchange.started.wait()
            await worker.disconnect()
            await exchange.finished.wait()
    text = exchange.response().text
    assert text.endswith("\n\n")
    last = text.split("\n\n")[-2]
    assert last.startswith("event: error\ndata: ")
    assert json.loads(last.split("data: ", 1)[1])["error"]["type"] == "api_error"


async def test_streaming_backend_error_keeps_its_status(memory_relay, nursery) -> None:
    """Lazy status: a complete that arrives before any chunk keeps its own status."""
    async with memory_relay.worker() as worker:

        async def serve() -> None:
            request = await worker.recv_request()
            await worker.reply(request, '{"error":{"message":"bad"}}', status=400)

        nursery.start_soon(serve)
        with trio.fail_after(5):
            response = await memory_relay.post(json_body=STREAM)
    assert response.status == 400
    assert response.json() == {"error": {"message": "bad"}}


async def test_queued_request_goes_to_new_worker_in_fifo_order(memory_relay) -> None:
    # No worker serves m1 now, but one did recently: requests queue.
    async with memory_relay.worker():
        pass
    await trio.testing.wait_all_tasks_blocked()  # its session has ended
    order = ["first", "second", "third"]
    exchanges = []
    for tag in order:
        exchanges.append(memory_relay.start(json_body={**CHAT, "tag": tag}))
        await trio.testing.wait_all_tasks_blocked()
        assert len(memory_relay.hub.queue) == len(exchanges)
    with trio.fail_after(5):
        async with memory_relay.worker() as worker:
            served = []
            for _ in order:
                request = await worker.recv_request()
                served.append(json.loads(request.body)["tag"])
                await worker.reply(request, "{}")
            for exchange in exchanges:
                await exchange.finished.wait()
    assert served == order
    assert all(e.response().status == 200 for e in exchanges)


async def test_worker_refusing_beyond_its_claim_is_contained(memory_relay) -> None:
    """A worker that claims 4 slots but refuses the second request: the
    request goes elsewhere and the liar's capacity drops to what it carries."""
    liar = await memory_relay.attach_worker(name="liar", max_concurrent=4)
    first = memory_relay.start(json_body=CHAT)
    with trio.fail_after(5):
        held = await liar.recv_request()
        second = memory_relay.start(json_body=CHAT)
        refused = await liar.recv_request()
        await liar.send(refusal(refused, "worker_busy"))
        await trio.testing.wait_all_tasks_blocked()
        state = memory_relay.hub.workers[liar.worker_id]
        assert state.max_concurrent == 1
        assert len(memory_relay.hub.queue) == 1  # not sent to the liar again
        async with memory_relay.worker(name="honest") as honest:
            await honest.reply(await honest.recv_request(), '{"from":"honest"}')
            await second.finished.wait()
        await liar.reply(held, '{"from":"liar"}')
        await first.finished.wait()
    assert first.response().json() == {"from": "liar"}
    response = second.response()
    assert response.json() == {"from": "honest"}
    assert wire.REFUSED_HEADER not in response.headers
    assert memory_relay.hub.stats.requeues == 1


async def test_worker_refusing_as_draining_gets_no_more_work(memory_relay) -> None:
    worker = await memory_relay.attach_worker(name="leaving", max_concurrent=4)
    exchange = memory_relay.start(json_body=CHAT)
    with trio.fail_after(5):
        await worker.send(refusal(await worker.recv_request(), "worker_draining"))
        await trio.testing.wait_all_tasks_blocked()
        state = memory_relay.hub.workers[worker.worker_id]
        assert state.draining
        assert state.max_concurrent == 4  # draining is not a capacity lie
        assert len(memory_relay.hub.queue) == 1
        async with memory_relay.worker(name="next") as other:
            await other.reply(await other.recv_request(), "{}")
            await exchange.finished.wait()
    assert exchange.response().status == 200
    assert memory_relay.hub.stats.requeues == 1
