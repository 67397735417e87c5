"""The reconnect loop, its backoff, drains and signals."""

import itertools
import json
import logging
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
import trio_websocket

from agent.backend import open_backend
from agent.backoff import BackoffTracker
from agent.config import AgentConfig, Backoff
from agent.daemon import Daemon, run_agent
from agent.discovery import ModelCatalog
from agent.errors import AuthRefused, RelayUnreachable, SessionError
from agent.transport import Transport
from tests.agent.fakes import (
    SECRET,
    FakeRelay,
    MemoryRelayEnd,
    RelayConn,
    fast_config,
    memory_transport_pair,
)
from tests.agent.test_jobs import chat, start_agent
from tests.fake_backend import FakeBackend
from wire import (
    CAPABILITY_CACHE_TOKENS,
    CAPABILITY_DRAIN,
    CAPABILITY_FLEET,
    PROTOCOL_VERSION,
    GracefulShutdown,
    ModelsUpdate,
    Register,
    RegisterAck,
    ResponseChunk,
    ResponseComplete,
)

REPO = Path(__file__).resolve().parents[2]


async def frames_until_closed(conn: RelayConn) -> tuple[list[object], int]:
    """Every frame the agent sends until it closes the socket, and the close code."""
    frames: list[object] = []
    while True:
        try:
            frames.append(await conn.receive())
        except trio_websocket.ConnectionClosed as exc:
            return frames, exc.reason.code if exc.reason else 1006


# --- backoff in virtual time -------------------------------------------------------------


async def _attempt_times(
    failures: list[SessionError | None], count: int, backoff: Backoff
) -> list[float]:
    """Run a daemon whose connection attempts fail as listed; return the attempt times."""
    times: list[float] = []
    got_all = trio.Event()
    config = fast_config("ws://127.0.0.1:1", "http://backend.test", backoff=backoff)

    async def relay_side(relay: MemoryRelayEnd) -> None:
        register = await relay.receive()
        assert isinstance(register, Register)
        await relay.send(RegisterAck("w", (), protocol_version=PROTOCOL_VERSION))
        await relay.close(1011, "relay restarting")

    async with open_backend(config) as backend, trio.open_nursery() as nursery:

        @asynccontextmanager
        async def connect(_config: AgentConfig) -> AsyncIterator[Transport]:
            times.append(trio.current_time())
            if len(times) >= count:
                got_all.set()
            failure = failures[min(len(times), len(failures)) - 1]
            if failure is not None:
                raise failure
            transport, relay = memory_transport_pair()
            nursery.start_soon(relay_side, relay)
            yield transport

        daemon = Daemon(
            config, backend, ModelCatalog(("m",)), BackoffTracker(backoff), connect=connect
        )
        nursery.start_soon(daemon.run)
        await got_all.wait()
        nursery.cancel_scope.cancel()
    return [round(b - a, 3) for a, b in itertools.pairwise(times)]


async def test_normal_failures_back_off_1_to_30_s(autojump_clock: trio.testing.MockClock) -> None:
    gaps = await _attempt_times([RelayUnreachable("refused")], 8, Backoff(jitter=0))
    assert gaps == [1, 2, 4, 8, 16, 30, 30]


async def test_auth_refusals_cool_down_10_to_60_s(autojump_clock: trio.testing.MockClock) -> None:
    gaps = await _attempt_times([AuthRefused("401", status_code=401)], 6, Backoff(jitter=0))
    assert gaps == [10, 20, 40, 60, 60]


async def test_retry_after_is_honoured(autojump_clock: trio.testing.MockClock) -> None:
    refusal = AuthRefused("429", status_code=429, retry_after=45)
    gaps = await _attempt_times([refusal], 3, Backoff(jitter=0))
    assert gaps == [45, 45]


async def test_a_registered_session_resets_the_ladder(
    autojump_clock: trio.testing.MockClock,
) -> None:
    down = RelayUnreachable("refused")
    # Three failures (1, 2, 4), a session that registers then drops, then failures again.
    gaps = await _attempt_times([down, down, down, None, down, down], 7, Backoff(jitter=0))
    assert gaps == [1, 2, 4, 1, 2, 4]


async def test_jitter_shortens_delays_within_bounds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gaps = await _attempt_times([RelayUnreachable("x")], 6, Backoff(jitter=0.5))
    for gap, step in zip(gaps, [1, 2, 4, 8, 16], strict=True):
        assert step * 0.5 <= gap <= step


# --- real sockets ------------------------------------------------------------------------


async def test_relay_close_makes_the_agent_reconnect(
    nursery: trio.Nursery,
    fake_relay: FakeRelay,
    fake_backend: FakeBackend,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(10):
        daemon = await start_agent(nursery, fake_relay, fake_backend.url)
        first = await fake_relay.next_connection()
        await first.register(worker_id="w-1")
        await first.close(1011, "relay restarting")
        second = await fake_relay.next_connection()
        register = await second.register(worker_id="w-2")
        session = await daemon.wait_registered()
    assert register.models == ("fake-model",)
    assert session.worker_id == "w-2"
    assert first.headers["x-worker-secret"] == SECRET
    assert first.path == "/v1/worker/connect?provider=local"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("disconnected from the relay" in r.getMessage() for r in warnings)


async def test_refused_secret_logs_an_error_and_recovers(
    nursery: trio.Nursery,
    fake_relay: FakeRelay,
    fake_backend: FakeBackend,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_relay.reject_status = 401
    with trio.fail_after(10):
        await start_agent(nursery, fake_relay, fake_backend.url)
        while fake_relay.attempts < 2:
            await fake_relay.attempt_event.wait()
        fake_relay.reject_status = None  # the operator fixed the relay's secret
        conn = await fake_relay.next_connection()
        await conn.register()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors
    assert all("refused the worker secret" in r.getMessage() for r in errors)
    assert SECRET not in caplog.text


async def test_graceful_shutdown_drains_then_reconnects(
    nursery: trio.Nursery, fake_relay: FakeRelay, fake_backend: FakeBackend
) -> None:
    with trio.fail_after(10):
        await start_agent(nursery, fake_relay, fake_backend.url)
        conn = await fake_relay.next_connection()
        await conn.register()
        await conn.send(chat("r1", stream=True, fake={"chunks": 4, "delay": 0.05}))
        assert isinstance(await conn.receive(), ResponseChunk)
        await conn.send(GracefulShutdown(reason="upgrade", drain_timeout_secs=5))
        await conn.send(chat("r2"))
        frames, code = await frames_until_closed(conn)
        again = await fake_relay.next_connection()
        await again.register()
    update = frames.index(ModelsUpdate(models=(), current_load=1, draining=True))
    completes = {f.request_id: f for f in frames if isinstance(f, ResponseComplete)}
    assert frames.index(completes["r2"]) == update + 1  # the relay hears of the drain first
    assert completes["r2"].status_code == 503
    assert completes["r1"].status_code == 200
    assert isinstance(frames[-1], ResponseComplete)
    assert code == 1000
    assert fake_backend.requests[-1].finished_at is not None


async def test_stop_drains_in_flight_work_then_run_agent_returns(
    nursery: trio.Nursery, fake_relay: FakeRelay, fake_backend: FakeBackend
) -> None:
    returned = trio.Event()
    config = fast_config(fake_relay.url, fake_backend.url)

    async def run(task_status: trio.TaskStatus[Daemon]) -> None:
        await run_agent(config, handle_signals=False, task_status=task_status)
        returned.set()

    with trio.fail_after(10):
        daemon: Daemon = await nursery.start(run)
        conn = await fake_relay.next_connection()
        await conn.register(capabilities=None)  # a v1 relay: no draining flag
        await conn.send(chat("r1", stream=True, fake={"chunks": 3, "delay": 0.05}))
        assert isinstance(await conn.receive(), ResponseChunk)
        daemon.stop()
        frames, code = await frames_until_closed(conn)
        await returned.wait()
    assert ModelsUpdate(models=(), current_load=1) in frames
    assert isinstance(frames[-1], ResponseComplete)
    assert frames[-1].status_code == 200
    assert code == 1000
    assert fake_relay.attempts == 1


# --- the real process, real signals ------------------------------------------------------


def _agent_command(relay: FakeRelay, backend: FakeBackend) -> list[str]:
    return [
        sys.executable,
        "-m",
        "agent",
        "run",
        "--proxy-url",
        relay.url.replace("ws://", "http://"),
        "--backend-url",
        backend.url or "",
        "--models",
        "fake-model",
        "--log-format",
        "json",
        "--drain-timeout",
        "10",
    ]


async def test_sigterm_drains_and_exits_0(
    nursery: trio.Nursery, fake_relay: FakeRelay, fake_backend: FakeBackend, tmp_path: Path
) -> None:
    log_path = tmp_path / "agent.log"
    with trio.fail_after(30), log_path.open("wb") as log_file:
        proc: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                _agent_command(fake_relay, fake_backend),
                check=False,
                cwd=REPO,
                stderr=log_file,
                env={"WORKER_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
            )
        )
        conn = await fake_relay.next_connection()
        await conn.register()
        await conn.send(chat("r1", stream=True, fake={"chunks": 4, "delay": 0.1}))
        assert isinstance(await conn.receive(), ResponseChunk)
        proc.send_signal(signal.SIGTERM)
        frames, code = await frames_until_closed(conn)
        assert await proc.wait() == 0
    assert ModelsUpdate(models=(), current_load=1, draining=True) in frames
    done = frames[-1]
    assert isinstance(done, ResponseComplete)
    assert done.status_code == 200
    assert code == 1000
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    events = [line["event"] for line in lines]
    assert "registered" in events
    assert any("SIGTERM received" in e for e in events)
    finished = [line for line in lines if line["event"] == "request finished"]
    assert finished[0]["request_id"] == "r1"
    assert finished[0]["status"] == 200
    assert SECRET not in log_path.read_text()


async def test_second_signal_exits_at_once(
    nursery: trio.Nursery, fake_relay: FakeRelay, fake_backend: FakeBackend, tmp_path: Path
) -> None:
    log_path = tmp_path / "agent.log"
    with trio.fail_after(30), log_path.open("wb") as log_file:
        proc: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                _agent_command(fake_relay, fake_backend),
                check=False,
                cwd=REPO,
                stderr=log_file,
                env={"WORKER_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
            )
        )
        conn = await fake_relay.next_connection()
        await conn.register()
        await conn.send(chat("r1", stream=True, fake={"stall_after": 1}))
        assert isinstance(await conn.receive(), ResponseChunk)
        proc.send_signal(signal.SIGTERM)
        while not isinstance(await conn.receive(), ModelsUpdate):
            pass  # the chunks sent before the stall
        proc.send_signal(signal.SIGINT)
        assert await proc.wait() == 0
        await fake_backend.requests[-1].done.wait()
    assert fake_backend.requests[-1].disconnected_at is not None
    assert "exiting now" in log_path.read_text()


async def test_register_over_real_socket_carries_version_and_capabilities(
    nursery: trio.Nursery, fake_relay: FakeRelay, fake_backend: FakeBackend
) -> None:
    with trio.fail_after(10):
        await start_agent(nursery, fake_relay, fake_backend.url, max_concurrency=4)
        conn = await fake_relay.next_connection()
        register = await conn.register()
    assert register.protocol_version == PROTOCOL_VERSION
    assert register.capabilities == (CAPABILITY_DRAIN, CAPABILITY_CACHE_TOKENS, CAPABILITY_FLEET)
    assert register.max_concurrent == 4
    assert register.current_load == 0
    assert register.worker_name == "test-box"


async def test_sigterm_while_the_relay_is_unreachable_exits_at_once(
    nursery: trio.Nursery, fake_backend: FakeBackend
) -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable, "-m", "agent", "run",
        "--proxy-url", f"http://127.0.0.1:{port}",
        "--backend-url", fake_backend.url,
        "--models", "m",
    ]  # fmt: skip
    with trio.fail_after(30):
        proc: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                command,
                check=False,
                cwd=REPO,
                stderr=-1,  # subprocess.PIPE
                env={"WORKER_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
            )
        )
        assert proc.stderr is not None
        seen = b""
        while b"cannot connect to the relay" not in seen:
            data = await proc.stderr.receive_some()
            assert data, seen
            seen += data
        proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0
    assert b"reconnecting in" in seen
