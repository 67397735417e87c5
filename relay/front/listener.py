"""The builtin front's listener: accepts connections and runs each one's request loop.

Every connection starts here. Its request heads are parsed with h11; a
``POST /v1/...`` is served straight into the proxy (`RelayApp.proxy_request`,
a plain ASGI callable, through `relay.front.http1.Exchange`) with the
hang-up watch and ``send_now``; an agent's WebSocket upgrade to
``/v1/worker/connect`` is served by `relay.front.websocket`; any other
request h11 parses (models, health, metrics, admin) goes to the same app
through the same `Exchange`, so a keep-alive connection stays here whatever
it asks first. Only what this front does not speak (another upgrade, an
HTTP/2 preface, ``CONNECT``, a head h11 cannot parse) is handed, with every
byte read so far, to Hypercorn (`relay.front.hypercorn`), which owns the
connection from then on.

Why: measured on this 2-core machine, Hypercorn spends ~1 ms of CPU on every
request before the app runs (task per request, idle-timer task restarted per
request, event objects per step); h11 directly on a trio socket does the same
parse and framing in ~0.2 ms. The relay's target is 0.8 ms for the whole
non-streaming request (docs/benchmarks.md).

A connection served here follows HTTP/1.1 as Hypercorn would: keep-alive
with an idle timeout (`keep_alive_timeout`, enforced by one reaper task for
all idle connections rather than a deadline per request), ``Expect:
100-continue``, chunked or sized request bodies, HTTP/1.0 clients
(close-delimited). A response that was cut short closes the connection.
"""

from __future__ import annotations

import json
import logging
import socket
from functools import partial
from typing import TYPE_CHECKING, Any

import h11
import trio

from mrcommon import sockio
from relay.boundary import HANGUP_EXTENSION, SEND_NOW_EXTENSION, WHOLE_BODY_EXTENSION
from relay.front.hangup import HangupWatch
from relay.front.http1 import MAX_HEAD, MAX_RECV, Exchange, HttpDate, asks_to_close, http_scope
from relay.front.hypercorn import HandOff
from relay.front.lifespan import Lifespan
from relay.front.websocket import WebSocketExchange, handshake_refusal
from relay.worker_socket import peer_host

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import hypercorn.config

    from relay.app import RelayApp
    from relay.asgi import Asgi

__all__ = ["Front", "serve"]

log = logging.getLogger("relay.front")

_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError)
_WORKER_TARGET = b"/v1/worker/connect"
_PROXY = "proxy"
_WORKER = "worker"
_APP = "app"
# Request body bytes read and dropped after an app answered without reading them.
_MAX_DISCARD = 1024 * 1024


def _address(family: int, address: tuple[Any, ...]) -> tuple[str, int] | None:
    """A socket address as ASGI's ``client``/``server`` (host, port); None for others."""
    if family in (socket.AF_INET, socket.AF_INET6):
        return str(address[0]), int(address[1])
    return None


def _url(family: int, address: tuple[Any, ...]) -> str:
    host, port = address[0], address[1]
    return f"http://[{host}]:{port}" if family == socket.AF_INET6 else f"http://{host}:{port}"


def _route(request: h11.Request, headers: list[tuple[bytes, bytes]]) -> str | None:
    """What serves `request` here: the proxy, the worker socket, the app, or None (Hypercorn).

    Hypercorn gets only what this front does not speak: another upgrade
    (h2c, a WebSocket elsewhere), ``CONNECT``, and HTTP/2's preface (which
    h11 parses as a ``PRI * HTTP/2.0`` request).
    """
    method = request.method
    if method == b"POST" and request.target.startswith(b"/v1/"):
        for name, _ in headers:
            if name == b"upgrade":
                return None
        return _PROXY
    for name, value in headers:
        if name == b"upgrade":
            if (
                method == b"GET"
                and value.lower() == b"websocket"
                and request.target.partition(b"?")[0] == _WORKER_TARGET
            ):
                return _WORKER
            return None
    if method == b"CONNECT" or request.http_version not in (b"1.1", b"1.0"):
        return None
    return _APP


class Front:
    """Serves connections: every HTTP/1.x request and the worker socket; the rest via Hypercorn.

    Attributes:
        app: The relay's app: `proxy_request` serves POST /v1/*, `worker_socket`
            the agents, and the app itself (ASGI) every other request.
        config: Hypercorn's configuration (timeouts, limits), also for hand-offs.
        hand_off: Where connections go that this front does not serve.
        state: The lifespan state each request scope gets a copy of.
    """

    def __init__(
        self, app: RelayApp, config: hypercorn.config.Config, state: dict[str, Any]
    ) -> None:
        self.app = app
        self.config = config
        self.state = state
        self.hand_off = HandOff(app, config, state)
        self._proxy = app.proxy_request  # looked up once: it is the same for every request
        self.closing = False
        # Connections waiting for a request head, and since when. Kept here
        # rather than as a deadline per request: one scan a second is cheaper
        # than a cancel scope on every request.
        self._idle: dict[trio.SocketStream, float] = {}
        self._date = HttpDate()
        self.hangups = HangupWatch() if HangupWatch.available else None

    def close_idle(self) -> None:
        """Shutdown: idle connections close now, busy ones after their response."""
        self.closing = True
        for stream in list(self._idle):
            self._reap(stream)

    def _reap(self, stream: trio.SocketStream) -> None:
        """Close an idle connection; its task sees the socket closed and ends."""
        del self._idle[stream]
        stream.socket.close()

    async def reap_idle(self) -> None:
        """Close connections idle longer than `keep_alive_timeout` (a head
        dribbled in byte by byte counts as idle), checking every second."""
        timeout = self.config.keep_alive_timeout
        while True:
            await trio.sleep(min(1.0, timeout / 2))
            now = trio.current_time()
            for stream, since in list(self._idle.items()):
                if now - since >= timeout:
                    self._reap(stream)

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one accepted connection until it closes or is handed to Hypercorn."""
        handed_off = False
        try:
            handed_off = await self._serve(stream)
        except _BROKEN:
            pass
        finally:
            if not handed_off:
                await trio.aclose_forcefully(stream)

    async def _serve(self, stream: trio.SocketStream) -> bool:
        """The connection's request loop; True once Hypercorn owns the connection."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        sock = stream.socket
        client = _address(sock.family, sock.getpeername())
        server = _address(sock.family, sock.getsockname())
        while not self.closing:
            raw = bytearray(conn.trailing_data[0])  # the head so far, for a hand-off
            event: Any = None
            idle = self._idle
            idle[stream] = trio.current_time()
            try:
                while True:
                    try:
                        event = conn.next_event()
                    except h11.RemoteProtocolError:
                        event = None  # Hypercorn answers what h11 cannot parse
                        break
                    if event is not h11.NEED_DATA:
                        break
                    data = sockio.read_now(stream, MAX_RECV)
                    if data is None:
                        data = await sockio.read_when_ready(stream, MAX_RECV)
                    if stream not in idle:
                        return False  # reaped while the bytes were on their way
                    raw += data
                    conn.receive_data(data)
            finally:
                idle.pop(stream, None)
            if type(event) is h11.ConnectionClosed:
                return False
            if event is None and conn.trailing_data[1]:
                return False  # the client left halfway through a head
            if event is None:
                route = None
            else:
                headers = list(event.headers)  # a `Sequence`: read it once
                route = _route(event, headers)
            if route is None:
                if self.closing:
                    return False
                await self.hand_off.serve(stream, bytes(raw))
                return True
            if route is _WORKER:
                await self._worker_socket(stream, event, conn.trailing_data[0], client)
                return False
            del raw
            exchange = Exchange(stream, conn, self._date.now())
            if asks_to_close(headers):
                exchange.keep_alive = False
            scope = http_scope(event, headers, client, server)
            if route is _PROXY:
                extensions = scope["extensions"]
                extensions[SEND_NOW_EXTENSION] = exchange.send_now
                if self.hangups is not None:
                    extensions[HANGUP_EXTENSION] = partial(self.hangups.watch, sock.fileno())
                body = exchange.buffered_body()
                if body is not None:
                    extensions[WHOLE_BODY_EXTENSION] = body
                await self._guarded(self._proxy, scope, exchange, "internal error in the proxy")
            else:
                await self._app_request(scope, exchange, event.method == b"HEAD")
            if exchange.malformed and not exchange.started:
                await exchange.bad_request()
                return False
            if exchange.gone or not exchange.done or not exchange.keep_alive:
                return False  # cut short, or the last response on this connection
            if conn.their_state is not h11.DONE and (
                route is _PROXY or not await self._discard_body(stream, conn)
            ):
                return False  # the body was not read (e.g. 413): no reuse
            # h11 saw only the request side: a fresh one takes what was pipelined.
            leftover = conn.trailing_data[0]
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
            if leftover:
                conn.receive_data(leftover)
        return False

    async def _discard_body(self, stream: trio.SocketStream, conn: h11.Connection) -> bool:
        """Read and drop what the app left of a request body (a 401 before
        reading it, say), so the connection can serve the next request, as
        Hypercorn does; at most `_MAX_DISCARD` bytes, within the keep-alive
        timeout. False when the connection cannot be reused."""
        left = _MAX_DISCARD
        idle = self._idle
        idle[stream] = trio.current_time()
        try:
            while True:
                event = conn.next_event()
                if type(event) is h11.EndOfMessage:
                    return True
                if event is h11.NEED_DATA:
                    data = await sockio.read_when_ready(stream, MAX_RECV)
                    left -= len(data)
                    if not data or left < 0 or stream not in idle:
                        return False
                    conn.receive_data(data)
                elif type(event) is not h11.Data:
                    return False
        except (h11.RemoteProtocolError, *_BROKEN):
            return False
        finally:
            idle.pop(stream, None)

    async def _app_request(self, scope: dict[str, Any], exchange: Exchange, head: bool) -> None:
        """Any other request (models, health, metrics, admin, the dashboard): the Quart app."""
        scope["state"] = self.state.copy()
        exchange.head_only = head
        # Quart answers its own errors; what escapes it is a bug below it.
        await self._guarded(self.app, scope, exchange, "internal error in the app")

    async def _guarded(
        self, app: Asgi, scope: dict[str, Any], exchange: Exchange, bug: str
    ) -> None:
        """Run `app` on `exchange`; a bug in it costs this request only.

        One traceback in our log (the line `bug`), a plain 500 if nothing
        was sent yet, and the connection closes. The exchange knows what
        was sent, so the app's ``send`` needs no wrapper to track it.
        """
        try:
            await app(scope, exchange.receive, exchange.send)
        except Exception:
            log.exception(bug, extra={"path": scope["path"]})
            exchange.keep_alive = False
            if not exchange.started:
                await exchange.internal_error()

    async def _worker_socket(
        self,
        stream: trio.SocketStream,
        request: h11.Request,
        leftover: bytes,
        client: tuple[str, int] | None,
    ) -> None:
        """An agent's upgrade: judged by `WorkerSocket`, then its session on this socket."""
        exchange = WebSocketExchange(
            stream, request, leftover, self.config.websocket_max_message_size, self._date.now()
        )
        invalid = handshake_refusal(request)
        if invalid is not None:
            status, message = invalid
            body = json.dumps({"error": {"message": message, "code": status}}).encode()
            headers = [(b"content-type", b"application/json")]
            if status == 426:
                headers.append((b"sec-websocket-version", b"13"))
            await exchange.refuse(status, headers, body)
            return
        worker_socket = self.app.worker_socket
        peer = worker_socket.peer_of(request.headers, peer_host(client))
        refusal = worker_socket.judge(request.headers, request.target.partition(b"?")[2], peer)
        if refusal is not None:
            await exchange.refuse(refusal.status, refusal.headers(), refusal.body())
            return
        await exchange.accept()
        await worker_socket.serve(exchange, peer)


async def serve(
    app: RelayApp,
    config: hypercorn.config.Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on `config.bind` until `shutdown_trigger` returns, then close gracefully.

    The same life as `hypercorn.trio.serve`: the app's ASGI lifespan runs
    first; at shutdown the listeners close, idle connections close, busy ones
    get `config.graceful_timeout` to finish.

    Args:
        app: The relay's app.
        config: Hypercorn's configuration; TLS is not supported here (put
            nginx in front, contrib/nginx).
        shutdown_trigger: Returns when the server should stop.
        task_status: Started with the bound URLs.
    """
    if config.ssl_enabled:
        raise ValueError("the relay does not terminate TLS itself; see contrib/nginx")
    state: dict[str, Any] = {}
    lifespan = Lifespan(app, state)
    front = Front(app, config, state)
    async with trio.open_nursery() as lifespan_nursery:
        if front.hangups is not None:
            lifespan_nursery.start_soon(front.hangups.run)
        lifespan_nursery.start_soon(lifespan.run)
        await lifespan.wait_started()
        sockets = config.create_sockets()
        listeners = []
        urls = []
        for sock in sockets.insecure_sockets:
            sock.listen(config.backlog)
            listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
            urls.append(_url(sock.family, sock.getsockname()))
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as accepting:
                accepting.start_soon(
                    partial(
                        trio.serve_listeners, front.handle, listeners, handler_nursery=connections
                    )
                )
                accepting.start_soon(front.reap_idle)
                task_status.started(urls)
                await shutdown_trigger()
                accepting.cancel_scope.cancel()  # closes the listeners
            front.close_idle()
            await front.hand_off.terminate()
            connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        with trio.move_on_after(config.graceful_timeout):
            await lifespan.shut_down()
        lifespan_nursery.cancel_scope.cancel()
