"""One agent, several relays, one budget: fake relays (real WebSockets) and
the fake backend (real HTTP), in real time."""

from __future__ import annotations

import json
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio

from agent.config import AgentConfig
from agent.daemon import Daemon, run_agent
from agent.errors import ConfigError
from agent.fleet import Fleet
from tests.agent.fakes import FakeRelay, RelayConn, fast_config, start_fake_relay
from tests.agent.test_jobs import chat, collect
from wire import (
    CAPABILITY_DRAIN,
    CAPABILITY_FLEET,
    REFUSED_FLEET_BUSY,
    REFUSED_HEADER,
    Cancel,
    CancelReason,
    Ping,
    Pong,
    ResponseChunk,
)

if TYPE_CHECKING:
    from tests.fake_backend import FakeBackend

FLEET = (CAPABILITY_DRAIN, CAPABILITY_FLEET)


def test_proxy_url_takes_several_relays() -> None:
    config = fast_config("http://a.test, https://b.test/,http://a.test", "http://backend.test")
    assert config.relays == ("http://a.test", "https://b.test/")
    assert config.proxy_url == "http://a.test"
    assert config.for_relay("https://b.test/").ws_url == (
        "wss://b.test/v1/worker/connect?provider=local"
    )
    assert config.for_relay("https://b.test/").relays == ("https://b.test/",)
    single = fast_config("http://a.test", "http://backend.test")
    assert single.relays == ("http://a.test",)
    assert single.proxy_urls == ()


@pytest.mark.parametrize("value", [" , ", "http://a.test,ftp://b.test"])
def test_a_bad_relay_in_the_list_names_the_flag(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        AgentConfig.create(worker_secret="s", proxy_url=value)
    assert caught.value.option == "--proxy-url"


async def _fleet(
    nursery: trio.Nursery, relays: list[FakeRelay], backend_url: str, **overrides: object
) -> tuple[Daemon, list[RelayConn]]:
    config = fast_config(",".join(r.url for r in relays), backend_url, **overrides)
    daemon: Daemon = await nursery.start(partial(run_agent, config, handle_signals=False))
    conns = []
    for relay in relays:
        conn = await relay.next_connection()
        await conn.register(capabilities=FLEET)
        conns.append(conn)
    return daemon, conns


async def test_one_budget_across_relays(nursery: trio.Nursery, fake_backend: FakeBackend) -> None:
    relays = [await start_fake_relay(nursery), await start_fake_relay(nursery)]
    with trio.fail_after(10):
        daemon, (a, b) = await _fleet(nursery, relays, fake_backend.url, max_concurrency=1)
        assert isinstance(daemon, Fleet)
        await a.send(chat("r1", stream=True, fake={"stall_after": 1}))
        assert isinstance(await a.receive(), ResponseChunk)
        # b has a free slot by its own count; the agent's one slot is a's.
        await b.send(chat("r2"))
        _, refused = await collect(b, "r2")
        await b.send(Ping(timestamp_unix_ms=7))
        pong = await b.receive()
        # The slot frees at a: b hears of it without asking.
        await a.send(Cancel("r1", CancelReason.TIMEOUT))
        _, cancelled = await collect(a, "r1")
        room = await b.receive()
        await b.send(chat("r3"))
        _, third = await collect(b, "r3")
    assert refused.status_code == 503
    assert refused.headers is not None
    assert refused.headers[REFUSED_HEADER] == REFUSED_FLEET_BUSY
    assert json.loads(refused.body or "")["error"]["code"] == REFUSED_FLEET_BUSY
    assert pong == Pong(current_load=1, timestamp_unix_ms=7)  # a's work counts at b
    assert cancelled.status_code == 499
    assert room == Pong(current_load=0)
    assert third.status_code == 200
    assert fake_backend.max_running == 1


async def test_a_relay_without_the_fleet_extension_gets_worker_busy(
    nursery: trio.Nursery, fake_backend: FakeBackend
) -> None:
    relays = [await start_fake_relay(nursery), await start_fake_relay(nursery)]
    config = fast_config(",".join(r.url for r in relays), fake_backend.url, max_concurrency=1)
    await nursery.start(partial(run_agent, config, handle_signals=False))
    with trio.fail_after(10):
        a = await relays[0].next_connection()
        await a.register(capabilities=FLEET)
        b = await relays[1].next_connection()
        await b.register(capabilities=(CAPABILITY_DRAIN,))  # an older relay
        await a.send(chat("r1", stream=True, fake={"stall_after": 1}))
        assert isinstance(await a.receive(), ResponseChunk)
        await b.send(chat("r2"))
        _, refused = await collect(b, "r2")
        await a.send(Cancel("r1", CancelReason.TIMEOUT))
        await collect(a, "r1")
        # No unsolicited pong for it: the next frame answers our ping.
        await b.send(Ping(timestamp_unix_ms=1))
        assert await b.receive() == Pong(current_load=0, timestamp_unix_ms=1)
    assert refused.headers is not None
    assert refused.headers[REFUSED_HEADER] == "worker_busy"


async def test_each_relay_reconnects_on_its_own(
    nursery: trio.Nursery, fake_backend: FakeBackend
) -> None:
    relays = [await start_fake_relay(nursery), await start_fake_relay(nursery)]
    with trio.fail_after(10):
        daemon, (a, b) = await _fleet(nursery, relays, fake_backend.url, max_concurrency=2)
        await a.ws.aclose()  # relay a drops us; b's session goes on
        again = await relays[0].next_connection()
        await again.register(worker_id="w-2", capabilities=FLEET)
        await b.send(chat("rb"))
        _, done_b = await collect(b, "rb")
        await again.send(chat("ra"))
        _, done_a = await collect(again, "ra")
        daemon.stop()
        # Both sessions drain and close.
        await again.wait_closed()
        await b.wait_closed()
    assert done_a.status_code == done_b.status_code == 200
