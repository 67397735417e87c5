"""`create_app(relay)`: the relay's ASGI app, served by `relay.front`.

POST /v1/* goes straight to the raw-ASGI proxy (the hot path, see
`relay.http_api`), and the worker socket to `WorkerSocket` (every streamed
frame crosses it, see `relay.worker_socket`): the builtin front
(`relay.front`) calls both directly on its own sockets, Hypercorn
(``--http-front hypercorn``) through `RelayApp.__call__`. Everything else —
models, health, metrics, the admin API and, later, the dashboard — is a
Quart-Trio app, reached through `RelayApp.__call__` on either front. No
globals: every view closes over the `Relay` it was built with.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, has_request_context, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from relay import metrics
from relay.admin_api import admin_blueprint
from relay.console.blueprint import console_blueprint, console_off_blueprint
from relay.dialects import Dialect, error_body
from relay.errors import NotFound, RelayError, Unauthorized
from relay.http_api import Proxy
from relay.worker_socket import WORKER_PATH, WorkerSocket

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    from relay.asgi import Receive, Scope, Send
    from relay.core import Relay

__all__ = ["RelayApp", "create_app"]

log = logging.getLogger("relay.app")


class RelayApp:
    """Routes POST /v1/* to the proxy, the worker socket to its handler, the rest to Quart."""

    def __init__(self, relay: Relay, quart: QuartTrio) -> None:
        self.relay = relay
        self.quart = quart
        self.proxy = Proxy(relay)
        self.worker_socket = WorkerSocket(relay)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and scope["method"] == "POST" and path.startswith("/v1/"):
            # Served by Hypercorn (the builtin front calls proxy_request
            # itself, and closes an ambiguously framed request's connection).
            if _ambiguous_framing(scope):
                send = partial(_send_shielding_the_end, send, True)
            await self._guarded_proxy(scope, receive, send)
        elif scope["type"] == "websocket" and path == WORKER_PATH:
            await self.worker_socket(scope, receive, send)
        else:
            if scope["type"] == "http":
                send = partial(_send_shielding_the_end, send, _ambiguous_framing(scope))
            # Quart types the ASGI messages as TypedDicts; ours are plain mappings.
            await self.quart(scope, receive, send)  # type: ignore[arg-type]

    @property
    def proxy_request(self) -> Proxy:
        """POST /v1/* for the builtin front (relay.front), which answers a bug itself: the proxy.

        The front knows whether a response has started, so the hot path needs
        no wrapped ``send`` to find out, nor a layer of its own; Hypercorn's
        path goes through `_guarded_proxy`.
        """
        return self.proxy

    async def _guarded_proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /v1/* under Hypercorn: the proxy, with a bug answered as a plain 500."""
        started = False

        async def tracking_send(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.proxy(scope, receive, tracking_send)
        except Exception:
            # A bug, not a client's fault: one traceback in our log, a plain
            # 500 to the client, and every other request goes on.
            log.exception("internal error in the proxy", extra={"path": scope["path"]})
            if not started:
                body = error_body(
                    Dialect.for_path(scope["path"]),
                    RelayError("internal relay error; see the relay's log"),
                )
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})


# How long the end of a response served by Quart may take to go out and close.
_END_GRACE = 5.0


def _ambiguous_framing(scope: Scope) -> bool:
    """The request carries both ``Content-Length`` and ``Transfer-Encoding``.

    RFC 9112 §6.1: such a message may be a smuggling attempt; the server
    answers it and then closes the connection, so nothing else is read from it.
    """
    names = {name.lower() for name, _ in scope.get("headers", ())}
    return b"content-length" in names and b"transfer-encoding" in names


async def _send_shielding_the_end(
    send: Send, close: bool, message: MutableMapping[str, Any]
) -> None:
    """The server's `send`, with the response's last piece safe from Quart-Trio's cancel.

    Hypercorn does all that ends a response from inside the app's last
    `send`: it writes the end, tells the app ``http.disconnect``, and then
    closes the connection (``Connection: close``, HTTP/1.0) or arms its
    keep-alive timer. Quart-Trio cancels the request's nursery as soon as
    it sees that disconnect, which cut the close (or the timer) short: the
    connection then stayed open for as long as the client liked. Shielded,
    the end completes, within `_END_GRACE` seconds.

    With `close`, the response says ``Connection: close``, which makes the
    server close the connection after it.
    """
    if close and message["type"] == "http.response.start":
        message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
    if message["type"] != "http.response.body" or message.get("more_body", False):
        await send(message)
        return
    with trio.CancelScope(shield=True, deadline=trio.current_time() + _END_GRACE):
        await send(message)


def _json(doc: object, status: int = 200) -> Response:
    return Response(json.dumps(doc), status=status, content_type="application/json")


def create_app(relay: Relay) -> RelayApp:
    quart = QuartTrio("relay")
    # Quart's own timeouts would cut long streams and slow uploads short
    # (STACK-NOTES trap 1); the relay enforces its own with cancel scopes.
    quart.config["RESPONSE_TIMEOUT"] = None
    quart.config["BODY_TIMEOUT"] = None
    quart.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    quart.register_blueprint(admin_blueprint(relay))
    if relay.config.console_enabled:
        quart.register_blueprint(console_blueprint(relay))
    else:
        quart.register_blueprint(console_off_blueprint(relay))

    @quart.get("/v1/models")
    async def models() -> Response:
        if relay.config.require_api_keys:
            # Listing models is inference-side too: the same key as a request.
            try:
                relay.client_auth.check_key(request.headers.items())
            except Unauthorized as exc:
                return Response(
                    error_body(Dialect.OPENAI, exc), status=401, content_type="application/json"
                )
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": relay.config.provider}
            for m in relay.hub.served_models()
        ]
        return _json({"object": "list", "data": data})

    @quart.get("/health")
    async def health() -> Response:
        # Workers whose model server fails: why, by worker id (never an address).
        unhealthy = [
            {
                "id": w.id,
                "reason": w.unhealthy or "failing before a first byte",
                "ejected": w.ejected,
            }
            for w in relay.hub.statistics().workers
            if w.unhealthy is not None or w.ejected
        ]
        # 503 from the first moment of a drain: a balancer's health check
        # takes the relay out of rotation while its listener still serves
        # what it has in flight (docs/operations.md, "Several relays").
        leaving = relay.leaving or relay.hub.draining
        status = "draining" if leaving else "degraded" if unhealthy else "ok"
        return _json(
            {
                "status": status,
                "version": relay.version,
                "workers_connected": len(relay.hub.workers),
                "workers_unhealthy": unhealthy,
                "queue_depth": len(relay.hub.queue),
                "uptime_secs": int(trio.current_time() - relay.started_at),
            },
            503 if leaving else 200,
        )

    scrapes = trio.CapacityLimiter(1)

    @quart.get("/metrics")
    async def prometheus_metrics() -> Response:
        # Built from the relay's counters on demand (no auth: behavior.md).
        body = await metrics.scrape(relay.registry, scrapes)
        return Response(body, content_type=metrics.CONTENT_TYPE)

    @quart.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        # A websocket upgrade to an unknown path has no request context.
        method, path = (
            (request.method, request.path) if has_request_context() else ("GET", websocket.path)
        )
        error = NotFound(
            f"{method} {path} is not a route of this relay"
            if exc.code == 404
            else f"{exc.name}: {exc.description}"
        )
        error.status = exc.code or 500
        return Response(
            error_body(Dialect.for_path(path), error),
            status=error.status,
            content_type="application/json",
        )

    return RelayApp(relay, quart)
