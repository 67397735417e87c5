"""Classifying the relay's refusals, over real sockets where they matter."""

import ast
import os
import shutil
import ssl
import subprocess
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
import trio_websocket

import agent
from agent.errors import AuthRefused, RelayClosed, RelayUnreachable, VersionRejected
from agent.transport import _DIRECT_READS, _DirectStream, closed_error, open_relay_transport
from mrcommon.sockio import DIRECT_IO
from tests.agent.fakes import fast_config


@pytest.mark.parametrize(
    ("code", "reason", "kind"),
    [
        (1008, "worker authentication failed", AuthRefused),
        (1008, "Authentication temporarily rate limited", AuthRefused),
        (1008, "policy violation", RelayClosed),
        (1002, "protocol version mismatch: peer speaks 'x', we speak 'y'", VersionRejected),
        (1002, "frame is not valid JSON", RelayClosed),
        (1000, "", RelayClosed),
    ],
)
def test_close_classification(code: int, reason: str, kind: type[Exception]) -> None:
    error = closed_error(code, reason)
    assert type(error) is kind


async def _rejecting_server(
    nursery: trio.Nursery, status: int, headers: list[tuple[bytes, bytes]] | None = None
) -> str:
    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        await request.reject(status, extra_headers=headers, body=b"no")

    server = await nursery.start(
        partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
    )
    return f"http://127.0.0.1:{server.port}"


@pytest.mark.parametrize(
    ("status", "headers", "kind", "retry_after"),
    [
        (401, None, AuthRefused, None),
        (403, None, AuthRefused, None),
        (429, [(b"Retry-After", b"42")], AuthRefused, 42.0),
        (404, None, RelayUnreachable, None),
        (503, None, RelayUnreachable, None),
    ],
)
async def test_rejected_upgrade(
    nursery: trio.Nursery,
    status: int,
    headers: list[tuple[bytes, bytes]] | None,
    kind: type[Exception],
    retry_after: float | None,
) -> None:
    url = await _rejecting_server(nursery, status, headers)
    config = fast_config(url, "http://127.0.0.1:1")
    with trio.fail_after(5), pytest.raises(kind) as info:
        async with open_relay_transport(config):
            raise AssertionError("the upgrade should have been refused")
    assert f"HTTP {status}" in str(info.value)
    assert config.worker_secret not in str(info.value)
    if isinstance(info.value, AuthRefused):
        assert info.value.status_code == status
        assert info.value.retry_after == retry_after


async def test_nobody_listening_is_unreachable() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = fast_config(f"http://127.0.0.1:{port}", "http://127.0.0.1:1")
    with trio.fail_after(5), pytest.raises(RelayUnreachable, match="cannot connect"):
        async with open_relay_transport(config):
            raise AssertionError("nobody listens there")


# --- TLS: wss:// to a real TLS WebSocket server ------------------------------


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by Debian's openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        reason = "openssl (Debian package openssl, `make deps-system`) is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: CI installs it", pytrace=False)
        pytest.skip(f"TLS TEST SKIPPED: {reason}")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def _tls_echo_server(nursery: trio.Nursery, cert: Path, key: Path) -> int:
    """A TLS WebSocket server that echoes each message with the secret it saw."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listeners = await trio.open_ssl_over_tcp_listeners(0, context, host="127.0.0.1")

    async def handle(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            async with trio.open_nursery() as connection:
                request = await trio_websocket.wrap_server_stream(
                    connection, stream, max_message_size=8 * 1024 * 1024
                )
                secret = dict(request.headers).get(b"x-worker-secret", b"").decode()
                ws = await request.accept()
                while True:
                    message = await ws.get_message()
                    await ws.send_message(f"{secret}:{message}")
        except* (trio.BrokenResourceError, trio_websocket.ConnectionClosed):
            pass  # the client refused our certificate, or left

    nursery.start_soon(trio.serve_listeners, handle, listeners)
    return int(listeners[0].transport_listener.socket.getsockname()[1])


async def test_wss_connects_over_verified_tls(
    nursery: trio.Nursery, self_signed: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed
    port = await _tls_echo_server(nursery, cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the system's trust, as OpenSSL reads it
    config = fast_config(f"https://127.0.0.1:{port}", "http://127.0.0.1:1")
    assert config.ws_url.startswith("wss://")
    big = "x" * (3 * 1024 * 1024)  # more than a socket buffer takes at once
    with trio.fail_after(10):
        async with open_relay_transport(config) as transport:
            await transport.send("hello")
            assert await transport.receive() == f"{config.worker_secret}:hello"
            await transport.send(big)
            assert await transport.receive() == f"{config.worker_secret}:{big}"


async def test_wss_refuses_a_certificate_nobody_trusts(
    nursery: trio.Nursery, self_signed: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed
    port = await _tls_echo_server(nursery, cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert.with_name("nothing.pem")))
    config = fast_config(f"https://127.0.0.1:{port}", "http://127.0.0.1:1")
    with trio.fail_after(10), pytest.raises(RelayUnreachable, match="certificate"):
        async with open_relay_transport(config):
            raise AssertionError("an untrusted certificate must not connect")


# --- the direct stream ---------------------------------------------------------


@pytest.mark.skipif(not DIRECT_IO, reason="no direct socket I/O on this platform")
async def test_direct_reads_still_yield_to_other_tasks() -> None:
    """Reads the kernel serves at once skip trio, but not forever: a peer that
    never pauses cannot keep the reader from checkpointing."""
    left, right = trio.socket.socketpair()
    with left, right:
        assert await right.send(b"x" * 4096) == 4096
        stream = _DirectStream(trio.SocketStream(left))
        for _ in range(2):
            for _ in range(_DIRECT_READS):
                with trio.testing.assert_no_checkpoints():
                    assert await stream.receive_some(64) == b"x" * 64
            with trio.testing.assert_checkpoints():
                assert await stream.receive_some(64) == b"x" * 64


async def test_direct_stream_reports_a_closed_peer_as_broken() -> None:
    left, right = trio.socket.socketpair()
    stream = _DirectStream(trio.SocketStream(left))
    right.close()
    assert await stream.receive_some(10) == b""
    with pytest.raises(trio.BrokenResourceError):
        await stream.send_all(b"y")
    await stream.aclose()
    with pytest.raises(trio.BrokenResourceError):  # EBADF, as a closed socket says
        await stream.receive_some(10)


# --- trio-websocket without its idle scheduler trips ---------------------------


async def _echo_server(
    nursery: trio.Nursery, closes: trio.MemorySendChannel[int | None] | None = None
) -> str:
    """A plain WebSocket server that echoes every message, and reports each
    connection's close code on `closes`."""

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except trio_websocket.ConnectionClosed as exc:
            if closes is not None:
                await closes.send(exc.reason.code if exc.reason else None)

    server = await nursery.start(
        partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
    )
    return f"http://127.0.0.1:{server.port}"


async def test_an_open_connection_echoes_and_closes_cleanly(nursery: trio.Nursery) -> None:
    """Over the direct stream, trio-websocket as it ships: frames both ways, then a
    clean close (1000) when the block ends."""
    closes_tx, closes_rx = trio.open_memory_channel[int | None](1)
    config = fast_config(await _echo_server(nursery, closes_tx), "http://127.0.0.1:1")
    with trio.fail_after(10):
        async with open_relay_transport(config) as transport:
            assert type(transport._ws) is trio_websocket.WebSocketConnection
            await transport.send("hello")
            assert await transport.receive() == "hello"
        assert await closes_rx.receive() == 1000


@pytest.mark.skipif(not DIRECT_IO, reason="no direct socket I/O on this platform")
async def test_concurrent_senders_still_send_whole_frames_in_order(
    nursery: trio.Nursery,
) -> None:
    """Big frames from several tasks at once: the lock is still taken in turn
    (the kernel refuses part of each, so senders wait on it), and every frame
    comes back whole and, per sender, in order."""
    config = fast_config(await _echo_server(nursery), "http://127.0.0.1:1")
    senders, per_sender, size = 4, 5, 300_000
    with trio.fail_after(20):
        async with open_relay_transport(config) as transport:

            async def send_all(k: int) -> None:
                for i in range(per_sender):
                    await transport.send(f"{k}:{i}:" + "x" * size)

            got: list[str] = []
            async with trio.open_nursery() as inner:
                for k in range(senders):
                    inner.start_soon(send_all, k)
                for _ in range(senders * per_sender):
                    message = await transport.receive()
                    assert isinstance(message, str)
                    got.append(message)
    by_sender: dict[int, list[int]] = {k: [] for k in range(senders)}
    for message in got:
        k, i, body = message.split(":", 2)
        assert body == "x" * size
        by_sender[int(k)].append(int(i))
    assert by_sender == {k: list(range(per_sender)) for k in range(senders)}


def test_the_agent_replaces_no_private_attribute() -> None:
    """No ``obj._name = ...`` (nor ``setattr(obj, "_name", ...)``) on anything but
    ``self`` in agent/: a dependency's internals are never swapped at run time."""
    offenders: list[str] = []
    for path in sorted(Path(agent.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                targets = [node.target]
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr.startswith("_")
                    and not (isinstance(target.value, ast.Name) and target.value.id == "self")
                ):
                    offenders.append(f"{path}:{node.lineno}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "setattr"
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
                and str(node.args[1].value).startswith("_")
            ):
                offenders.append(f"{path}:{node.lineno}")
    assert offenders == []
