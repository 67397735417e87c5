"""Who the client really is: `--trusted-proxies`, and the client fields of request logs.

Behind nginx (contrib/nginx) every connection comes from 127.0.0.1. A proxy
the operator lists in `--trusted-proxies` is believed about the client it
forwards (`X-Forwarded-For`) and the scheme it was reached on
(`X-Forwarded-Proto`); any other peer's headers are ignored, so a client
cannot claim another address by sending the header itself. The rewritten ASGI
scope is what the rest of the relay sees: the worker-auth rate limit, the
admin-auth limit and the logs all use the real address.

`ClientApp` wraps the relay's app at its three entry points (the front calls
`proxy_request` and `worker_socket` directly, Hypercorn calls the app), and
binds the client's address and user agent in context variables, which
`ClientLogFilter` adds to the `relay.request` log lines.
"""

from __future__ import annotations

import contextvars
import ipaddress
import logging
from typing import TYPE_CHECKING, Any

from relay.trusted import TrustedProxies

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Scope = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
    Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
    Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = [
    "ClientApp",
    "ClientLogFilter",
    "TrustedProxies",
    "client_of",
    "install_client_log_filter",
]

# Long enough for any real browser or SDK string; a log line stays bounded.
_MAX_USER_AGENT = 256
_MAX_FORWARDED = 2048

_client_ip: contextvars.ContextVar[str | None] = contextvars.ContextVar("client_ip", default=None)
_user_agent: contextvars.ContextVar[str | None] = contextvars.ContextVar("user_agent", default=None)


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


def _bind_client(scope: Scope) -> None:
    """Bind the client's address and user agent for this request's log lines."""
    _client_ip.set((scope.get("client") or (None,))[0])
    agent = _header(scope, b"user-agent")
    _user_agent.set(agent[:_MAX_USER_AGENT] if agent else None)


class ClientApp:
    """Wraps the relay's app: real client address in the scope, client fields for logs.

    It offers what the front uses of `relay.app.RelayApp` (an ASGI `__call__`,
    `proxy_request`) and hands every other attribute (`worker_socket`) through.
    """

    def __init__(self, app: Any, trusted: TrustedProxies) -> None:  # noqa: ANN401 - RelayApp or any ASGI app with its entry points
        self.app = app
        self.trusted = trusted

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - whatever the wrapped app has
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") in ("http", "websocket"):
            scope = _rewritten(scope, self.trusted)
            _bind_client(scope)
        await self.app(scope, receive, send)

    async def proxy_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope = _rewritten(scope, self.trusted)
        _bind_client(scope)
        await self.app.proxy_request(scope, receive, send)

    @property
    def worker_socket(self) -> _TrustedWorkerSocket:
        """The `WorkerSocket` as the builtin front uses it (`judge`, then `serve`),
        with the peer it is given replaced by the real client's address. (Under
        Hypercorn the upgrade comes through `__call__` above.)"""
        return _TrustedWorkerSocket(self.app.worker_socket, self.trusted)


class _TrustedWorkerSocket:
    """One upgrade's view of the `WorkerSocket`: the peer as the trusted proxies say.

    The builtin front takes it once per upgrade and calls `judge`, then
    `serve` with the same socket peer; `judge` works out the real address
    from the head and `serve` uses the same.
    """

    def __init__(self, inner: Any, trusted: TrustedProxies) -> None:  # noqa: ANN401 - WorkerSocket
        self.inner = inner
        self.trusted = trusted
        self._real: str | None = None

    def judge(self, headers: Any, query: bytes, peer: str) -> Any:  # noqa: ANN401 - WorkerSocket's
        address, _ = client_of({"headers": list(headers), "client": (peer, 0)}, self.trusted)
        self._real = address or peer
        return self.inner.judge(headers, query, self._real)

    async def serve(self, exchange: Any, peer: str) -> None:  # noqa: ANN401 - the front's exchange
        await self.inner.serve(exchange, self._real or peer)

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - whatever the WorkerSocket has
        return getattr(self.inner, name)


class ClientLogFilter(logging.Filter):
    """Adds `client_ip` and `user_agent` to a record from the request's context."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "client_ip", None) is None:
            record.client_ip = _client_ip.get()
        if getattr(record, "user_agent", None) is None:
            record.user_agent = _user_agent.get()
        return True


def install_client_log_filter(logger_name: str = "relay.request") -> None:
    """Put `ClientLogFilter` on the request logger (once per process)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, ClientLogFilter) for f in logger.filters):
        logger.addFilter(ClientLogFilter())
