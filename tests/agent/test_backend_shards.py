"""The agent spreads backend requests over small httpx pools (httpcore's pool
bookkeeping is quadratic in its connections)."""

from __future__ import annotations

import trio

from agent.backend import SHARD_CONNECTIONS, open_backend
from tests.agent.fakes import fast_config


async def test_one_client_per_shard_and_requests_spread(fake_backend) -> None:
    config = fast_config("ws://127.0.0.1:1", fake_backend.url, max_concurrency=100)
    async with open_backend(config) as backend:
        shards = backend._clients
        assert len(shards) == -(-(100 + 8) // SHARD_CONNECTIONS)
        with trio.fail_after(10):
            async with trio.open_nursery() as n:
                for _ in range(len(shards) * 2):
                    n.start_soon(_post, backend)
        # Round-robin: every client opened connections of its own.
        assert all(client._transport._pool.connections for client in shards)


async def test_default_concurrency_is_one_client(fake_backend) -> None:
    config = fast_config("ws://127.0.0.1:1", fake_backend.url)
    async with open_backend(config) as backend:
        assert len(backend._clients) == 1


async def _post(backend) -> None:  # type: ignore[no-untyped-def]
    body = b'{"model":"fake-model","messages":[]}'
    async with backend.post("/v1/chat/completions", body, {}) as response:
        assert response.status_code == 200
        await response.read()
