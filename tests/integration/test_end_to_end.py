"""Relay and agent as real processes, carrying requests to a real HTTP backend."""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from tests.fake_backend import FakeBackend
from tests.integration.procs import agent_process, relay_process

ENDPOINTS = {
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"prompt": "hi"},
    "/v1/responses": {"input": "hi"},
    "/v1/messages": {"max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
}


@pytest.mark.parametrize("path", list(ENDPOINTS))
async def test_non_streaming_each_endpoint(stack, path) -> None:
    body = {"model": "fake-model", **ENDPOINTS[path]}
    # Odd but valid formatting: the relay and agent must forward the text as is.
    text = json.dumps(body, indent=3).encode()
    with trio.fail_after(20):
        response = await stack.client.post(
            path, content=text, headers={"content-type": "application/json"}
        )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    (recorded,) = _posts(stack.backend)
    assert recorded.path == path
    assert recorded.body == text
    assert response.content  # the backend's body, as it sent it


@pytest.mark.parametrize("path", list(ENDPOINTS))
async def test_streaming_each_endpoint(stack, path) -> None:
    body = {"model": "fake-model", "stream": True, "fake": {"chunks": 5}, **ENDPOINTS[path]}
    with trio.fail_after(20):
        async with stack.client.stream("POST", path, json=body) as response:
            raw = b"".join([part async for part in response.aiter_raw()])
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    # Compare with what the backend itself sends for the same request.
    async with httpx.AsyncClient(base_url=stack.backend.url) as direct:
        expected = (await direct.post(path, json=body)).content
    assert _normalise(raw) == _normalise(expected)
    if path in ("/v1/chat/completions", "/v1/completions"):
        assert raw.endswith(b"data: [DONE]\n\n")


def _posts(backend: FakeBackend) -> list:  # type: ignore[type-arg]
    """What clients sent through (discovery polls excluded)."""
    return [r for r in backend.requests if r.method == "POST"]


def _normalise(sse: bytes) -> bytes:
    """Ids and timestamps differ per request; the event structure must not."""
    import re

    return re.sub(rb'"(id|item_id|created|created_at)":\s*("[^"]*"|\d+)', b"", sse)


async def test_embeddings_pass_through(stack) -> None:
    response = await stack.client.post(
        "/v1/embeddings", json={"model": "fake-model", "input": "hello"}
    )
    assert response.status_code == 200
    assert response.json()["data"][0]["embedding"]


@pytest.mark.parametrize("status", [400, 500])
async def test_upstream_errors_pass_through_intact(stack, status) -> None:
    body = {"model": "fake-model", "messages": [], "fake": {"status": status}}
    response = await stack.client.post("/v1/chat/completions", json=body)
    async with httpx.AsyncClient(base_url=stack.backend.url) as direct:
        expected = await direct.post("/v1/chat/completions", json=body)
    assert response.status_code == status
    assert response.content == expected.content
    assert response.headers["content-type"] == expected.headers["content-type"]


async def test_streaming_upstream_error_keeps_status(stack) -> None:
    body = {"model": "fake-model", "stream": True, "messages": [], "fake": {"status": 400}}
    response = await stack.client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]


async def test_request_id_follows_the_request_across_both_logs(stack) -> None:
    response = await stack.client.post(
        "/v1/chat/completions",
        json={"model": "fake-model", "messages": []},
        headers={"x-request-id": "trace-me-123"},
    )
    # The client's id is a label: echoed, and logged next to the relay's own.
    assert response.headers["x-request-id"] == "trace-me-123"
    relay_line = await stack.relay.wait_for(
        lambda line: line.get("client_request_id") == "trace-me-123" and line.get("status") == 200
    )
    assert relay_line["request_id"] != "trace-me-123"
    agent_line = await stack.agent.wait_for(
        lambda line: line.get("client_request_id") == "trace-me-123"
    )
    assert agent_line["request_id"] == relay_line["request_id"]


@pytest.mark.parametrize("stream", [False, True])
async def test_client_disconnect_reaches_the_backend_within_a_second(stack, stream) -> None:
    # Streaming: one chunk reaches the client, then the backend holds on.
    # Non-streaming: the backend holds on from the start (a long generation).
    fake = {"stall_after": 1} if stream else {"stall": True}
    body = {"model": "fake-model", "stream": stream, "messages": [], "fake": fake}
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:

            async def client() -> None:
                async with stack.client.stream("POST", "/v1/chat/completions", json=body) as r:
                    async for _ in r.aiter_raw():
                        pass

            nursery.start_soon(client)
            while not _posts(stack.backend):
                await stack.backend.wait_requests(len(stack.backend.requests) + 1)
            (recorded,) = _posts(stack.backend)
            left_at = trio.current_time()
            nursery.cancel_scope.cancel()  # the client goes away
        await recorded.done.wait()
    assert recorded.disconnected_at is not None
    assert recorded.disconnected_at - left_at < 1.0
    await stack.agent.wait_for(
        lambda line: line.get("status") == 499 or line.get("cancelled") is True
    )


async def test_bad_client_json_is_400_in_each_dialect(stack) -> None:
    openai = await stack.client.post("/v1/chat/completions", content=b"{")
    anthropic = await stack.client.post("/v1/messages", content=b"[]")
    assert openai.status_code == anthropic.status_code == 400
    assert openai.json()["error"]["type"] == "invalid_request_error"
    assert anthropic.json()["type"] == "error"
    assert not _posts(stack.backend)


async def test_two_agents_share_load_and_models_route_to_their_servers(nursery) -> None:
    shared_a = FakeBackend(models=["shared", "only-a"])
    shared_b = FakeBackend(models=["shared"])
    await nursery.start(shared_a.run)
    await nursery.start(shared_b.run)
    async with (
        relay_process() as (relay, url),
        agent_process(relay, shared_a.url, "--worker-name", "a"),
        agent_process(relay, shared_b.url, "--worker-name", "b"),
        httpx.AsyncClient(base_url=url, timeout=20) as client,
    ):
        slow = {"messages": [], "fake": {"chunks": 2, "delay": 0.2}}

        async def call(model: str) -> None:
            response = await client.post("/v1/chat/completions", json={"model": model, **slow})
            assert response.status_code == 200

        with trio.fail_after(30):
            async with trio.open_nursery() as calls:
                for _ in range(4):
                    calls.start_soon(call, "shared")
            async with trio.open_nursery() as calls:
                for _ in range(3):
                    calls.start_soon(call, "only-a")
        models = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
    assert models == ["only-a", "shared"]
    a_models = [r.json["model"] for r in _posts(shared_a)]
    b_models = [r.json["model"] for r in _posts(shared_b)]
    assert a_models.count("only-a") == 3
    assert "only-a" not in b_models
    # Each agent has one slot and each call takes 0.4 s: four at once must spread.
    assert a_models.count("shared") == 2
    assert b_models.count("shared") == 2


async def test_backend_unreachable_is_503_naming_the_worker_not_the_backend(nursery) -> None:
    """The backend's address stays in the agent's log; the client learns which worker."""
    async with (
        relay_process() as (relay, url),
        agent_process(relay, "http://127.0.0.1:9", "--models", "ghost") as agent,
        httpx.AsyncClient(base_url=url, timeout=20) as client,
    ):
        response = await client.post("/v1/chat/completions", json={"model": "ghost"})
        assert response.status_code == 503
        message = response.json()["error"]["message"]
        assert "127.0.0.1:9" not in message
        assert "worker-1" in message
        assert response.headers["retry-after"]
        health = (await client.get("/health")).json()
        line = await agent.wait_for(lambda line: line.get("event") == "request finished")
    assert "127.0.0.1:9" in line["error"]  # the operator's log has it
    assert health["workers_connected"] == 1  # the agent stayed connected


async def test_bad_secret_is_refused_and_logged_plainly(backend) -> None:
    async with (
        relay_process() as (relay, _url),
        agent_process(relay, backend.url, secret="s3cr3t-7f3a", wait=False) as agent,
    ):
        line = await agent.wait_for(lambda line: line.get("level") == "error")
        await relay.wait_for(lambda line: line.get("event") == "worker auth failed")
    assert "secret" in line["event"].lower()
    assert "s3cr3t-7f3a" not in "\n".join(agent.raw + relay.raw)  # never the secret
