"""Quiet streams kept alive, chunked bodies over the limit, and a client that
gives up and resends against a one-slot worker: real relay and agent processes."""

from __future__ import annotations

import json

import httpx
import trio

from tests.fake_backend import FakeBackend
from tests.integration.procs import agent_process, relay_process


async def test_chunked_body_over_the_limit_is_413_without_a_wrong_size() -> None:
    async with (
        relay_process("--max-body-bytes", "1000") as (_relay, url),
        httpx.AsyncClient(base_url=url, timeout=20) as client,
    ):

        async def body():  # type: ignore[no-untyped-def]  # no content-length: chunked
            for _ in range(4):
                yield b"x" * 400

        response = await client.post("/v1/chat/completions", content=body())
    assert response.status_code == 413
    message = response.json()["error"]["message"]
    assert "over the relay's limit of 1000 bytes" in message
    assert "1200" not in message
    assert "1600" not in message


async def _events(response: httpx.Response) -> list[str]:
    return [line async for line in response.aiter_lines()]


async def test_streams_waiting_for_a_first_token_get_keepalives_in_their_dialect(
    nursery: trio.Nursery,
) -> None:
    """A long prefill: pings on /v1/messages, comments on chat; then the answer."""
    backend = FakeBackend(models=["m"])
    await nursery.start(backend.run)
    async with (
        relay_process("--stream-keepalive", "0.2") as (relay, url),
        agent_process(relay, backend.url, "--models", "m"),
        httpx.AsyncClient(base_url=url, timeout=20) as client,
    ):
        body = {"model": "m", "max_tokens": 5, "stream": True, "fake": {"prefill": 1.0}}
        async with client.stream("POST", "/v1/messages", json={**body, "messages": []}) as response:
            assert response.status_code == 200
            lines = await _events(response)
        assert lines[:2] == ["event: ping", 'data: {"type": "ping"}']
        assert "event: message_stop" in lines
        async with client.stream(
            "POST", "/v1/chat/completions", json={**body, "messages": []}
        ) as response:
            assert response.status_code == 200
            lines = await _events(response)
        assert lines[0] == ": keepalive"
        assert lines[-2:] == ["data: [DONE]", ""] or "data: [DONE]" in lines
        # Not streamed: no keepalive, the backend's status as it was.
        plain = await client.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [], "fake": {"prefill": 0.5, "status": 400}},
        )
        assert plain.status_code == 400


async def test_a_failure_after_a_keepalive_is_the_dialects_error_event(
    nursery: trio.Nursery,
) -> None:
    backend = FakeBackend(models=["m"])
    await nursery.start(backend.run)
    async with (
        relay_process("--stream-keepalive", "0.2") as (relay, url),
        agent_process(relay, backend.url, "--models", "m"),
        httpx.AsyncClient(base_url=url, timeout=20) as client,
    ):
        body = {
            "model": "m",
            "max_tokens": 5,
            "stream": True,
            "messages": [],
            "fake": {"prefill": 0.8, "status": 429},
        }
        async with client.stream("POST", "/v1/messages", json=body) as response:
            assert response.status_code == 200
            lines = await _events(response)
        assert lines[0] == "event: ping"
        assert "event: error" in lines
        error = json.loads(lines[lines.index("event: error") + 1].removeprefix("data: "))
        assert error["type"] == "error"
        assert "fake error 429" in error["error"]["message"]


async def test_a_client_that_gives_up_during_prefill_and_resends_never_doubles_the_work(
    nursery: trio.Nursery,
) -> None:
    """One slot: the abandoned copy is cancelled before the resent one runs."""
    backend = FakeBackend(models=["m"])
    await nursery.start(backend.run)
    async with (
        relay_process() as (relay, url),
        agent_process(relay, backend.url, "--models", "m", "--max-concurrency", "1"),
        httpx.AsyncClient(base_url=url, timeout=20) as client,
    ):
        body = {
            "model": "m",
            "max_tokens": 5,
            "stream": True,
            "messages": [],
            "fake": {"prefill": 2.0},
        }
        with trio.move_on_after(30):
            async with trio.open_nursery() as gave_up:

                async def first() -> None:
                    async with client.stream("POST", "/v1/messages", json=body) as response:
                        await response.aread()

                gave_up.start_soon(first)
                await backend.wait_requests(1)
                gave_up.cancel_scope.cancel()  # the client's own timeout
        async with client.stream("POST", "/v1/messages", json=body) as response:
            assert response.status_code == 200
            lines = await _events(response)
        assert "event: message_stop" in lines
        posts = [r for r in backend.requests if r.method == "POST"]
        assert len(posts) == 2
        assert posts[0].disconnected_at is not None
        assert posts[0].disconnected_at <= posts[1].started_at
        assert backend.max_running == 1
