"""Who the client really is: `--trusted-proxies`, and the client fields of request logs.

Behind nginx (contrib/nginx) every connection comes from 127.0.0.1. A proxy
the operator lists in `--trusted-proxies` is believed about the client it
forwards (`X-Forwarded-For`) and the scheme it was reached on
(`X-Forwarded-Proto`); any other peer's headers are ignored, so a client
cannot claim another address by sending the header itself. The rewritten ASGI
scope is what the rest of the relay sees: the worker-auth rate limit, the
admin-auth limit and the logs all use the real address.

`ClientApp` wraps the relay's app at its three entry points (the front calls
`proxy_request` and `worker_socket` directly, Hypercorn calls the app) to
rewrite the scope; with no trusted proxy, the front's `proxy_request` is the
app's own. The request's scope is bound in a context variable (`bind_request`:
by the proxy itself, and by `ClientApp` for the app's other requests), from
which `ClientLogFilter` adds the client's address and user agent to the
`relay.request` log lines. Both are worked out only when a line is written:
with no trusted proxy, a request pays one context-variable set for them.
"""

from __future__ import annotations

import contextvars
import ipaddress
import logging
from typing import TYPE_CHECKING, Any

from relay.trusted import TrustedProxies

if TYPE_CHECKING:
    from relay.asgi import Asgi, Receive, Scope, Send

__all__ = [
    "ClientApp",
    "ClientLogFilter",
    "TrustedProxies",
    "bind_request",
    "client_of",
    "install_client_log_filter",
]

# Long enough for any real browser or SDK string; a log line stays bounded.
_MAX_USER_AGENT = 256
_MAX_FORWARDED = 2048

# The scope of the request this task serves (as rewritten for trusted proxies).
_request_scope: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "request_scope", default=None
)


def _header(scope: Scope, name: bytes) -> str | None:
    values = [v for k, v in scope.get("headers", ()) if k.lower() == name]
    if not values:
        return None
    return b",".join(values)[:_MAX_FORWARDED].decode("latin-1")


def client_of(scope: Scope, trusted: TrustedProxies) -> tuple[str | None, str | None]:
    """The real client address and scheme of a request, given who is trusted.

    Walks `X-Forwarded-For` from the right (the entry the nearest proxy added)
    past every trusted address; the first untrusted one is the client. A
    malformed entry stops the walk at the last address known good.

    Returns:
        (address or None, scheme or None); None means "as the socket says".
    """
    peer = (scope.get("client") or (None,))[0]
    if not trusted.trusts(peer):
        return None, None
    address = peer
    forwarded = _header(scope, b"x-forwarded-for")
    if forwarded:
        for entry in reversed([e.strip() for e in forwarded.split(",")]):
            try:
                ipaddress.ip_address(entry.split("%", 1)[0])
            except ValueError:
                break
            address = entry
            if not trusted.trusts(entry):
                break
    proto = (_header(scope, b"x-forwarded-proto") or "").split(",")[-1].strip().lower()
    return address, proto if proto in ("http", "https") else None


def _rewritten(scope: Scope, trusted: TrustedProxies) -> Scope:
    address, proto = client_of(scope, trusted)
    if address is None and proto is None:
        return scope
    scope = dict(scope)
    if address is not None:
        scope["client"] = (address, 0)
    if proto is not None:
        websocket = scope.get("type") == "websocket"
        scope["scheme"] = {"http": "ws", "https": "wss"}[proto] if websocket else proto
    return scope


def _client_fields(scope: Scope) -> tuple[str | None, str | None]:
    """The client's address and user agent (clipped), for a log line."""
    agent = _header(scope, b"user-agent")
    return (scope.get("client") or (None,))[0], agent[:_MAX_USER_AGENT] if agent else None


class ClientApp:
    """Wraps the relay's app: real client address in the scope, client fields for logs.

    It offers what the front uses of `relay.app.RelayApp` (an ASGI `__call__`,
    `proxy_request`) and hands every other attribute through; the builtin
    front asks `worker_socket.peer_of` for an agent's real address itself.
    """

    def __init__(self, app: Any, trusted: TrustedProxies) -> None:  # noqa: ANN401 - RelayApp or any ASGI app with its entry points
        self.app = app
        self.trusted = trusted

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - whatever the wrapped app has
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") in ("http", "websocket"):
            if self.trusted:
                scope = _rewritten(scope, self.trusted)
            bind_request(scope)
        await self.app(scope, receive, send)

    @property
    def proxy_request(self) -> Asgi:
        """POST /v1/* for the builtin front: the app's own when no proxy is trusted.

        The proxy binds the scope for its log lines itself (`bind_request`),
        so without a rewrite this wrapper adds no layer to the hot path.
        """
        if not self.trusted:
            return self.app.proxy_request  # type: ignore[no-any-return]
        return self._rewriting_proxy_request

    async def _rewriting_proxy_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app.proxy_request(_rewritten(scope, self.trusted), receive, send)


def bind_request(scope: Scope) -> None:
    """Make `scope` the request this task serves, for `ClientLogFilter` (one context-var set)."""
    _request_scope.set(scope)


class ClientLogFilter(logging.Filter):
    """Adds `client_ip` and `user_agent` to a record from the request's context."""

    def filter(self, record: logging.LogRecord) -> bool:
        scope = _request_scope.get()
        client_ip, user_agent = _client_fields(scope) if scope is not None else (None, None)
        if getattr(record, "client_ip", None) is None:
            record.client_ip = client_ip
        if getattr(record, "user_agent", None) is None:
            record.user_agent = user_agent
        return True


def install_client_log_filter(logger_name: str = "relay.request") -> None:
    """Put `ClientLogFilter` on the request logger (once per process)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, ClientLogFilter) for f in logger.filters):
        logger.addFilter(ClientLogFilter())
