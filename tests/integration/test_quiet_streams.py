"""Quiet streams kept alive, chunked bodies over the limit, and a client that
gives up and resends against a one-slot worker: real relay and agent processes."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx
import trio

from tests.integration.procs import relay_process

if TYPE_CHECKING:
    from tests.fake_backend import FakeBackend
    from tests.integration.conftest import OpenStack


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


MODEL = "fake-model"  # what the `backend` fixture serves
# Told, not discovered: the backend then sees only the requests under test.
AGENT = ("--models", MODEL)


async def _events(response: httpx.Response) -> list[str]:
    return [line async for line in response.aiter_lines()]


async def test_streams_waiting_for_a_first_token_get_keepalives_in_their_dialect(
    open_stack: OpenStack,
) -> None:
    """A long prefill: pings on /v1/messages, comments on chat; then the answer."""
    async with open_stack("--stream-keepalive", "0.2", agent_args=AGENT) as stack:
        client = stack.client
        body = {"model": MODEL, "max_tokens": 5, "stream": True, "fake": {"prefill": 1.0}}
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
        assert "data: [DONE]" in lines
        # Not streamed: no keepalive, the backend's status as it was.
        plain = await client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [], "fake": {"prefill": 0.5, "status": 400}},
        )
        assert plain.status_code == 400


async def test_a_failure_after_a_keepalive_is_the_dialects_error_event(
    open_stack: OpenStack,
) -> None:
    async with open_stack("--stream-keepalive", "0.2", agent_args=AGENT) as stack:
        client = stack.client
        body = {
            "model": MODEL,
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
    open_stack: OpenStack, backend: FakeBackend
) -> None:
    """One slot: the abandoned copy is cancelled before the resent one runs."""
    async with open_stack(agent_args=(*AGENT, "--max-concurrency", "1")) as stack:
        client = stack.client
        body = {
            "model": MODEL,
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
