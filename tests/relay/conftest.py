"""Fixtures for relay tests: a real relay on 127.0.0.1:0 in the test's nursery."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import attrs
import httpx
import pytest

from relay.config import RelayConfig
from relay.server import RelayServer
from tests.relay.memory_relay import MemoryRelay

if TYPE_CHECKING:
    from pathlib import Path

    import trio

SECRET = "test-secret"


def make_config(tmp_path: Path, **overrides: object) -> RelayConfig:
    fields: dict[str, object] = {
        "worker_secret": SECRET,
        "listen_host": "127.0.0.1",
        "listen_port": 0,
        "data_dir": tmp_path / "data",
    }
    fields.update(overrides)
    return RelayConfig(**fields)  # type: ignore[arg-type]


@attrs.define
class RunningRelay:
    server: RelayServer
    url: str
    client: httpx.AsyncClient

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1) + "/v1/worker/connect"

    @property
    def hub(self):  # type: ignore[no-untyped-def]
        return self.server.relay.hub


StartRelay = Callable[..., "trio.lowlevel.Coroutine[object, object, RunningRelay]"]


@pytest.fixture
async def start_relay(
    nursery: trio.Nursery, tmp_path: Path
) -> AsyncIterator[Callable[..., object]]:
    clients: list[httpx.AsyncClient] = []

    async def start(**overrides: object) -> RunningRelay:
        server = RelayServer(make_config(tmp_path, **overrides))
        url = await nursery.start(server.run)
        client = httpx.AsyncClient(base_url=url, timeout=10)
        clients.append(client)
        return RunningRelay(server, url, client)

    yield start
    for client in clients:
        await client.aclose()


@pytest.fixture
async def relay(start_relay: Callable[..., object]) -> RunningRelay:
    return await start_relay()  # type: ignore[misc,no-any-return]


# --- the hot path in memory (tests/relay/memory_relay.py) ----------------------


@pytest.fixture
async def start_memory_relay(nursery: trio.Nursery, tmp_path: Path) -> Callable[..., MemoryRelay]:
    """Builds an in-memory relay (`Proxy` + `Hub`) with config overrides; no socket."""

    def start(**overrides: object) -> MemoryRelay:
        return MemoryRelay.from_config(make_config(tmp_path, **overrides), nursery)

    return start


@pytest.fixture
async def memory_relay(start_memory_relay: Callable[..., MemoryRelay]) -> MemoryRelay:
    return start_memory_relay()


FRONTS = ["builtin", "hypercorn"]


@pytest.fixture(params=FRONTS)
async def any_front_relay(
    request: pytest.FixtureRequest, start_relay: Callable[..., object]
) -> RunningRelay:
    """A relay on each `--http-front`: the builtin one, and Hypercorn for everything."""
    return await start_relay(http_front=request.param)  # type: ignore[misc,no-any-return]
