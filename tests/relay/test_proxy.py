"""The proxy path (relay/http_api.py).

Most tests drive `Proxy` in memory (tests/relay/memory_relay.py): a `Hub`
whose workers are memory transports, a client served by `MemoryExchange`.
The last section runs the same path against a real relay on real sockets,
where the front's framing and the worker socket take part.
"""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

import wire
from relay.boundary import Sent
from tests.relay.fake_worker import connect_worker

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**CHAT, "stream": True}
EVENTS = ['data: {"a":1}\n\n', 'data: {"a":2}\n\n', "data: [DONE]\n\n"]


# ------------------------------------------------------------ in memory


async def test_non_streaming_round_trip(memory_relay, nursery) -> None:
    async with memory_relay.worker() as worker:

        async def serve() -> None:
            request = await worker.recv_request()
            assert request.endpoint_path == "/v1/chat/completions"
            assert request.is_streaming is False
            assert json.loads(request.body) == CHAT
            await worker.reply(request, '{"id":"x","choices":[]}')

        nursery.start_soon(serve)
        with trio.fail_after(5):
            response = await memory_relay.post(json_body=CHAT)
    assert response.status == 200
    assert response.json() == {"id": "x", "choices": []}
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(response.body))
    assert response.headers["x-request-id"]


@pytest.mark.parametrize("extensions", [True, False], ids=["front", "plain-asgi"])
async def test_streaming_passes_sse_bytes_through(memory_relay, nursery, extensions) -> None:
    async with memory_relay.worker() as worker:

        async def serve() -> None:
            request = await worker.recv_request()
            assert request.is_streaming
            for event in EVENTS:
                await worker.chunk(request, event)
            await worker.send(wire.ResponseComplete(request_id=request.request_id, status_code=200))

        nursery.start_soon(serve)
        with trio.fail_after(5):
            response = await memory_relay.post(json_body=STREAM, extensions=extensions)
    assert response.status == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.text == "".join(EVENTS)
    assert response.complete


async def test_lone_chunks_go_out_through_send_now_while_the_task_waits(
    memory_relay, nursery
) -> None:
    async with memory_relay.worker() as worker:
        exchange = memory_relay.start(json_body=STREAM)
        with trio.fail_after(5):
            request = await worker.recv_request()
            await worker.chunk(request, EVENTS[0])  # commits the stream: the task writes it
            await exchange.started.wait()
            await trio.testing.wait_all_tasks_blocked()  # the task waits in the lease
            await worker.chunk(request, EVENTS[1])
            await trio.testing.wait_all_tasks_blocked()
            assert exchange.direct_writes == 1  # the reader wrote it
            await worker.chunk(request, EVENTS[2])
            await worker.send(wire.ResponseComplete(request_id=request.request_id, status_code=200))
            await exchange.finished.wait()
    response = exchange.response()
    assert response.text == "".join(EVENTS)
    assert response.direct == 2
    assert response.complete


async def test_a_direct_write_in_part_is_finished_by_the_request_task(
    memory_relay, nursery
) -> None:
    async with memory_relay.worker() as worker:
        exchange = memory_relay.start(json_body=STREAM, direct=Sent.PART)
        with trio.fail_after(5):
            request = await worker.recv_request()
            await worker.chunk(request, EVENTS[0])
            await exchange.started.wait()
            await trio.testing.wait_all_tasks_blocked()
            await worker.chunk(request, EVENTS[1])
            await trio.testing.wait_all_tasks_blocked()
            # The request task was woken to write the rest: an empty body piece.
            assert exchange.pieces[-1] == b""
            await worker.send(wire.ResponseComplete(request_id=request.request_id, status_code=200))
            await exchange.finished.wait()
    assert exchange.response().text == "".join(EVENTS[:2])


async def test_chunks_that_arrive_while_the_task_writes_wait_for_it(memory_relay) -> None:
    """The send_now rule: no direct write while the request's task is in `send`."""
    async with memory_relay.worker() as worker:
        exchange = memory_relay.start(json_body=STREAM)
        with trio.fail_after(5):
            request = await worker.recv_request()
            exchange.hold()  # the client's socket is full
            await worker.chunk(request, EVENTS[0])
            await trio.testing.wait_all_tasks_blocked()
            assert exchange.writing  # the request's task is stuck writing it
            await worker.chunk(request, EVENTS[1])
            await worker.chunk(request, EVENTS[2])
            await trio.testing.wait_all_tasks_blocked()
            assert exchange.direct_writes == 0
            exchange.release()
            await trio.testing.wait_all_tasks_blocked()
            await worker.send(wire.ResponseComplete(request_id=request.request_id, status_code=200))
            await exchange.finished.wait()
    # What queued meanwhile went out in one write, in order.
    assert exchange.pieces == [e.encode() for e in (EVENTS[0], EVENTS[1] + EVENTS[2])] + [b""]
    assert exchange.direct_writes == 0


async def test_bad_json_is_400_in_openai_dialect(memory_relay) -> None:
    response = await memory_relay.post(content=b"{nope")
    assert response.status == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "not valid JSON" in response.json()["error"]["message"]


async def test_bad_json_is_400_in_anthropic_dialect(memory_relay) -> None:
    response = await memory_relay.post("/v1/messages", {"messages": []})
    assert response.status == 400
    doc = response.json()
    assert doc["type"] == "error"
    assert doc["error"]["type"] == "invalid_request_error"
    assert "model" in doc["error"]["message"]


async def test_unknown_model_is_404_listing_served(memory_relay) -> None:
    async with memory_relay.worker(models=["alpha", "beta"]):
        response = await memory_relay.post(json_body={**CHAT, "model": "nope"})
    assert response.status == 404
    assert "alpha, beta" in response.json()["error"]["message"]


@pytest.mark.parametrize("whole", [False, True], ids=["received", "whole-with-head"])
async def test_body_over_limit_is_413_before_reading_it(start_memory_relay, whole) -> None:
    relay = start_memory_relay(max_body_bytes=1000)
    big = {"model": "m1", "messages": [{"role": "user", "content": "x" * 2000}]}
    declared = [("content-length", str(len(json.dumps(big))))]
    for headers in (declared, []):  # declared, or found out while reading
        response = await relay.post("/v1/messages", big, headers=headers, whole=whole)
        assert response.status == 413
        assert response.json()["error"]["type"] == "request_too_large"
    assert relay.proxy.held_body_bytes == 0


async def test_a_whole_body_past_the_budget_is_503_and_holds_nothing(start_memory_relay) -> None:
    relay = start_memory_relay(max_body_bytes=1000, max_pending_body_bytes=1000)
    relay.proxy.held_body_bytes = 990  # other requests' bodies, still being read
    response = await relay.post(json_body=CHAT, whole=True)
    assert response.status == 503
    assert response.headers["retry-after"] == "1"
    assert relay.proxy.held_body_bytes == 990


async def test_a_whole_body_is_served_without_a_receive(memory_relay, nursery) -> None:
    async with memory_relay.worker() as worker:
        exchange = memory_relay.exchange(json_body=CHAT, whole=True)
        nursery.start_soon(memory_relay.serve, exchange)
        request = await worker.recv_request()
        assert json.loads(request.body) == CHAT
        await worker.reply(request, '{"ok": true}')
        await exchange.finished.wait()
    assert exchange.response().status == 200
    assert memory_relay.proxy.held_body_bytes == 0


async def test_wrong_types_are_400(memory_relay) -> None:
    for body in ({"model": 3}, {"model": "m1", "stream": "yes"}, ["model"], {"model": "  "}):
        response = await memory_relay.post(json_body=body)
        assert response.status == 400, body
        assert response.json()["error"]["code"] == "bad_request"


async def test_client_request_id_kept_when_sane_replaced_when_not(memory_relay, nursery) -> None:
    # The client's id is a label: it comes back in the header and reaches the
    # worker as a header, but the worker's request id is the relay's own.
    async with memory_relay.worker() as worker:

        async def serve(n: int) -> None:
            for _ in range(n):
                request = await worker.recv_request()
                label = (request.headers or {}).get("x-request-id")
                await worker.reply(request, json.dumps({"id": request.request_id, "label": label}))

        nursery.start_soon(serve, 2)
        with trio.fail_after(5):
            kept = await memory_relay.post(json_body=CHAT, headers=[("x-request-id", "abc-123")])
            replaced = await memory_relay.post(
                json_body=CHAT, headers=[("x-request-id", "bad id\twith junk")]
            )
    assert kept.headers["x-request-id"] == "abc-123" == kept.json()["label"]
    assert kept.json()["id"] != "abc-123"
    assert replaced.headers["x-request-id"] == replaced.json()["id"] != "bad id\twith junk"
    assert replaced.json()["label"] is None


async def test_query_string_reaches_the_worker(memory_relay, nursery) -> None:
    async with memory_relay.worker() as worker:

        async def serve() -> None:
            request = await worker.recv_request()
            await worker.reply(request, json.dumps({"path": request.endpoint_path}))

        nursery.start_soon(serve)
        with trio.fail_after(5):
            response = await memory_relay.post("/v1/messages?beta=true", CHAT)
    assert response.json() == {"path": "/v1/messages?beta=true"}


async def test_finished_request_is_counted_with_its_tokens(memory_relay, nursery) -> None:
    async with memory_relay.worker() as worker:

        async def serve() -> None:
            request = await worker.recv_request()
            await worker.send(
                wire.ResponseComplete(
                    request_id=request.request_id,
                    status_code=200,
                    body="{}",
                    token_counts=wire.TokenCounts(prompt_tokens=3, completion_tokens=5),
                )
            )

        nursery.start_soon(serve)
        with trio.fail_after(5):
            await memory_relay.post(json_body=CHAT)
    tally = memory_relay.relay.stats.models["m1"]
    assert (tally.requests, tally.status_2xx, tally.tokens_in, tally.tokens_out) == (1, 1, 3, 5)
    assert tally.ttfb.count == 1
    assert tally.active == 0


# ------------------------------------------------------------ real sockets


async def test_real_non_streaming_round_trip(relay, nursery) -> None:
    async with connect_worker(relay.ws_url) as worker:

        async def serve() -> None:
            request = await worker.recv_request()
            await worker.reply(request, '{"id":"x","choices":[]}')

        nursery.start_soon(serve)
        with trio.fail_after(5):
            response = await relay.client.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 200
        assert response.json() == {"id": "x", "choices": []}
        assert response.headers["x-request-id"]


async def test_real_streaming_passes_sse_bytes_through(relay, nursery) -> None:
    async with connect_worker(relay.ws_url) as worker:

        async def serve() -> None:
            request = await worker.recv_request()
            for event in EVENTS:
                await worker.send(wire.ResponseChunk(request_id=request.request_id, chunk=event))
            await worker.send(wire.ResponseComplete(request_id=request.request_id, status_code=200))

        nursery.start_soon(serve)
        with trio.fail_after(5):
            async with relay.client.stream("POST", "/v1/chat/completions", json=STREAM) as response:
                body = b"".join([part async for part in response.aiter_raw()])
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert body.decode() == "".join(EVENTS)


async def test_models_lists_union(relay) -> None:
    async with (
        connect_worker(relay.ws_url, models=["a", "b"]),
        connect_worker(relay.ws_url, models=["b", "c", "*"]),
    ):
        response = await relay.client.get("/v1/models")
        health = (await relay.client.get("/health")).json()
    assert [m["id"] for m in response.json()["data"]] == ["a", "b", "c"]
    assert response.json()["object"] == "list"
    assert health["workers_connected"] == 2
    assert health["status"] == "ok"


async def test_unknown_paths_get_json_404(relay) -> None:
    for method, path in (("GET", "/nope"), ("POST", "/nope"), ("GET", "/v1/chat/completions")):
        response = await relay.client.request(method, path)
        assert response.status_code in (404, 405), (method, path)
        assert "error" in response.json()


async def test_real_body_over_limit_is_413(start_relay) -> None:
    relay = await start_relay(max_body_bytes=1000)
    big = {"model": "m1", "messages": [{"role": "user", "content": "x" * 2000}]}
    response = await relay.client.post("/v1/messages", json=big)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"
