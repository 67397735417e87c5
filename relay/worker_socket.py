"""`/v1/worker/connect`: authenticate before the upgrade, then hand off to the hub.

A raw ASGI websocket handler, like the proxy: every frame a worker streams
crosses this socket, and Quart's websocket wrapper (a receiving task, a
channel and a request context between the server and the hub) cost 7-15 % of
the relay's CPU per streamed event. The server is the relay's own front
(`relay.front`): `relay.wsframes` on the socket, no task or channel between the
socket and the hub's reader.

Refusing before `websocket.accept` sends a real HTTP status, which tells an
agent more than a close frame: 401 for a bad or missing secret, 404 for an
unknown provider, 429 with `Retry-After` once an IP has failed too often, 503
with `Retry-After` while the relay drains. The status goes out through the
ASGI "websocket.http.response" extension (Hypercorn has it); a server without
it gets a `websocket.close` with 1008 instead, which refuses the upgrade with
a 403. The frame-size bound is the front's (`--max-frame-bytes`, close 1009).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import attrs
import trio

import wire
from relay.auth import WorkerAuth
from relay.worker_hub import TransportClosed

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    from relay.core import Relay

    Scope = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
    Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

__all__ = ["FRAMING_ERROR", "WORKER_PATH", "AsgiTransport", "WorkerSocket"]

log = logging.getLogger("relay.worker_socket")

WORKER_PATH = "/v1/worker/connect"

FRAMING_ERROR = "modelrelay.framing_error"
"""Key of a ``websocket.disconnect`` message from the relay's front: the reason
the front closed the socket for a frame that broke RFC 6455 (or the size
bound). The session counts it as the worker's protocol error, like a frame
the wire protocol cannot decode."""

_CLOSE_NORMAL = 1000
_CLOSE_POLICY = 1008
_CLOSE_INTERNAL = 1011
_MAX_CLOSE_REASON = 123  # bytes: a close frame's payload is at most 125


class AsgiTransport:
    """The hub's `Transport` over one accepted ASGI websocket.

    Owns what the connection's two ends have said: whether the peer has gone
    (`websocket.disconnect` arrived) and whether we have closed. Hypercorn
    ignores a message sent after the peer left but raises on a send after our
    own close, so sends check both, and a close after either is a no-op.
    """

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.gone = False
        self.closed = False

    async def send(self, text: str) -> None:
        if self.gone or self.closed:
            raise TransportClosed
        await self._send({"type": "websocket.send", "text": text})

    async def receive(self) -> str | bytes:
        if self.gone:
            # Nothing follows a disconnect: another receive() would wait forever.
            raise TransportClosed
        message = await self._receive()
        if message["type"] == "websocket.receive":
            text: str | None = message.get("text")
            if text is not None:
                return text
            data: bytes | None = message.get("bytes")
            return b"" if data is None else data
        # websocket.disconnect, the only other message ASGI defines after accept.
        self.gone = True
        framing = message.get(FRAMING_ERROR)
        if framing is not None:
            raise wire.ProtocolError(f"framing: {framing}")
        raise TransportClosed

    async def aclose(self, code: int, reason: str) -> None:
        if self.gone or self.closed:
            return
        # Set first: Hypercorn moves to CLOSED before its first await, so a
        # close cancelled mid-send has still happened as far as it knows.
        self.closed = True
        await self._send({"type": "websocket.close", "code": code, "reason": reason})


@attrs.frozen
class _Refusal:
    status: int
    message: str
    retry_after: int | None = None


class WorkerSocket:
    """ASGI app for the worker socket; owns the per-IP worker-auth limiter."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.auth = WorkerAuth(
            relay.config.worker_secret.encode("utf-8", "surrogateescape"),
            limit=relay.config.auth_failure_limit,
            window=relay.config.auth_failure_window,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return  # gone before the handshake reached us
        # What Quart's `websocket.remote_addr` was: the host, never the port.
        peer: str = (scope.get("client") or ["<local>"])[0] or "unknown"
        refusal = self._judge(scope, peer)
        if refusal is not None:
            await _refuse(scope, send, refusal)
            return
        await send({"type": "websocket.accept"})
        transport = AsgiTransport(receive, send)
        try:
            await self.relay.hub.run_session(transport, peer)
        except Exception:
            # A bug, not the worker's fault: one traceback in our log and a
            # 1011 to this worker; the session's `finally` has detached it.
            log.exception("internal error in a worker session", extra={"peer": peer})
            code, reason = _CLOSE_INTERNAL, "internal relay error"
        else:
            code, reason = _CLOSE_NORMAL, ""
        # run_session closes for every reason it ends on its own, and a
        # close after the worker left is a no-op; this covers the rest.
        with trio.move_on_after(2):
            await transport.aclose(code, reason)

    def _judge(self, scope: Scope, peer: str) -> _Refusal | None:
        """Authenticate an upgrade; None to accept it."""
        # Blank values kept, as werkzeug's `args` did: `?provider=` is a 404, not "local".
        raw_query: bytes = scope.get("query_string", b"")
        query = parse_qs(raw_query.decode("utf-8", "surrogateescape"), keep_blank_values=True)
        secret = _header(scope, b"x-worker-secret")
        if secret is None:
            secret = _first(query, "worker_secret")  # legacy fallback
        verdict = self.auth.check(peer, secret, trio.current_time())
        if verdict.status == 429:
            if verdict.report:  # once per address and window; the rest are collapsed
                log.warning(
                    "worker auth rate limited",
                    extra={"peer": peer, "failures": verdict.failures},
                )
            return _Refusal(
                429,
                "too many failed worker authentications from this address; retry later",
                verdict.retry_after,
            )
        if verdict.status != 200:
            if verdict.report:  # the first failure from this address in the window
                log.warning(
                    "worker auth failed",
                    extra={
                        "peer": peer,
                        "reason": "missing secret" if secret is None else "bad secret",
                    },
                )
            return _Refusal(401, "worker authentication failed: the worker secret is wrong")
        provider = _first(query, "provider")
        if provider is None:
            provider = "local"
        if provider != self.relay.config.provider:
            served = self.relay.config.provider
            return _Refusal(
                404, f"unknown provider {provider[:64]!r}; this relay serves {served!r}"
            )
        if self.relay.hub.draining:
            return _Refusal(503, "the relay is shutting down", retry_after=5)
        return None


async def _refuse(scope: Scope, send: Send, refusal: _Refusal) -> None:
    body = json.dumps({"error": {"message": refusal.message, "code": refusal.status}}).encode()
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        cut = refusal.message.encode("utf-8", "replace")[:_MAX_CLOSE_REASON]
        reason = cut.decode("utf-8", "ignore")
        await send({"type": "websocket.close", "code": _CLOSE_POLICY, "reason": reason})
        return
    headers = [(b"content-type", b"application/json")]
    if refusal.retry_after is not None:
        headers.append((b"retry-after", str(refusal.retry_after).encode()))
    headers.append((b"content-length", str(len(body)).encode()))
    await send(
        {"type": "websocket.http.response.start", "status": refusal.status, "headers": headers}
    )
    await send({"type": "websocket.http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lower case), decoded as Quart did (latin-1)."""
    for key, value in scope["headers"]:
        if key.lower() == name:
            text: str = value.decode("latin-1")
            return text
    return None


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None
