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
