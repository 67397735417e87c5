"""`/v1/worker/connect`: who may connect (`WorkerSocket.judge`), and the session after.

Every frame a worker streams crosses this socket. On the builtin front
(`relay.front.websocket`) the socket itself is the hub's `Transport`: the
front asks `judge`, answers a refusal or the upgrade, and calls `serve` with
its exchange; no ASGI message, task or channel sits between the socket and
the hub's reader. Under Hypercorn (``--http-front hypercorn``) the same
steps run as a raw ASGI websocket app (`WorkerSocket.__call__`, with
`AsgiTransport` adapting ASGI messages to the `Transport`); Quart's
websocket wrapper (a receiving task, a channel and a request context) cost
7-15 % of the relay's CPU per streamed event, so it is not used for this path.

Refusing before the upgrade sends a real HTTP status, which tells an agent
more than a close frame: 401 for a bad or missing secret, 404 for an unknown
provider, 429 with `Retry-After` once an IP has failed too often, 503 with
`Retry-After` while the relay drains. Under ASGI the status goes out through
the "websocket.http.response" extension (Hypercorn has it); a server without
it gets a `websocket.close` with 1008 instead, which refuses the upgrade
with a 403. The frame-size bound is the front's (`--max-frame-bytes`, close 1009).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import attrs
import trio

from mrcommon import closecodes
from relay.auth import WorkerAuth
from relay.proxies import client_of
from relay.worker_hub import TransportClosed

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from relay.asgi import Receive, Scope, Send
    from relay.core import Relay
    from relay.worker_hub import Transport

__all__ = ["WORKER_PATH", "AsgiTransport", "Refusal", "WorkerSocket"]

log = logging.getLogger("relay.worker_socket")

WORKER_PATH = "/v1/worker/connect"

_MAX_CLOSE_REASON = 123  # bytes: a close frame's payload is at most 125


class AsgiTransport:
    """The hub's `Transport` over one accepted ASGI websocket (the Hypercorn front only).

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
        # (Hypercorn reports a close for broken framing as any other, 1006:
        # only the builtin front can count it as the worker's protocol error.)
        self.gone = True
        raise TransportClosed

    async def aclose(self, code: int, reason: str) -> None:
        if self.gone or self.closed:
            return
        # Set first: Hypercorn moves to CLOSED before its first await, so a
        # close cancelled mid-send has still happened as far as it knows.
        self.closed = True
        await self._send({"type": "websocket.close", "code": code, "reason": reason})


@attrs.frozen
class Refusal:
    """Why an upgrade is refused: the HTTP status and JSON body the agent gets."""

    status: int
    message: str
    retry_after: int | None = None

    def body(self) -> bytes:
        return json.dumps({"error": {"message": self.message, "code": self.status}}).encode()

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", b"application/json")]
        if self.retry_after is not None:
            headers.append((b"retry-after", str(self.retry_after).encode()))
        return headers


class WorkerSocket:
    """The worker socket's policy and session; owns the per-IP worker-auth limiter.

    Called as an ASGI app under Hypercorn; the builtin front calls `judge`
    and `serve` itself.
    """

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
        peer = peer_host(scope.get("client"))
        refusal = self.judge(scope["headers"], scope.get("query_string", b""), peer)
        if refusal is not None:
            await _refuse(scope, send, refusal)
            return
        await send({"type": "websocket.accept"})
        await self.serve(AsgiTransport(receive, send), peer)

    def peer_of(self, headers: Iterable[tuple[bytes, bytes]], socket_peer: str) -> str:
        """The worker's real address: `socket_peer`, or what a trusted proxy forwards.

        The builtin front asks this before `judge`, so the per-address auth
        limit counts the agent behind nginx, not nginx (`--trusted-proxies`).
        Under Hypercorn, `relay.proxies.ClientApp` has rewritten the scope already.
        """
        trusted = self.relay.config.trusted_proxies
        if not trusted:
            return socket_peer
        address, _scheme = client_of({"client": (socket_peer, 0), "headers": headers}, trusted)
        return address or socket_peer

    async def serve(self, transport: Transport, peer: str) -> None:
        """Run an accepted worker's session on `transport` until it ends, then close it."""
        try:
            await self.relay.hub.run_session(transport, peer)
        except Exception:
            # A bug, not the worker's fault: one traceback in our log and a
            # 1011 to this worker; the session's `finally` has detached it.
            log.exception("internal error in a worker session", extra={"peer": peer})
            code, reason = closecodes.INTERNAL_ERROR, "internal relay error"
        else:
            code, reason = closecodes.NORMAL, ""
        # run_session closes for every reason it ends on its own, and a
        # close after the worker left is a no-op; this covers the rest.
        with trio.move_on_after(2):
            await transport.aclose(code, reason)

    def judge(
        self, headers: Iterable[tuple[bytes, bytes]], raw_query: bytes, peer: str
    ) -> Refusal | None:
        """Authenticate an upgrade from `peer` (a host); None to accept it."""
        # Blank values kept, as werkzeug's `args` did: `?provider=` is a 404, not "local".
        query = parse_qs(raw_query.decode("utf-8", "surrogateescape"), keep_blank_values=True)
        secret = _header(headers, b"x-worker-secret")
        if secret is None:
            secret = _first(query, "worker_secret")  # legacy fallback
        verdict = self.auth.check(peer, secret, trio.current_time())
        if verdict.status == 429:
            if verdict.report:  # once per address and window; the rest are collapsed
                log.warning(
                    "worker auth rate limited",
                    extra={"peer": peer, "failures": verdict.failures},
                )
            return Refusal(
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
            return Refusal(401, "worker authentication failed: the worker secret is wrong")
        provider = _first(query, "provider")
        if provider is None:
            provider = "local"
        if provider != self.relay.config.provider:
            served = self.relay.config.provider
            return Refusal(404, f"unknown provider {provider[:64]!r}; this relay serves {served!r}")
        if self.relay.hub.draining:
            return Refusal(503, "the relay is shutting down", retry_after=5)
        return None


def peer_host(client: Sequence[object] | None) -> str:
    """What Quart's `websocket.remote_addr` was: the host of ASGI's ``client``, never the port."""
    return str((client or ["<local>"])[0] or "unknown")


async def _refuse(scope: Scope, send: Send, refusal: Refusal) -> None:
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        cut = refusal.message.encode("utf-8", "replace")[:_MAX_CLOSE_REASON]
        reason = cut.decode("utf-8", "ignore")
        await send(
            {"type": "websocket.close", "code": closecodes.POLICY_VIOLATION, "reason": reason}
        )
        return
    body = refusal.body()
    headers = [*refusal.headers(), (b"content-length", str(len(body)).encode())]
    await send(
        {"type": "websocket.http.response.start", "status": refusal.status, "headers": headers}
    )
    await send({"type": "websocket.http.response.body", "body": body})


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The first value of header `name` (lower case), decoded as Quart did (latin-1)."""
    for key, value in headers:
        if key.lower() == name:
            text: str = value.decode("latin-1")
            return text
    return None


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None
