"""The connection to the relay: a small `Transport` protocol and its WebSocket adapter.

The session depends only on `Transport` (send a text frame, receive a frame,
close with a code), so its logic runs in tests over memory channels. The
adapter maps trio-websocket's exceptions to `agent.errors.SessionError`
subclasses, and classifies the relay's refusals:

- HTTP 401, 403 or 429 on the upgrade, or a close with code 1008 whose
  reason mentions "authentication" (an upstream relay) → `AuthRefused`;
- a close with code 1002 whose reason mentions a version → `VersionRejected`;
- any other close → `RelayClosed`; any other failure to connect → `RelayUnreachable`.

trio-websocket runs the WebSocket (handshake, framing, close, its reader
task) over a stream this module opens: `_DirectStream`, a TCP stream whose
reads and writes skip trio's scheduler trip when the kernel can serve them
at once, wrapped in TLS for ``wss://``. It is handed over through
`trio_websocket.wrap_client_stream`, the library's documented entry point
for a stream the caller opened; `open_websocket_url` would open its own
plain `trio.SocketStream`. So `_open_websocket` does for our stream what
`open_websocket` does for its own: connect and close under deadlines, in a
nursery that holds the reader task. Nothing inside trio-websocket is
touched: its send lock and message queue cost a scheduler trip per frame
each, which this module accepts (it used to swap them for eager versions;
~7 % of the agent's CPU at one request at a time, nothing under load).
"""

import email.utils
import time
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol, cast

import attrs
import trio
import trio_websocket

from agent.config import AgentConfig
from agent.errors import (
    AuthRefused,
    RelayClosed,
    RelayUnreachable,
    SessionError,
    VersionRejected,
)
from agent.tls import relay_tls_context
from mrcommon import closecodes
from mrcommon.sockio import read_now, read_when_ready, send_all
from mrcommon.streams import SocketStreamWrapper
from wire import DEFAULT_MAX_RECEIVE_FRAME_BYTES

__all__ = ["Transport", "WebSocketTransport", "closed_error", "open_relay_transport"]

_AUTH_STATUSES = frozenset({401, 403, 429})
# A close frame's payload is at most 125 bytes, two of them the code.
_MAX_CLOSE_REASON = 123
_RECEIVE_BUFFER = 64 * 1024
# Reads served straight from the kernel in a row before one goes through
# trio (a checkpoint), so that a peer sending without pause cannot keep the
# reader from ever yielding.
_DIRECT_READS = 16


class Transport(Protocol):
    """One message-oriented connection to the relay.

    Implementations raise `agent.errors.SessionError` subclasses (never their
    library's own exceptions) once the connection is gone.
    """

    async def send(self, message: str) -> None:
        """Send one text frame."""

    async def receive(self) -> str | bytes:
        """Receive the next frame (bytes for a binary frame, which the codec refuses)."""

    async def aclose(self, code: int = closecodes.NORMAL, reason: str = "") -> None:
        """Close with `code` and `reason`; idempotent."""


def closed_error(code: int, reason: str | None) -> SessionError:
    """The session error a close from the relay means.

    Args:
        code: The WebSocket close code.
        reason: The close reason, if any.

    Returns:
        `AuthRefused`, `VersionRejected` or `RelayClosed`.
    """
    text = reason or ""
    if code == closecodes.POLICY_VIOLATION and "authentication" in text.lower():
        return AuthRefused(f"the relay refused the worker secret (close 1008: {text})")
    if code == closecodes.PROTOCOL_ERROR and "version" in text.lower():
        return VersionRejected(code, text)
    return RelayClosed(code, text)


def _retry_after(headers: tuple[tuple[bytes, bytes], ...]) -> float | None:
    for name, value in headers:
        if name.lower() != b"retry-after":
            continue
        text = value.decode("latin-1").strip()
        if text.isdigit():
            return float(text)
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
    return None


def _rejected(exc: trio_websocket.ConnectionRejected) -> SessionError:
    status = exc.status_code
    detail = (exc.body or b"").decode("utf-8", errors="replace").strip()[:200]
    suffix = f": {detail}" if detail else ""
    if status in _AUTH_STATUSES:
        return AuthRefused(
            f"the relay refused the worker secret (HTTP {status}{suffix})",
            status_code=status,
            retry_after=_retry_after(exc.headers) if status == 429 else None,
        )
    return RelayUnreachable(f"the relay refused the connection (HTTP {status}{suffix})", status)


@attrs.define(eq=False)
class WebSocketTransport:
    """Adapts one trio-websocket connection to `Transport`."""

    _ws: trio_websocket.WebSocketConnection

    async def send(self, message: str) -> None:
        """Send one text frame.

        Raises:
            SessionError: The connection is closed.
        """
        try:
            await self._ws.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            raise self._closed(exc) from exc

    async def receive(self) -> str | bytes:
        """Receive the next frame.

        Raises:
            SessionError: The connection is closed.
        """
        try:
            return await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise self._closed(exc) from exc

    async def aclose(self, code: int = closecodes.NORMAL, reason: str = "") -> None:
        """Close with `code` and `reason` (the reason is cut to the bytes a close frame allows)."""
        short = reason.encode("utf-8")[:_MAX_CLOSE_REASON].decode("utf-8", errors="ignore")
        await self._ws.aclose(code, short or None)

    @staticmethod
    def _closed(exc: trio_websocket.ConnectionClosed) -> SessionError:
        if exc.reason is None:
            return RelayClosed(closecodes.ABNORMAL, "connection lost")
        return closed_error(exc.reason.code, exc.reason.reason)


class _DirectStream(SocketStreamWrapper):
    """A TCP stream that skips trio's scheduler trip when the kernel can act at once.

    trio's `SocketStream` yields to the run loop after every send or receive
    that completed without waiting (a checkpoint: one more loop iteration).
    The agent sends one frame per answer and reads one per request, so that
    was a trip per frame on top of trio-websocket's own. `send_all` tries a
    direct write on the non-blocking descriptor and hands what the kernel
    refused to `SocketStream.send_all`; `receive_some` tries a direct read
    and otherwise waits for the socket and reads once (`mrcommon.sockio`).
    trio-websocket serialises its writers with a lock and reads from one
    task, which is what the direct calls need.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        super().__init__(stream)
        self._direct_reads = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await send_all(self._stream, data)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._direct_reads < _DIRECT_READS:
            data = read_now(self._stream, max_bytes or _RECEIVE_BUFFER)
            if data is not None:
                self._direct_reads += 1
                return data
        self._direct_reads = 0
        return await read_when_ready(self._stream, max_bytes or _RECEIVE_BUFFER)


def _endpoint(url: str) -> tuple[str, int, str, str, bool]:
    """``(host, port, Host header, resource, tls)`` of a ``ws://`` or ``wss://`` URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a WebSocket URL: {url!r}")
    tls = parts.scheme == "wss"
    default_port = 443 if tls else 80
    port = parts.port or default_port
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default_port else f"{shown}:{port}"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return host, port, host_header, resource, tls


async def _connect(
    nursery: trio.Nursery, config: AgentConfig, headers: list[tuple[bytes, bytes]]
) -> trio_websocket.WebSocketConnection:
    """Open TCP (and TLS), then the WebSocket handshake; its reader task runs in `nursery`."""
    host, port, host_header, resource, tls = _endpoint(config.ws_url)
    tcp = await trio.open_tcp_stream(host, port)
    stream: trio.abc.Stream = _DirectStream(tcp)
    try:
        if tls:
            stream = trio.SSLStream(
                stream,
                relay_tls_context(config.ca_file),  # system CAs + --ca-file
                server_hostname=host,
                https_compatible=True,
            )
            await stream.do_handshake()
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            # trio-websocket takes any trio stream; its annotation names the two it opens.
            cast("trio.SocketStream", stream),
            host_header,
            resource,
            extra_headers=headers,
            max_message_size=DEFAULT_MAX_RECEIVE_FRAME_BYTES,
            receive_buffer_size=_RECEIVE_BUFFER,
        )
    except BaseException:
        # Also on `ConnectionRejected`: trio-websocket leaves the socket open
        # then (STACK-NOTES trap 5).
        await trio.aclose_forcefully(stream)
        raise
    return ws


@asynccontextmanager
async def _open_websocket(config: AgentConfig) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """`trio_websocket.open_websocket_url`, over `_DirectStream`.

    Raises what that raises (`ConnectionRejected`, `ConnectionTimeout`,
    `DisconnectionTimeout`, `HandshakeError` around an `OSError`), and an
    exception from the block as itself, not inside an exception group.
    """
    headers = [(b"x-worker-secret", config.worker_secret.encode("utf-8"))]
    try:
        async with trio.open_nursery() as nursery:
            try:
                with trio.fail_after(config.timeouts.connect_secs):
                    ws = await _connect(nursery, config, headers)
            except trio.TooSlowError:
                raise trio_websocket.ConnectionTimeout from None
            except OSError as exc:
                raise trio_websocket.HandshakeError from exc
            except trio.BrokenResourceError as exc:  # TLS refused: its SSLError is the cause
                raise trio_websocket.HandshakeError from (exc.__cause__ or exc)
            try:
                yield ws
            finally:
                try:
                    with trio.fail_after(config.timeouts.close_secs):
                        await ws.aclose()
                except trio.TooSlowError:
                    raise trio_websocket.DisconnectionTimeout from None
    except BaseExceptionGroup as group:
        # The nursery holds trio-websocket's reader task, which ends quietly
        # once the connection is closed: what escapes is the block's own
        # exception (or a failure to connect or close). Unwrap it.
        inner = _sole_error(group)
        if inner is None:
            raise
        raise inner from inner.__cause__  # keeps its cause; the group is not its context


def _sole_error(group: BaseExceptionGroup) -> BaseException | None:
    """What `group` stands for: its one exception that is not `trio.Cancelled`, or
    its first `Cancelled` when that is all it holds; None when it holds several."""
    flat: list[BaseException] = []
    pending = list(group.exceptions)
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending[:0] = exc.exceptions
        else:
            flat.append(exc)
    errors = [exc for exc in flat if not isinstance(exc, trio.Cancelled)]
    if len(errors) == 1:
        return errors[0]
    if not errors and flat:
        return flat[0]
    return None


@asynccontextmanager
async def open_relay_transport(config: AgentConfig) -> AsyncIterator[WebSocketTransport]:
    """Open the WebSocket to the relay, presenting the worker secret in a header.

    Leaving the block closes the connection cleanly (code 1000) unless it was
    closed already.

    Args:
        config: Supplies the URL, the secret and the connect/close timeouts.

    Yields:
        The connection as a `Transport`.

    Raises:
        AuthRefused: The relay refused the secret (HTTP 401/403/429).
        RelayUnreachable: Anything else that kept the connection from opening.
    """
    try:
        async with _open_websocket(config) as ws:
            yield WebSocketTransport(ws)
    except trio_websocket.ConnectionRejected as exc:
        raise _rejected(exc) from exc
    except trio_websocket.ConnectionTimeout as exc:
        raise RelayUnreachable(
            f"timed out after {config.timeouts.connect_secs:g} s opening the connection"
        ) from exc
    except trio_websocket.DisconnectionTimeout as exc:
        raise RelayClosed(closecodes.ABNORMAL, "the close handshake timed out") from exc
    except trio_websocket.HandshakeError as exc:
        cause = exc.__cause__ or exc
        raise RelayUnreachable(f"cannot connect: {cause}") from exc
    except OSError as exc:
        raise RelayUnreachable(f"cannot connect: {exc}") from exc
