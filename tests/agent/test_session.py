"""Session protocol logic over an in-memory transport (virtual time where it matters)."""

import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
import trio.testing

from agent.backend import Backend, open_backend
from agent.discovery import ModelCatalog
from agent.errors import (
    AuthRefused,
    RegistrationTimeout,
    RelayProtocolError,
    RelaySilent,
    SessionError,
    VersionRejected,
)
from agent.session import Session
from tests.agent.fakes import MemoryRelayEnd, fast_config, memory_transport_pair
from wire import (
    CAPABILITY_DRAIN,
    PROTOCOL_VERSION,
    Cancel,
    CancelReason,
    GracefulShutdown,
    ModelsRefresh,
    ModelsUpdate,
    Ping,
    Pong,
    Register,
    RegisterAck,
    Request,
    ResponseComplete,
)

Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


async def _never_called(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"unexpected backend call {request.url}")


@asynccontextmanager
async def mocked_backend(
    handler: Handler = _never_called, **overrides: object
) -> AsyncIterator[Backend]:
    """A backend whose HTTP is an in-memory handler: for tests in virtual time only.

    An https:// URL, so that POSTs go through httpx (the HttpPool serves
    http:// only), whose transport `open_backend` is given here.
    """
    config = fast_config("ws://127.0.0.1:1", "https://backend.test", **overrides)
    async with open_backend(
        config, httpx_transport=lambda: httpx.MockTransport(handler)
    ) as backend:
        yield backend


def make_session(backend: Backend, **overrides: object) -> tuple[Session, MemoryRelayEnd]:
    config = fast_config("ws://127.0.0.1:1", "http://backend.test", models="m1", **overrides)
    transport, relay = memory_transport_pair()
    return Session(config, transport, backend, ModelCatalog(models=config.models)), relay


async def ack(
    relay: MemoryRelayEnd, *, capabilities: tuple[str, ...] | None = (CAPABILITY_DRAIN,)
) -> Register:
    register = await relay.receive()
    assert isinstance(register, Register)
    await relay.send(
        RegisterAck(
            "w-9", register.models, protocol_version=PROTOCOL_VERSION, capabilities=capabilities
        )
    )
    return register


def request(rid: str, path: str = "/v1/chat/completions") -> Request:
    return Request(rid, "m1", path, False, json.dumps({"model": "m1"}))


async def test_register_announces_version_capabilities_and_load(nursery: trio.Nursery) -> None:
    async with mocked_backend() as backend:
        session, relay = make_session(backend, max_concurrency=3)
        nursery.start_soon(session.run)
        with trio.fail_after(5):
            register = await ack(relay)
            await relay.send(Ping(timestamp_unix_ms=123))
            assert await relay.receive() == Pong(current_load=0, timestamp_unix_ms=123)
        assert register == Register(
            worker_name="test-box",
            models=("m1",),
            max_concurrent=3,
            protocol_version=PROTOCOL_VERSION,
            current_load=0,
            capabilities=(CAPABILITY_DRAIN,),
        )
        assert session.worker_id == "w-9"
        nursery.cancel_scope.cancel()


async def test_ping_without_timestamp_gets_pong_without_one(nursery: trio.Nursery) -> None:
    async with mocked_backend() as backend:
        session, relay = make_session(backend)
        nursery.start_soon(session.run)
        with trio.fail_after(5):
            await ack(relay)
            await relay.send(Ping())
            assert await relay.receive() == Pong(current_load=0)
            # A cancel for an unknown request is normal (late) and changes nothing.
            await relay.send(Cancel("nope", CancelReason.TIMEOUT))
            await relay.send(Ping(timestamp_unix_ms=2))
            assert await relay.receive() == Pong(current_load=0, timestamp_unix_ms=2)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("frame", "fragment"),
    [
        ("not json", "not valid JSON"),
        (
            '{"type": "register", "worker_name": "x", "models": [], "max_concurrent": 1}',
            "may not be sent by the relay",
        ),
        ('{"type": "cancel", "request_id": "r", "reason": "bogus"}', "reason"),
    ],
)
async def test_undecodable_frame_closes_with_1002(frame: str, fragment: str) -> None:
    async with mocked_backend() as backend:
        session, relay = make_session(backend)

        async def relay_side() -> None:
            await ack(relay)
            await relay.send_raw(frame)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relay_side)
                with pytest.raises(RelayProtocolError, match=fragment):
                    await session.run()
    assert relay.transport.closed_with is not None
    code, reason = relay.transport.closed_with
    assert code == 1002
    assert fragment in reason


async def test_relay_silence_ends_the_session_after_90_s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with mocked_backend() as backend:
        session, relay = make_session(backend)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ack, relay)
            start = trio.current_time()
            with pytest.raises(RelaySilent):
                await session.run()
    assert trio.current_time() - start == pytest.approx(90, abs=0.5)


async def test_each_frame_pushes_the_silence_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with mocked_backend() as backend:
        session, relay = make_session(backend)

        async def relay_side() -> None:
            await ack(relay)
            await trio.sleep(60)
            await relay.send(Ping())
            await relay.receive()

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay_side)
            with pytest.raises(RelaySilent):
                await session.run()
    assert trio.current_time() - start == pytest.approx(150, abs=0.5)


async def test_no_register_ack_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async with mocked_backend() as backend:
        session, relay = make_session(backend)
        start = trio.current_time()
        with pytest.raises(RegistrationTimeout):
            await session.run()
    assert trio.current_time() - start == pytest.approx(5, abs=0.1)  # fast_config: 5 s
    assert isinstance(await relay.receive(), Register)


async def test_ack_with_another_version_is_refused_with_1002() -> None:
    async with mocked_backend() as backend:
        session, relay = make_session(backend)

        async def relay_side() -> None:
            register = await relay.receive()
            assert isinstance(register, Register)
            await relay.send(RegisterAck("w", (), protocol_version="1999-01-v0"))

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relay_side)
                with pytest.raises(VersionRejected, match="1999-01-v0"):
                    await session.run()
    assert relay.transport.closed_with is not None
    assert relay.transport.closed_with[0] == 1002


@pytest.mark.parametrize(
    ("code", "reason", "error"),
    [
        (1008, "worker authentication failed", AuthRefused),
        (1002, "protocol version mismatch: expected 2026-04-bridge-v1", VersionRejected),
        (1011, "internal error", SessionError),
    ],
)
async def test_relay_close_is_classified(code: int, reason: str, error: type[Exception]) -> None:
    async with mocked_backend() as backend:
        session, relay = make_session(backend)

        async def relay_side() -> None:
            await ack(relay)
            await relay.close(code, reason)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relay_side)
                with pytest.raises(error):
                    await session.run()


@pytest.mark.parametrize("agreed", [True, False])
async def test_graceful_shutdown_announces_drain_and_closes(agreed: bool) -> None:
    async with mocked_backend() as backend:
        session, relay = make_session(backend)
        frames: list[object] = []

        async def relay_side() -> None:
            await ack(relay, capabilities=(CAPABILITY_DRAIN,) if agreed else None)
            await relay.send(GracefulShutdown(reason="relay restarting"))
            frames.append(await relay.receive())

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relay_side)
                await session.run()  # returns: a drain is not an error
    expected = ModelsUpdate(models=(), current_load=0, draining=True if agreed else None)
    assert frames == [expected]
    assert relay.transport.closed_with == (1000, "worker drained")
    assert session.drain_reason == "relay graceful_shutdown"


async def test_drain_waits_for_in_flight_work_and_refuses_new(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow(req: httpx.Request) -> httpx.Response:
        await trio.sleep(3)
        return httpx.Response(200, json={"ok": True})

    async with mocked_backend(slow) as backend:
        session, relay = make_session(backend)
        seen: list[object] = []

        async def relay_side() -> None:
            await ack(relay)
            await relay.send(request("r1"))
            await trio.sleep(1)
            await relay.send(GracefulShutdown(drain_timeout_secs=10))
            await relay.send(request("r2"))
            for _ in range(3):
                seen.append(await relay.receive())

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay_side)
            await session.run()
    assert trio.current_time() - start == pytest.approx(3, abs=0.1)
    update, refused, done = seen
    assert update == ModelsUpdate(models=(), current_load=1, draining=True)
    assert isinstance(refused, ResponseComplete)
    assert refused.request_id == "r2"
    assert refused.status_code == 503
    assert json.loads(refused.body or "")["error"]["code"] == "worker_draining"
    assert isinstance(done, ResponseComplete)
    assert done.request_id == "r1"
    assert done.status_code == 200


async def test_drain_deadline_abandons_what_is_still_running(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def stuck(req: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError

    async with mocked_backend(stuck) as backend:
        session, relay = make_session(backend)

        async def relay_side() -> None:
            await ack(relay)
            await relay.send(request("r1"))
            await relay.send(GracefulShutdown(drain_timeout_secs=4))

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay_side)
            await session.run()
    assert trio.current_time() - start == pytest.approx(4, abs=0.1)
    assert session.jobs == {}
    messages = [r.getMessage() for r in caplog.records]
    assert "request abandoned: session ended or drain deadline passed" in messages
    assert "drain deadline passed; in-flight requests were abandoned" in messages
    assert relay.transport.closed_with == (1000, "worker drained")


async def test_begin_drain_again_only_brings_the_deadline_closer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def stuck(req: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError

    async with mocked_backend(stuck) as backend:
        session, relay = make_session(backend)

        async def relay_side() -> None:
            await ack(relay)
            await relay.send(request("r1"))
            await relay.send(GracefulShutdown(drain_timeout_secs=100))
            await trio.sleep(1)
            session.begin_drain(2, "signal")  # like a SIGTERM during the relay's drain
            session.begin_drain(50, "signal")

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay_side)
            await session.run()
    assert trio.current_time() - start == pytest.approx(3, abs=0.1)


async def test_models_refresh_with_a_fixed_list_answers_with_it(nursery: trio.Nursery) -> None:
    async with mocked_backend() as backend:
        session, relay = make_session(backend)
        nursery.start_soon(session.run)
        with trio.fail_after(5):
            await ack(relay)
            await relay.send(ModelsRefresh(reason="admin"))
            assert await relay.receive() == ModelsUpdate(models=("m1",), current_load=0)
        nursery.cancel_scope.cancel()


async def test_duplicate_request_id_is_ignored(autojump_clock: trio.testing.MockClock) -> None:
    calls = 0

    async def once(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        await trio.sleep(1)
        return httpx.Response(200, json={})

    async with mocked_backend(once) as backend:
        session, relay = make_session(backend, max_concurrency=4)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            await ack(relay)
            await relay.send(request("r1"))
            await relay.send(request("r1"))
            done = await relay.receive()
            await relay.send(Ping())
            pong = await relay.receive()
            nursery.cancel_scope.cancel()
    assert isinstance(done, ResponseComplete)
    assert done.status_code == 200
    assert pong == Pong(current_load=0)
    assert calls == 1
