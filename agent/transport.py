"""The connection to the relay: a small `Transport` protocol and its WebSocket adapter.

The session depends only on `Transport` (send a text frame, receive a frame,
close with a code), so its logic runs in tests over memory channels. The
adapter maps trio-websocket's exceptions to `agent.errors.SessionError`
subclasses, and classifies the relay's refusals:

- HTTP 401, 403 or 429 on the upgrade, or a close with code 1008 whose
  reason mentions "authentication" (an upstream relay) → `AuthRefused`;
- a close with code 1002 whose reason mentions a version → `VersionRejected`;
- any other close → `RelayClosed`; any other failure to connect → `RelayUnreachable`.
"""

import email.utils
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

import attrs
import trio_websocket

from agent.config import AgentConfig
from agent.errors import (
    AuthRefused,
    RelayClosed,
    RelayUnreachable,
    SessionError,
    VersionRejected,
)
from wire import DEFAULT_MAX_RECEIVE_FRAME_BYTES

__all__ = ["Transport", "WebSocketTransport", "closed_error", "open_relay_transport"]

_AUTH_STATUSES = frozenset({401, 403, 429})
_RECEIVE_BUFFER = 64 * 1024


class Transport(Protocol):
    """One message-oriented connection to the relay.

    Implementations raise `agent.errors.SessionError` subclasses (never their
    library's own exceptions) once the connection is gone.
    """

    async def send(self, message: str) -> None:
        """Send one text frame."""

    async def receive(self) -> str | bytes:
        """Receive the next frame (bytes for a binary frame, which the codec refuses)."""

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
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
    if code == 1008 and "authentication" in text.lower():
        return AuthRefused(f"the relay refused the worker secret (close 1008: {text})")
    if code == 1002 and "version" in text.lower():
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

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close with `code` and `reason` (the reason is cut to the 123 bytes a close allows)."""
        short = reason.encode("utf-8")[:123].decode("utf-8", errors="ignore")
        await self._ws.aclose(code, short or None)

    @staticmethod
    def _closed(exc: trio_websocket.ConnectionClosed) -> SessionError:
        if exc.reason is None:
            return RelayClosed(1006, "connection lost")
        return closed_error(exc.reason.code, exc.reason.reason)


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
    headers = [(b"x-worker-secret", config.worker_secret.encode("utf-8"))]
    try:
        async with trio_websocket.open_websocket_url(
            config.ws_url,
            extra_headers=headers,
            max_message_size=DEFAULT_MAX_RECEIVE_FRAME_BYTES,
            receive_buffer_size=_RECEIVE_BUFFER,
            connect_timeout=config.timeouts.connect_secs,
            disconnect_timeout=config.timeouts.close_secs,
        ) as ws:
            yield WebSocketTransport(ws)
    except trio_websocket.ConnectionRejected as exc:
        raise _rejected(exc) from exc
    except trio_websocket.ConnectionTimeout as exc:
        raise RelayUnreachable(
            f"timed out after {config.timeouts.connect_secs:g} s opening the connection"
        ) from exc
    except trio_websocket.DisconnectionTimeout as exc:
        raise RelayClosed(1006, "the close handshake timed out") from exc
    except trio_websocket.HandshakeError as exc:
        cause = exc.__cause__ or exc
        raise RelayUnreachable(f"cannot connect: {cause}") from exc
    except OSError as exc:
        raise RelayUnreachable(f"cannot connect: {exc}") from exc
