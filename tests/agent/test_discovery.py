"""Model discovery: parsing, and the agent against the real FakeBackend."""

import httpx
import trio

from agent.discovery import parse_ollama_tags, parse_openai_models
from tests.agent.fakes import FakeRelay
from tests.agent.test_jobs import start_agent
from tests.fake_backend import FakeBackend
from wire import ModelsRefresh, ModelsUpdate, Ping, Pong


def test_parse_openai_models() -> None:
    body = b'{"object":"list","data":[{"id":"a"},{"id":"b"},{"id":"a"},{"name":"x"},7]}'
    assert parse_openai_models(body) == ("a", "b")
    assert parse_openai_models(b'{"data": []}') == ()
    assert parse_openai_models(b"<html>") is None
    assert parse_openai_models(b'{"models": []}') is None


def test_parse_ollama_tags() -> None:
    body = b'{"models":[{"name":"llama3:8b","model":"llama3:8b"},{"model":"qwen"},{"size":1}]}'
    assert parse_ollama_tags(body) == ("llama3:8b", "qwen")
    assert parse_ollama_tags(b"[]") is None


async def test_discovers_from_v1_models_after_registering_with_none(
    nursery: trio.Nursery, fake_relay: FakeRelay
) -> None:
    backend = FakeBackend(models=["m-a", "m-b"])
    url = await nursery.start(backend.run)
    with trio.fail_after(10):
        await start_agent(nursery, fake_relay, url, models="*")
        conn = await fake_relay.next_connection()
        register = await conn.register()
        update = await conn.receive()
    assert register.models == ()  # connects at once, before discovery
    assert update == ModelsUpdate(models=("m-a", "m-b"), current_load=0)
    assert [r.path for r in backend.requests] == ["/v1/models"]


async def test_discovers_from_ollama_tags(nursery: trio.Nursery, fake_relay: FakeRelay) -> None:
    backend = FakeBackend(models=["llama3:8b"], ollama=True)
    url = await nursery.start(backend.run)
    with trio.fail_after(10):
        await start_agent(nursery, fake_relay, url, models="*")
        conn = await fake_relay.next_connection()
        await conn.register()
        update = await conn.receive()
    assert update == ModelsUpdate(models=("llama3:8b",), current_load=0)
    assert [r.path for r in backend.requests[:2]] == ["/v1/models", "/api/tags"]


async def test_change_is_sent_as_models_update(
    nursery: trio.Nursery, fake_relay: FakeRelay, fake_backend: FakeBackend
) -> None:
    assert fake_backend.url is not None
    with trio.fail_after(10):
        await start_agent(
            nursery, fake_relay, fake_backend.url, models="*", models_poll_interval=0.05
        )
        conn = await fake_relay.next_connection()
        await conn.register()
        first = await conn.receive()
        async with httpx.AsyncClient() as client:
            answer = await client.put(
                f"{fake_backend.url}/_control/models", json={"models": ["new-1", "new-2"]}
            )
            answer.raise_for_status()
        second = await conn.receive()
    assert first == ModelsUpdate(models=("fake-model",), current_load=0)
    assert second == ModelsUpdate(models=("new-1", "new-2"), current_load=0)


async def test_rechecks_every_second_while_nothing_is_found(
    nursery: trio.Nursery, fake_relay: FakeRelay
) -> None:
    backend = FakeBackend(models=[])  # a server still loading its model
    url = await nursery.start(backend.run)
    with trio.fail_after(10):
        # The poll interval is long: only the "nothing yet" retry can find it in time.
        await start_agent(nursery, fake_relay, url, models="*", models_poll_interval=3600)
        conn = await fake_relay.next_connection()
        await conn.register()
        checks = await backend.wait_requests(2)  # a first check, and a re-check, found nothing
        await checks[1].done.wait()
        backend.models = ["late-model"]
        update = await conn.receive()
    assert update == ModelsUpdate(models=("late-model",), current_load=0)


async def test_backend_down_still_registers_and_serves_pings(
    nursery: trio.Nursery, fake_relay: FakeRelay
) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with trio.fail_after(10):
        await start_agent(nursery, fake_relay, f"http://127.0.0.1:{port}", models="*")
        conn = await fake_relay.next_connection()
        register = await conn.register()
        await conn.send(Ping(timestamp_unix_ms=5))
        pong = await conn.receive()
    assert register.models == ()
    assert pong == Pong(current_load=0, timestamp_unix_ms=5)


async def test_models_refresh_rediscovers_and_answers(
    nursery: trio.Nursery, fake_relay: FakeRelay, fake_backend: FakeBackend
) -> None:
    assert fake_backend.url is not None
    with trio.fail_after(10):
        await start_agent(nursery, fake_relay, fake_backend.url, models="*")
        conn = await fake_relay.next_connection()
        await conn.register()
        first = await conn.receive()
        calls = len(fake_backend.requests)
        await conn.send(ModelsRefresh(reason="operator"))
        answer = await conn.receive()
    assert first == answer == ModelsUpdate(models=("fake-model",), current_load=0)
    assert len(fake_backend.requests) == calls + 1  # it asked the backend again


async def test_reconnect_registers_with_the_models_already_found(
    nursery: trio.Nursery, fake_relay: FakeRelay, fake_backend: FakeBackend
) -> None:
    assert fake_backend.url is not None
    with trio.fail_after(10):
        await start_agent(nursery, fake_relay, fake_backend.url, models="*")
        conn = await fake_relay.next_connection()
        await conn.register()
        await conn.receive()  # the first models_update
        await conn.close(1001, "relay restarting")
        again = await fake_relay.next_connection()
        register = await again.register()
    assert register.models == ("fake-model",)
