"""Which client carries which request: the HttpPool for http:// POSTs; for an
https:// backend, small httpx pools (httpcore's pool bookkeeping is quadratic
in its connections), requests spread round-robin over them."""

from __future__ import annotations

from collections import Counter

import httpx
import trio

from agent.backend import SHARD_CONNECTIONS, open_backend
from tests.agent.fakes import fast_config

_BODY = b'{"model":"fake-model","messages":[]}'


async def test_https_backend_gets_one_client_per_shard_and_requests_spread() -> None:
    config = fast_config("ws://127.0.0.1:1", "https://backend.test", max_concurrency=100)
    served: Counter[int] = Counter()
    async with open_backend(config) as backend:
        shards = backend._clients
        assert backend._pool is None
        assert len(shards) == -(-(100 + 8) // SHARD_CONNECTIONS)
        for index, client in enumerate(shards):
            client._transport = httpx.MockTransport(_count_into(served, index))
        with trio.fail_after(10):
            async with trio.open_nursery() as n:
                for _ in range(len(shards) * 2):
                    n.start_soon(_post, backend)
    # Round-robin: every client carried exactly its share.
    assert served == dict.fromkeys(range(len(shards)), 2)


async def test_http_backend_posts_through_the_pool_and_gets_through_httpx(fake_backend) -> None:
    config = fast_config("ws://127.0.0.1:1", fake_backend.url, max_concurrency=100)
    async with open_backend(config) as backend:
        assert backend._pool is not None
        (client,) = backend._clients  # discovery's GETs only: no shards
        with trio.fail_after(10):
            async with trio.open_nursery() as n:
                for _ in range(8):
                    n.start_soon(_post, backend)
            assert not client._transport._pool.connections
            status, _ = await backend.get("/v1/models")
        assert status == 200
        assert len(client._transport._pool.connections) == 1
        stats = backend._pool.statistics()
        assert stats.opened == 8
        assert stats.idle == 8


async def test_default_concurrency_is_one_client(fake_backend) -> None:
    for url in (fake_backend.url, "https://backend.test"):
        async with open_backend(fast_config("ws://127.0.0.1:1", url)) as backend:
            assert len(backend._clients) == 1


def _count_into(served: Counter[int], index: int):  # type: ignore[no-untyped-def]
    async def handler(request: httpx.Request) -> httpx.Response:
        served[index] += 1
        return httpx.Response(200, json={"ok": True})

    return handler


async def _post(backend) -> None:  # type: ignore[no-untyped-def]
    async with backend.post("/v1/chat/completions", _BODY, {}) as response:
        assert response.status_code == 200
        await response.read()
