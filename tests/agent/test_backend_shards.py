"""Which client carries which request: the HttpPool for http:// POSTs; for an
https:// backend, small httpx pools (httpcore's pool bookkeeping is quadratic
in its connections), requests spread round-robin over them.

Each httpx client's transport comes from `open_backend`'s ``httpx_transport``
factory, called once per client: that is how these tests count the clients
and see which one carried a request.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import httpx
import trio

from agent.backend import SHARD_CONNECTIONS, open_backend
from tests.agent.fakes import fast_config

if TYPE_CHECKING:
    from tests.fake_backend import FakeBackend

_BODY = b'{"model":"fake-model","messages":[]}'


async def test_https_backend_gets_one_client_per_shard_and_requests_spread() -> None:
    config = fast_config("ws://127.0.0.1:1", "https://backend.test", max_concurrency=100)
    served: list[int] = []  # requests carried, per client, in the order they were made

    def counting_transport() -> httpx.MockTransport:
        index = len(served)
        served.append(0)

        async def handler(request: httpx.Request) -> httpx.Response:
            served[index] += 1
            return httpx.Response(200, json={"ok": True})

        return httpx.MockTransport(handler)

    async with open_backend(config, httpx_transport=counting_transport) as backend:
        shards = len(served)
        assert shards == -(-(100 + 8) // SHARD_CONNECTIONS)
        with trio.fail_after(10):
            async with trio.open_nursery() as n:
                for _ in range(shards * 2):
                    n.start_soon(_post, backend)
    # Round-robin, and no HttpPool: every client carried exactly its share.
    assert served == [2] * shards


class _CarriedBy(httpx.AsyncBaseTransport):
    """httpx's own transport, noting the method of every request it carries."""

    def __init__(self) -> None:
        self.methods: list[str] = []
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.methods.append(request.method)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_http_backend_posts_through_the_pool_and_gets_through_httpx(
    fake_backend: FakeBackend,
) -> None:
    config = fast_config("ws://127.0.0.1:1", fake_backend.url, max_concurrency=100)
    made: list[_CarriedBy] = []

    def transport() -> _CarriedBy:
        made.append(_CarriedBy())
        return made[-1]

    async with open_backend(config, httpx_transport=transport) as backend:
        (httpx_side,) = made  # discovery's GETs only: no shards
        with trio.fail_after(10):
            async with trio.open_nursery() as n:
                for _ in range(8):
                    n.start_soon(_post, backend)
            # The backend got all eight, none of them through httpx.
            assert [r.method for r in fake_backend.requests] == ["POST"] * 8
            assert httpx_side.methods == []
            status, _ = await backend.get("/v1/models")
        assert status == 200
        assert httpx_side.methods == ["GET"]
        assert fake_backend.requests[-1].method == "GET"
        pool = backend._pool
        assert pool is not None
        stats = pool.statistics()
        assert stats.opened == 8
        assert stats.idle == 8


async def test_default_concurrency_is_one_client(fake_backend: FakeBackend) -> None:
    for url in (fake_backend.url, "https://backend.test"):
        made: list[httpx.AsyncBaseTransport] = []
        transport = partial(_made_into, made)
        async with open_backend(fast_config("ws://127.0.0.1:1", url), httpx_transport=transport):
            assert len(made) == 1, url


def _made_into(made: list[httpx.AsyncBaseTransport]) -> httpx.AsyncBaseTransport:
    made.append(httpx.AsyncHTTPTransport())
    return made[-1]


async def _post(backend) -> None:  # type: ignore[no-untyped-def]
    async with backend.post("/v1/chat/completions", _BODY, {}) as response:
        assert response.status_code == 200
        await response.read()
