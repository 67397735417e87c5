"""The proxy path against a real relay and a scripted worker on real sockets."""

from __future__ import annotations

import json

import trio

import wire
from tests.relay.fake_worker import connect_worker

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}


async def test_non_streaming_round_trip(relay, nursery) -> None:
    async with connect_worker(relay.ws_url) as worker:

        async def serve() -> None:
            request = await worker.recv_request()
            assert request.endpoint_path == "/v1/chat/completions"
            assert request.is_streaming is False
            assert json.loads(request.body) == CHAT
            await worker.reply(request, '{"id":"x","choices":[]}')

        nursery.start_soon(serve)
        with trio.fail_after(5):
            response = await relay.client.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 200
        assert response.json() == {"id": "x", "choices": []}
        assert response.headers["content-type"] == "application/json"
        assert response.headers["x-request-id"]


async def test_streaming_passes_sse_bytes_through(relay, nursery) -> None:
    events = ['data: {"a":1}\n\n', 'data: {"a":2}\n\n', "data: [DONE]\n\n"]
    async with connect_worker(relay.ws_url) as worker:

        async def serve() -> None:
            request = await worker.recv_request()
            assert request.is_streaming
            for event in events:
                await worker.send(wire.ResponseChunk(request_id=request.request_id, chunk=event))
            await worker.send(wire.ResponseComplete(request_id=request.request_id, status_code=200))

        nursery.start_soon(serve)
        with trio.fail_after(5):
            async with relay.client.stream(
                "POST", "/v1/chat/completions", json={**CHAT, "stream": True}
            ) as response:
                body = b"".join([part async for part in response.aiter_raw()])
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert body.decode() == "".join(events)


async def test_bad_json_is_400_in_openai_dialect(relay) -> None:
    response = await relay.client.post("/v1/chat/completions", content=b"{nope")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "not valid JSON" in response.json()["error"]["message"]


async def test_bad_json_is_400_in_anthropic_dialect(relay) -> None:
    response = await relay.client.post("/v1/messages", json={"messages": []})
    assert response.status_code == 400
    doc = response.json()
    assert doc["type"] == "error"
    assert doc["error"]["type"] == "invalid_request_error"
    assert "model" in doc["error"]["message"]


async def test_unknown_model_is_404_listing_served(relay) -> None:
    async with connect_worker(relay.ws_url, models=["alpha", "beta"]):
        response = await relay.client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
    assert response.status_code == 404
    assert "alpha, beta" in response.json()["error"]["message"]


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


async def test_body_over_limit_is_413_before_reading_it(start_relay) -> None:
    relay = await start_relay(max_body_bytes=1000)
    big = {"model": "m1", "messages": [{"role": "user", "content": "x" * 2000}]}
    response = await relay.client.post("/v1/messages", json=big)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"


async def test_wrong_types_are_400(relay) -> None:
    for body in ({"model": 3}, {"model": "m1", "stream": "yes"}, ["model"], {"model": "  "}):
        response = await relay.client.post("/v1/chat/completions", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == "bad_request"


async def test_client_request_id_kept_when_sane_replaced_when_not(relay, nursery) -> None:
    async with connect_worker(relay.ws_url) as worker:

        async def serve(n: int) -> None:
            for _ in range(n):
                request = await worker.recv_request()
                await worker.reply(request, json.dumps({"id": request.request_id}))

        nursery.start_soon(serve, 2)
        with trio.fail_after(5):
            kept = await relay.client.post(
                "/v1/chat/completions", json=CHAT, headers={"x-request-id": "abc-123"}
            )
            replaced = await relay.client.post(
                "/v1/chat/completions", json=CHAT, headers={"x-request-id": "bad id\twith junk"}
            )
    assert kept.headers["x-request-id"] == "abc-123" == kept.json()["id"]
    assert replaced.headers["x-request-id"] == replaced.json()["id"] != "bad id\twith junk"


async def test_query_string_reaches_the_worker(relay, nursery) -> None:
    async with connect_worker(relay.ws_url) as worker:

        async def serve() -> None:
            request = await worker.recv_request()
            await worker.reply(request, json.dumps({"path": request.endpoint_path}))

        nursery.start_soon(serve)
        with trio.fail_after(5):
            response = await relay.client.post("/v1/messages?beta=true", json=CHAT)
    assert response.json() == {"path": "/v1/messages?beta=true"}
