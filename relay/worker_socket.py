"""`/v1/worker/connect`: authenticate before the upgrade, then hand off to the hub.

Refusing before `accept()` sends a real HTTP status, which tells an agent
more than a close frame: 401 for a bad or missing secret, 404 for an unknown
provider, 429 with `Retry-After` once an IP has failed too often.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import trio
from quart import Blueprint, Response, websocket

from relay.auth import WorkerAuth
from relay.worker_hub import TransportClosed

if TYPE_CHECKING:
    from quart.wrappers import Websocket

    from relay.core import Relay

__all__ = ["QuartTransport", "worker_blueprint"]

log = logging.getLogger("relay.worker_socket")


class QuartTransport:
    """The hub's `Transport` over Quart's websocket object."""

    def __init__(self, ws: Websocket) -> None:
        self._ws = ws

    async def send(self, text: str) -> None:
        await self._ws.send(text)

    async def receive(self) -> str | bytes:
        try:
            return await self._ws.receive()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise TransportClosed from exc

    async def aclose(self, code: int, reason: str) -> None:
        await self._ws.close(code, reason)


def _refusal(status: int, message: str, retry_after: int | None = None) -> Response:
    headers = {"content-type": "application/json"}
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    body = json.dumps({"error": {"message": message, "code": status}})
    return Response(body, status=status, headers=headers)


def worker_blueprint(relay: Relay) -> Blueprint:
    bp = Blueprint("worker_socket", __name__)
    auth = WorkerAuth(
        relay.config.worker_secret.encode("utf-8", "surrogateescape"),
        limit=relay.config.auth_failure_limit,
        window=relay.config.auth_failure_window,
    )

    @bp.websocket("/v1/worker/connect")
    async def connect() -> Response | None:
        peer = websocket.remote_addr or "unknown"
        secret = websocket.headers.get("x-worker-secret")
        if secret is None:
            secret = websocket.args.get("worker_secret")  # legacy fallback
        verdict = auth.check(peer, secret, trio.current_time())
        if verdict.status == 429:
            log.warning("worker auth rate limited", extra={"peer": peer})
            return _refusal(
                429,
                "too many failed worker authentications from this address; retry later",
                verdict.retry_after,
            )
        if verdict.status != 200:
            log.warning(
                "worker auth failed",
                extra={
                    "peer": peer,
                    "reason": "missing secret" if secret is None else "bad secret",
                },
            )
            return _refusal(401, "worker authentication failed: the worker secret is wrong")
        provider = websocket.args.get("provider", "local")
        if provider != relay.config.provider:
            return _refusal(
                404, f"unknown provider {provider!r}; this relay serves {relay.config.provider!r}"
            )
        if relay.hub.draining:
            return _refusal(503, "the relay is shutting down", retry_after=5)
        await websocket.accept()
        await relay.hub.run_session(QuartTransport(websocket), peer)
        return None

    return bp
