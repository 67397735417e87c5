"""Queueing, cancellation, worker loss and requeue against a real relay.

Scripted workers on real sockets stage each case; every wait is bounded by
`fail_after`, and ordering comes from frames, not sleeps.
"""

from __future__ import annotations

import json

import trio
import trio.testing

import wire
from tests.relay.fake_worker import connect_worker

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}


async def _post(relay, body: dict[str, object] = CHAT) -> None:  # type: ignore[no-untyped-def]
    await relay.client.post("/v1/chat/completions", json=body)


async def _settle(relay) -> None:  # type: ignore[no-untyped-def]
    """A round trip through the relay's worker socket: frames sent before it were read."""
    async with connect_worker(relay.ws_url, models=["unrelated"]):
        pass


async def test_client_disconnect_sends_cancel(relay, nursery) -> None:
    async with connect_worker(relay.ws_url) as worker:
        cancel_scope = trio.CancelScope()

        async def client() -> None:
            with cancel_scope:
                await relay.client.post("/v1/chat/completions", json=CHAT)

        nursery.start_soon(client)
        with trio.fail_after(5):
            request = await worker.recv_request()
            cancel_scope.cancel()  # the client goes away mid-flight
            cancel = await worker.recv_cancel()
        assert cancel.request_id == request.request_id
        assert cancel.reason == wire.CancelReason.CLIENT_DISCONNECT
        # The slot stays taken until the agent's 499 arrives.
        state = relay.hub.workers[worker.ack.worker_id]
        assert state.in_flight == 1
        await worker.send(wire.ResponseComplete(request_id=request.request_id, status_code=499))
        # Late chunks for the finished request are dropped and counted, not fatal.
        await worker.send(wire.ResponseChunk(request_id=request.request_id, chunk="late"))
        await worker.send(wire.Pong(current_load=0))
        with trio.fail_after(5):
            await _settle(relay)
        assert state.in_flight == 0
        assert relay.hub.stats.dropped_frames >= 1


async def test_unanswered_cancel_frees_slot_after_grace(start_relay, nursery) -> None:
    relay = await start_relay(cancel_grace=0.2)
    async with connect_worker(relay.ws_url) as worker:
        cancel_scope = trio.CancelScope()

        async def client() -> None:
            with cancel_scope:
                await relay.client.post("/v1/chat/completions", json=CHAT)

        nursery.start_soon(client)
        with trio.fail_after(5):
            await worker.recv_request()
            cancel_scope.cancel()
            await worker.recv_cancel()

        # An upstream agent sends nothing after a cancel: the next request
        # still gets the slot once the grace has passed.
        async def serve() -> None:
            await worker.reply(await worker.recv_request(), '{"second":true}')

        nursery.start_soon(serve)
        with trio.fail_after(5):
            response = await relay.client.post("/v1/chat/completions", json=CHAT)
        assert response.json() == {"second": True}


async def test_queue_full_is_429_with_retry_after(start_relay, nursery) -> None:
    relay = await start_relay(max_queue_len=1)
    async with connect_worker(relay.ws_url) as worker:
        nursery.start_soon(_post, relay)
        with trio.fail_after(5):
            first = await worker.recv_request()
        queued = trio.Event()

        async def second_client() -> None:
            async with trio.open_nursery() as n:
                n.start_soon(_post, relay)
                # In-process relay and client: once every task is blocked, the
                # request has arrived and waits in the queue.
                await trio.testing.wait_all_tasks_blocked()
                assert len(relay.hub.queue) == 1
                queued.set()

        nursery.start_soon(second_client)
        with trio.fail_after(5):
            await queued.wait()
            response = await relay.client.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["code"] == "queue_full"
        with trio.fail_after(5):
            await worker.reply(first, "{}")
            await worker.reply(await worker.recv_request(), "{}")


async def test_queue_timeout_is_504(start_relay, nursery) -> None:
    relay = await start_relay(queue_timeout=0.3)
    async with connect_worker(relay.ws_url) as worker:
        nursery.start_soon(_post, relay)
        with trio.fail_after(5):
            first = await worker.recv_request()
            response = await relay.client.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 504
        assert "queue timeout" in response.json()["error"]["message"]
        assert not relay.hub.queue
        await worker.reply(first, "{}")


async def test_request_timeout_is_504_and_cancels_worker(start_relay, nursery) -> None:
    relay = await start_relay(request_timeout=0.3)
    async with connect_worker(relay.ws_url) as worker:
        seen: list[wire.RelayToAgent] = []

        async def serve() -> None:
            seen.append(await worker.recv_request())
            seen.append(await worker.recv_cancel())

        nursery.start_soon(serve)
        with trio.fail_after(5):
            response = await relay.client.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 504
        assert "request timeout" in response.json()["error"]["message"]
        with trio.fail_after(5):
            await _settle(relay)
        request, cancel = seen
        assert isinstance(cancel, wire.Cancel)
        assert cancel.request_id == request.request_id
        assert cancel.reason == wire.CancelReason.TIMEOUT


async def test_worker_lost_before_any_byte_requeues(relay, nursery) -> None:
    async with connect_worker(relay.ws_url, name="doomed") as doomed:

        async def doom() -> None:
            await doomed.recv_request()
            await doomed.ws.aclose()  # dies holding the request

        async def rescue() -> None:
            async with connect_worker(relay.ws_url, name="survivor") as survivor:
                request = await survivor.recv_request()
                await survivor.reply(request, '{"ok":true}')

        nursery.start_soon(doom)
        nursery.start_soon(rescue)
        with trio.fail_after(5):
            response = await relay.client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert relay.hub.stats.requeues == 1


async def test_requeue_exhausted_is_503(relay, nursery) -> None:
    first_up = trio.Event()

    async def four_deaths() -> None:
        for _ in range(4):
            async with connect_worker(relay.ws_url) as w:
                first_up.set()
                await w.recv_request()
                await w.ws.aclose()

    nursery.start_soon(four_deaths)
    await first_up.wait()
    with trio.fail_after(10):
        response = await relay.client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 503
    assert "lost 4 times" in response.json()["error"]["message"]
    assert int(response.headers["retry-after"]) >= 1


async def test_worker_lost_mid_stream_ends_with_error_event(relay, nursery) -> None:
    async with connect_worker(relay.ws_url) as worker:

        async def serve() -> None:
            request = await worker.recv_request()
            await worker.send(
                wire.ResponseChunk(request_id=request.request_id, chunk="data: {}\n\n")
            )
            await worker.ws.aclose()

        nursery.start_soon(serve)
        with trio.fail_after(5):
            async with relay.client.stream(
                "POST", "/v1/chat/completions", json={**CHAT, "stream": True}
            ) as response:
                body = (await response.aread()).decode()
    assert response.status_code == 200
    first, second = body.split("\n\n", 1)
    assert first == "data: {}"
    event = json.loads(second.removeprefix("data: ").strip())
    assert event["error"]["code"] == "worker_lost"
    assert "[DONE]" not in body


async def test_anthropic_stream_error_event_dialect(relay, nursery) -> None:
    async with connect_worker(relay.ws_url) as worker:

        async def serve() -> None:
            request = await worker.recv_request()
            await worker.send(
                wire.ResponseChunk(request_id=request.request_id, chunk="event: ping\ndata: {}\n\n")
            )
            await worker.ws.aclose()

        nursery.start_soon(serve)
        with trio.fail_after(5):
            response = await relay.client.post(
                "/v1/messages", json={"model": "m1", "stream": True, "messages": []}
            )
    assert response.text.endswith("\n\n")
    last = response.text.split("\n\n")[-2]
    assert last.startswith("event: error\ndata: ")
    assert json.loads(last.split("data: ", 1)[1])["error"]["type"] == "api_error"


async def test_streaming_backend_error_keeps_its_status(relay, nursery) -> None:
    """Lazy status: a complete that arrives before any chunk keeps its own status."""
    async with connect_worker(relay.ws_url) as worker:

        async def serve() -> None:
            request = await worker.recv_request()
            await worker.reply(request, '{"error":{"message":"bad"}}', status=400)

        nursery.start_soon(serve)
        with trio.fail_after(5):
            response = await relay.client.post(
                "/v1/chat/completions", json={**CHAT, "stream": True}
            )
    assert response.status_code == 400
    assert response.json() == {"error": {"message": "bad"}}


async def test_queued_request_goes_to_new_worker_in_fifo_order(relay, nursery) -> None:
    # No worker serves m1 yet, but one did recently: requests queue.
    async with connect_worker(relay.ws_url):
        pass
    order: list[str] = []

    async def client(tag: str) -> None:
        response = await relay.client.post(
            "/v1/chat/completions", json={**CHAT, "tag": tag}, headers={"x-request-id": tag}
        )
        assert response.status_code == 200

    async with trio.open_nursery() as clients:
        for tag in ("first", "second", "third"):
            clients.start_soon(client, tag)
            await trio.testing.wait_all_tasks_blocked()
            order.append(tag)
            assert len(relay.hub.queue) == len(order)
        async with connect_worker(relay.ws_url) as worker:
            served = []
            for _ in order:
                request = await worker.recv_request()
                served.append(json.loads(request.body)["tag"])
                await worker.reply(request, "{}")
    assert served == order


async def test_worker_refusing_beyond_its_claim_is_contained(relay, nursery) -> None:
    """A worker that claims 4 slots but refuses the second request: the
    request goes elsewhere and the liar's capacity drops to what it carries."""
    async with connect_worker(relay.ws_url, name="liar", max_concurrent=4) as liar:
        refused_sent = trio.Event()

        async def lie() -> None:
            first = await liar.recv_request()
            refused = await liar.recv_request()
            await liar.send(
                wire.ResponseComplete(
                    request_id=refused.request_id,
                    status_code=503,
                    headers={
                        "content-type": "application/json",
                        wire.REFUSED_HEADER: "worker_busy",
                    },
                    body='{"error":{"message":"busy"}}',
                )
            )
            refused_sent.set()
            await honest_served.wait()
            await liar.reply(first, '{"from":"liar"}')

        honest_served = trio.Event()

        async def honest() -> None:
            await refused_sent.wait()  # the refused request is back in the queue
            async with connect_worker(relay.ws_url, name="honest") as worker:
                await worker.reply(await worker.recv_request(), '{"from":"honest"}')
                honest_served.set()

        nursery.start_soon(lie)
        nursery.start_soon(honest)
        with trio.fail_after(5):
            first, second = await _both(relay)
        assert first.json() == {"from": "liar"}
        assert second.json() == {"from": "honest"}
        assert wire.REFUSED_HEADER not in second.headers
        assert relay.hub.workers[liar.ack.worker_id].max_concurrent == 1
        assert relay.hub.stats.requeues == 1


async def _both(relay):  # type: ignore[no-untyped-def]
    """Two requests, the second sent once the first is on a worker."""
    results = {}

    async def call(tag: str) -> None:
        results[tag] = await relay.client.post("/v1/chat/completions", json=CHAT)

    async with trio.open_nursery() as n:
        n.start_soon(call, "first")
        await trio.testing.wait_all_tasks_blocked()
        assert any(w.in_flight for w in relay.hub.workers.values())
        n.start_soon(call, "second")
    return results["first"], results["second"]
