"""The relay's listener: h11 on trio sockets for POST /v1/*, Hypercorn for the rest.

Every connection starts here. Its first request head is parsed with h11; a
``POST /v1/...`` is served by `Front` itself, straight into the proxy
(`relay.http_api.Proxy`, a plain ASGI callable), and an agent's WebSocket
upgrade to ``/v1/worker/connect`` is framed here (`relay.wsframes`) and handed to
the worker-socket app (`relay.worker_socket`) as ASGI messages. Anything else
(a GET, another upgrade, an HTTP/2 preface, a head h11 cannot parse) hands
the connection, with every byte read so far, to Hypercorn's own connection
server, which owns it from then on and serves the Quart app as before.

Why: measured on this 2-core machine, Hypercorn spends ~1 ms of CPU on every
request before the app runs (task per request, idle-timer task restarted per
request, event objects per step); h11 directly on a trio socket does the same
parse and framing in ~0.2 ms. The relay's target is 0.8 ms for the whole
non-streaming request (docs/benchmarks.md). Every streamed chunk crosses the
worker socket, and Hypercorn put a task and a channel between the socket and
the hub's reader, and shielded its writes (a worker that stops reading could
not be cut off). Hypercorn keeps everything where a request is rare: admin,
metrics, models, the dashboard, HTTP/2.

A connection served here follows HTTP/1.1 as Hypercorn would: keep-alive
with an idle timeout (`keep_alive_timeout`), ``Expect: 100-continue``,
chunked or sized request bodies, HTTP/1.0 clients (close-delimited), a
``date`` header. A response that was cut short closes the connection.

The client leaving cancels its request. While the proxy waits (queue,
worker), one task for the whole server notices it (`HangupWatch`, Linux): a
private epoll set holds the socket of every such request, for ``RDHUP``
(the client shut its side) and errors (a reset), never for incoming bytes,
so a pipelining client is not mistaken for one leaving. That is two
``epoll_ctl`` calls per request instead of a watcher task per request,
which cost a spawn, two scheduler trips and a cancellation each (a fifth of
the relay's CPU per request). Where there is no epoll, the proxy watches
``receive()`` for ``http.disconnect`` with a task, as under Hypercorn.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import http
import json
import logging
import os
import re
import select
import time
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import h11
import trio
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import parse_socket_addr, repr_socket_addr, wrap_app

from relay import wsframes
from relay.http_api import HANGUP_EXTENSION, SEND_NOW_EXTENSION
from relay.worker_hub import Sent
from relay.worker_socket import FRAMING_ERROR

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, MutableMapping

    import hypercorn.config
    from hypercorn.typing import AppWrapper

    from relay.app import RelayApp

__all__ = ["Front", "serve"]

log = logging.getLogger("relay.front")

_MAX_RECV = 65536
# Largest request head accepted (Hypercorn's h11_max_incomplete_size default).
_MAX_HEAD = 16 * 1024
# Pipelined bytes buffered while a response is still being sent; past this,
# the connection stops reading (TCP pushes back) until the response is done.
_MAX_PIPELINED = 64 * 1024
_ASGI = {"version": "3.0", "spec_version": "2.3"}
_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError)
# os.write()/os.read() work on a socket's descriptor on POSIX, not on Windows.
_DIRECT_IO = os.name == "posix"
# Reads from an agent served straight from the kernel in a row before one checkpoint.
_DIRECT_READS = 16
_WORKER_TARGET = b"/v1/worker/connect"
# Response header names are tokens (RFC 9110 5.6.2); values never carry CR, LF or NUL.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_UNSAFE_VALUE = re.compile(rb"[\r\n\x00]")
# Framing is the front's to decide.
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection", b"keep-alive"})
_REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus}
_CLOSE_ABNORMAL = 1006


_PROXY = "proxy"
_WORKER = "worker"


class HangupWatch:
    """Notices clients hanging up while their requests wait, for every request at once.

    `watch` registers a socket in a private epoll set for ``EPOLLRDHUP``
    (errors and hang-ups are always reported; incoming bytes are not asked
    for); `run`, one task, waits for that set to become readable and calls
    each ready socket's callback once, from its own task. Linux only
    (`available`).
    """

    available = hasattr(select, "epoll")

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._watched: dict[int, Callable[[], None]] = {}

    def watch(self, fd: int, on_hangup: Callable[[], None]) -> Callable[[], None]:
        """Call `on_hangup` (once) if the peer of `fd` shuts its side or resets.

        Returns:
            The function that stops watching; call it before the socket closes.
        """
        self._watched[fd] = on_hangup
        try:
            self._epoll.register(fd, select.EPOLLRDHUP)
        except FileExistsError:  # left registered by a request that could not unregister
            self._epoll.modify(fd, select.EPOLLRDHUP)
        return partial(self._unwatch, fd, on_hangup)

    def _unwatch(self, fd: int, on_hangup: Callable[[], None]) -> None:
        if self._watched.get(fd) is on_hangup:
            del self._watched[fd]
            # Once per request: plain try, not contextlib.suppress (a context manager).
            try:  # noqa: SIM105
                self._epoll.unregister(fd)
            except OSError:  # already gone with its socket
                pass

    async def run(self) -> None:
        """Deliver hang-ups until cancelled; closes the epoll set when done."""
        epfd = self._epoll.fileno()
        try:
            while True:
                await trio.lowlevel.wait_readable(epfd)
                for fd, _events in self._epoll.poll(0):
                    on_hangup = self._watched.pop(fd, None)
                    with contextlib.suppress(OSError):
                        self._epoll.unregister(fd)
                    if on_hangup is not None:
                        on_hangup()
        finally:
            self._epoll.close()


def _route(request: h11.Request) -> str | None:
    """What serves `request` here: the proxy, the worker socket, or None (Hypercorn)."""
    if request.method == b"POST":
        if request.target.startswith(b"/v1/") and all(
            name != b"upgrade" for name, _ in request.headers
        ):
            return _PROXY
    elif request.method == b"GET" and request.target.partition(b"?")[0] == _WORKER_TARGET:
        for name, value in request.headers:
            if name == b"upgrade" and value.lower() == b"websocket":
                return _WORKER
    return None


async def _send_all(stream: trio.SocketStream, data: bytes) -> None:
    """`stream.send_all`, minus a trip through trio's scheduler when the kernel takes it all.

    trio's ``send_all`` yields to the run loop even when the socket accepts
    every byte at once (a checkpoint: one more loop iteration, one more
    ``epoll_wait``); on this path that was a fifth of the iterations a
    request costs at concurrency 1. The write is tried directly on the
    non-blocking descriptor; whatever the kernel does not take (a full
    buffer, a large body) goes through ``send_all`` as before. Callers are
    the only writer of their socket (one task, or under a lock).
    """
    if _DIRECT_IO:
        try:
            sent = os.write(stream.socket.fileno(), data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:  # EPIPE, ECONNRESET, EBADF: as send_all would say
            raise trio.BrokenResourceError(str(exc)) from exc
        if sent == len(data):
            return
        data = data[sent:]
    await stream.send_all(data)


def _read_now(stream: trio.SocketStream) -> bytes | None:
    """Bytes already waiting in the socket (``b""`` at EOF), or None; never yields."""
    if not _DIRECT_IO:
        return None
    try:
        return os.read(stream.socket.fileno(), _MAX_RECV)
    except BlockingIOError:
        return None
    except OSError as exc:  # ECONNRESET, EBADF: as receive_some would say
        raise trio.BrokenResourceError(str(exc)) from exc


async def _read_when_ready(stream: trio.SocketStream) -> bytes:
    """Wait until the socket is readable, then read (a checkpoint, like `receive_some`).

    After `_read_now` found nothing, `receive_some` would try the read again
    before waiting: one failing syscall and a context manager per wait.
    """
    if _DIRECT_IO:
        fd = stream.socket.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the socket was closed")
        await trio.lowlevel.wait_readable(fd)
        data = _read_now(stream)
        if data is not None:
            return data
    return await stream.receive_some(_MAX_RECV)


async def _receive_some(stream: trio.SocketStream) -> bytes:
    """`stream.receive_some`, minus the scheduler trip when bytes are already waiting.

    A keep-alive client often has its next request in the socket by the time
    the previous one is logged; trio would still yield once before returning
    it. Nothing waiting: wait for the socket, which parks the task.
    """
    data = _read_now(stream)
    if data is None:
        data = await _read_when_ready(stream)
    return data


def _head_lines(status: int, headers: Iterable[tuple[bytes, bytes]], date: bytes) -> list[bytes]:
    """A response's status line and headers, framing headers left to the caller.

    A header that could split or smuggle a response (CR, LF or NUL in the
    value, a name that is not a token) is dropped, never sent.
    """
    lines = [b"HTTP/1.1 %d %b\r\n" % (status, _REASONS.get(status, b""))]
    for name, value in headers:
        name = name.lower()
        if name in _FRAMING or not _TOKEN.fullmatch(name) or _UNSAFE_VALUE.search(value):
            continue
        lines.append(b"%b: %b\r\n" % (name, value))
    lines.append(b"date: %b\r\n" % date)
    return lines


def _asks_to_close(request: h11.Request) -> bool:
    """``Connection: close`` from the client, or a head whose framing is ambiguous.

    A request with both ``Content-Length`` and ``Transfer-Encoding`` may be
    a smuggling attempt (RFC 9112 §6.1): h11 reads it by its chunks; it is
    answered, and its connection then closed, so nothing more is read from it.
    """
    length = chunked = False
    for name, value in request.headers:
        if name == b"connection" and b"close" in value.lower():
            return True
        if name == b"content-length":
            length = True
        elif name == b"transfer-encoding":
            chunked = True
    return length and chunked


class _Date:
    """The ``date`` header's value, formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = email.utils.formatdate(second, usegmt=True).encode("ascii")
        return self._value


class _Replay(trio.abc.HalfCloseableStream):
    """A socket stream whose first read returns bytes already read from it.

    Hypercorn's `TCPServer` takes it for the connection it is handed; it
    looks for ``socket`` (addresses) and finds no ``do_handshake`` (not TLS).
    """

    def __init__(self, stream: trio.SocketStream, head: bytes) -> None:
        self._stream = stream
        self._head = head
        self.socket = stream.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


class _Exchange:
    """One request served on a connection: the ASGI ``receive`` and ``send`` of it.

    ``receive()`` yields the body (all of what one socket read brought as one
    message), then blocks until the client leaves and answers
    ``http.disconnect``. h11 parses the request; the response is framed here
    (h11's validating writer cost ~65 µs a request, more than the parse):
    the head goes out with the first body piece, a whole body gets a
    ``content-length``, a streamed one is chunked (HTTP/1.1) or ends with the
    connection (HTTP/1.0). A header that could split the response (CR, LF,
    NUL, a bad name) is dropped. A failed write ends the wait in
    ``receive()`` at once.
    """

    def __init__(self, stream: trio.SocketStream, conn: h11.Connection, date: bytes) -> None:
        self.stream = stream
        self.conn = conn
        self.date = date
        self.gone = False  # the client left, or a write failed
        self.malformed = False  # the body broke HTTP/1.1 framing
        self.started = False  # the response head was written
        self.done = False  # the whole response was written
        self.keep_alive = conn.their_http_version == b"1.1"
        self._chunked = False
        self._no_body = False
        self._body_done = False
        self._continued = False  # 100 Continue sent
        self._head: MutableMapping[str, Any] | None = None
        self._backlog = b""  # what a `send_now` could not write; goes out first

    async def receive(self) -> dict[str, Any]:
        if self.gone:
            return {"type": "http.disconnect"}
        conn = self.conn
        if not self._body_done:
            if conn.client_is_waiting_for_100_continue and not self._continued:
                self._continued = True
                await self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
            parts: list[bytes] = []
            while not self.gone:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError:
                    self.malformed = True  # nothing more can be read
                    self.gone = True
                    break
                if type(event) is h11.Data:
                    parts.append(event.data)
                elif type(event) is h11.EndOfMessage:
                    self._body_done = True
                    return {"type": "http.request", "body": b"".join(parts), "more_body": False}
                elif parts:
                    return {"type": "http.request", "body": b"".join(parts), "more_body": True}
                elif not await self._read():
                    break
            return {"type": "http.disconnect"}
        # The body is read: wait for the client to leave (or to pipeline more).
        # A failed write closes the socket, which ends this wait too.
        while not self.gone:
            if len(conn.trailing_data[0]) > _MAX_PIPELINED:
                await trio.sleep_forever()
            if not await self._read():
                break
        return {"type": "http.disconnect"}

    async def _read(self) -> bool:
        """Feed one socket read to h11; False when the client is gone."""
        try:
            data = await self.stream.receive_some(_MAX_RECV)
        except _BROKEN:
            data = b""
        if not data:
            self.gone = True
            return False
        self.conn.receive_data(data)
        return True

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self._head = message
            return
        if message["type"] != "http.response.body" or self.gone or self.done:
            return
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        out = b""
        if self._head is not None:
            head, self._head = self._head, None
            out = self._start(int(head["status"]), head.get("headers", ()), body, more)
        if self._backlog:
            out += self._backlog
            self._backlog = b""
        if self._no_body:
            body = b""
        if self._chunked:
            if body:
                out += b"%x\r\n%b\r\n" % (len(body), body)
            if not more:
                out += b"0\r\n\r\n"
        elif body:
            out += body
        if not more:
            self.done = True
        if out:
            await self._write(out)

    def send_now(self, body: bytes) -> Sent:
        """One more piece of a started stream, written now if the socket takes it.

        Called from another task (the worker's reader) while the request's
        task waits, so it never blocks and never yields: what the kernel
        does not take of the framed piece stays in a backlog that the next
        `send` writes first (`Sent.PART`; the caller must make that `send`
        happen). `Sent.NONE` means nothing was written.
        """
        if (
            not _DIRECT_IO
            or self._backlog
            or not self.started
            or self.done
            or self.gone
            or self._no_body
            or self._head is not None
        ):
            return Sent.NONE
        data = b"%x\r\n%b\r\n" % (len(body), body) if self._chunked else body
        try:
            sent = os.write(self.stream.socket.fileno(), data)
        except OSError:  # full (EAGAIN), or gone: the usual send finds out which
            return Sent.NONE
        if sent == len(data):
            return Sent.ALL
        self._backlog = data[sent:]
        return Sent.PART

    def _start(
        self, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes, more: bool
    ) -> bytes:
        """The response head; decides the body's framing."""
        self.started = True
        length: bytes | None = None
        for name, value in headers:
            if name.lower() == b"content-length" and value.isdigit():
                length = value
        lines = _head_lines(status, headers, self.date)
        if status < 200 or status in (204, 304):
            self._no_body = True
        elif length is not None:
            lines.append(b"content-length: %b\r\n" % length)
        elif not more:
            lines.append(b"content-length: %d\r\n" % len(body))
        elif self.keep_alive:
            self._chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
        else:
            self.keep_alive = False  # HTTP/1.0: the body ends with the connection
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    async def bad_request(self) -> None:
        """Answer a body h11 could not frame with a plain 400 (the proxy saw a disconnect)."""
        body = json.dumps(
            {"error": {"message": "malformed HTTP/1.1 request body", "code": 400}}
        ).encode()
        self.keep_alive = False
        out = self._start(400, [(b"content-type", b"application/json")], body, False)
        await self._write(out + body)

    async def _write(self, data: bytes) -> None:
        try:
            await _send_all(self.stream, data)
        except _BROKEN:
            # The client is gone: closing the socket wakes the task waiting
            # in `receive()`, which answers http.disconnect.
            self.gone = True
            self.stream.socket.close()


def _handshake_refusal(request: h11.Request) -> tuple[int, str] | None:
    """Why an upgrade is not a valid WebSocket handshake (RFC 6455 4.2.1), or None."""
    fields: dict[bytes, bytes] = {}
    for name, value in request.headers:
        fields[name] = fields[name] + b", " + value if name in fields else value
    if request.http_version != b"1.1":
        return 400, "a WebSocket upgrade needs HTTP/1.1"
    if b"upgrade" not in [t.strip() for t in fields.get(b"connection", b"").lower().split(b",")]:
        return 400, "the upgrade needs 'Connection: Upgrade'"
    if fields.get(b"sec-websocket-version") != b"13":
        return 426, "only WebSocket version 13 is spoken here"
    try:
        key = base64.b64decode(fields.get(b"sec-websocket-key", b""), validate=True)
    except ValueError:
        key = b""
    if len(key) != 16:
        return 400, "the upgrade needs a valid Sec-WebSocket-Key"
    return None


class _WebSocketExchange:
    """The worker socket as an ASGI websocket, framed by `relay.wsframes` on the raw socket.

    ``receive()`` is called by one task (the hub's session reader) and
    answers pings and close frames itself; ``send()`` by the session's
    writer. Both write under one lock, so frames never interleave. A frame
    that breaks RFC 6455 closes the socket with the code it calls for (1002,
    1007, or 1009 past `max_message`), as Hypercorn did.
    """

    def __init__(
        self,
        stream: trio.SocketStream,
        request: h11.Request,
        leftover: bytes,
        max_message: int,
        date: bytes,
    ) -> None:
        self.stream = stream
        self.request = request
        self.reader = wsframes.FrameReader(max_message)
        self.date = date
        self.connected = False  # websocket.connect was given to the app
        self.accepted = False
        self.closed = False  # our close frame (or an HTTP answer) went out
        self.gone = False
        self._leftover = leftover
        self._pending: list[wsframes.Message | wsframes.Ping | wsframes.Close] = []
        self._lock = trio.Lock()
        self._refusal: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self._direct_reads = 0  # reads in a row that did not checkpoint

    async def receive(self) -> dict[str, Any]:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        while not self.gone:
            if not self._pending:
                data, self._leftover = self._leftover, b""
                if not data:
                    try:
                        data = await self._read()
                    except _BROKEN:
                        data = b""
                    if not data:
                        break
                try:
                    self._pending = self.reader.feed(data)
                except wsframes.FrameError as exc:
                    await self._close(exc.code, exc.reason)
                    self.gone = True
                    # Told as such, so the session counts the worker's protocol error.
                    return {
                        "type": "websocket.disconnect",
                        "code": exc.code,
                        FRAMING_ERROR: exc.reason,
                    }
                self._pending.reverse()
                continue
            event = self._pending.pop()
            if type(event) is wsframes.Message:
                if type(event.data) is str:
                    return {"type": "websocket.receive", "text": event.data}
                return {"type": "websocket.receive", "bytes": event.data}
            if type(event) is wsframes.Ping:
                await self._write(wsframes.frame(wsframes.PONG, event.payload))
            elif type(event) is wsframes.Close:
                # Answer the peer's close with its code (1000 if it gave none).
                code = 1000 if event.code == wsframes.NO_STATUS else event.code
                await self._close(code, "")
                self.gone = True
                return {"type": "websocket.disconnect", "code": event.code}
        self.gone = True
        return {"type": "websocket.disconnect", "code": _CLOSE_ABNORMAL}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        kind = message["type"]
        if self.gone or self.closed:
            return
        if kind == "websocket.send":
            text: str | None = message.get("text")
            if text is not None:
                await self._write(wsframes.frame(wsframes.TEXT, text.encode("utf-8")))
            else:
                await self._write(wsframes.frame(wsframes.BINARY, message.get("bytes") or b""))
        elif kind == "websocket.accept":
            self.accepted = True
            key = dict(self.request.headers)[b"sec-websocket-key"]
            await self._write(
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                b"connection: Upgrade\r\nsec-websocket-accept: %b\r\ndate: %b\r\n\r\n"
                % (wsframes.accept_key(key), self.date)
            )
        elif kind == "websocket.close":
            if self.accepted:
                await self._close(int(message.get("code", 1000)), message.get("reason") or "")
            else:
                await self.refuse(403, [], b"")
        elif kind == "websocket.http.response.start" and not self.accepted:
            self._refusal = (int(message["status"]), list(message.get("headers", ())))
        elif kind == "websocket.http.response.body" and self._refusal is not None:
            status, headers = self._refusal
            await self.refuse(status, headers, message.get("body", b""))

    async def _read(self) -> bytes:
        """The next bytes from the agent: straight from the kernel when they are
        waiting, but through a checkpoint at least every `_DIRECT_READS` reads,
        so that an agent that never pauses cannot keep the loop from its other
        tasks (the hub's reader does not otherwise yield between frames)."""
        data = _read_now(self.stream)
        if data is None:
            self._direct_reads = 0
            return await _read_when_ready(self.stream)
        self._direct_reads += 1
        if self._direct_reads >= _DIRECT_READS:
            self._direct_reads = 0
            await trio.lowlevel.checkpoint()
        return data

    async def refuse(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Answer the upgrade with a plain HTTP response, and end the connection."""
        lines = _head_lines(status, headers, self.date)
        lines.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        await self._write(b"".join(lines) + body)
        self.closed = True

    async def _close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            await self._write(wsframes.close_frame(code, reason))

    async def _write(self, data: bytes) -> None:
        # Uncontended (the usual case: the hub's writer alone), take the lock
        # without `acquire()`'s trip through the scheduler.
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()
        try:
            await _send_all(self.stream, data)
        except _BROKEN:
            self.gone = True
        finally:
            self._lock.release()


class Front:
    """Serves connections: POST /v1/* here, everything else through Hypercorn.

    Attributes:
        app: The relay's ASGI app; `RelayApp.proxy_request` serves our requests.
        hypercorn_app: The same app as Hypercorn wraps it, for handed-off connections.
        config: Hypercorn's configuration (timeouts, limits).
        context: Hypercorn's worker context; `terminated` is set at shutdown.
        state: The lifespan state each Hypercorn connection gets a copy of.
    """

    def __init__(
        self,
        app: RelayApp,
        hypercorn_app: AppWrapper,
        config: hypercorn.config.Config,
        context: WorkerContext,
        state: dict[str, Any],
    ) -> None:
        self.app = app
        self.hypercorn_app = hypercorn_app
        self.config = config
        self.context = context
        self.state = state
        self.closing = False
        # Connections waiting for a request head, and since when. Kept here
        # rather than as a deadline per request: one scan a second is cheaper
        # than a cancel scope on every request.
        self._idle: dict[trio.SocketStream, float] = {}
        self._date = _Date()
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
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        sock = stream.socket
        client = parse_socket_addr(sock.family, sock.getpeername())
        server = parse_socket_addr(sock.family, sock.getsockname())
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
                    data = await _receive_some(stream)
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
            route = None if event is None else _route(event)
            if route is None:
                if self.closing:
                    return False
                await self._hand_off(stream, bytes(raw))
                return True
            if route is _WORKER:
                await self._worker_socket(stream, event, conn.trailing_data[0], client, server)
                return False
            del raw
            exchange = _Exchange(stream, conn, self._date.now())
            if _asks_to_close(event):
                exchange.keep_alive = False
            scope = _scope(event, client, server)
            scope["extensions"][SEND_NOW_EXTENSION] = exchange.send_now
            if self.hangups is not None:
                scope["extensions"][HANGUP_EXTENSION] = partial(self.hangups.watch, sock.fileno())
            await self.app.proxy_request(scope, exchange.receive, exchange.send)
            if exchange.malformed and not exchange.started:
                await exchange.bad_request()
                return False
            if exchange.gone or not exchange.done or not exchange.keep_alive:
                return False  # cut short, or the last response on this connection
            if conn.their_state is not h11.DONE:
                return False  # the body was not read (e.g. 413): no reuse
            # h11 saw only the request side: a fresh one takes what was pipelined.
            leftover = conn.trailing_data[0]
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
            if leftover:
                conn.receive_data(leftover)
        return False

    async def _worker_socket(
        self,
        stream: trio.SocketStream,
        request: h11.Request,
        leftover: bytes,
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
    ) -> None:
        """An agent's upgrade: the relay's worker-socket app, framed here."""
        exchange = _WebSocketExchange(
            stream, request, leftover, self.config.websocket_max_message_size, self._date.now()
        )
        refusal = _handshake_refusal(request)
        if refusal is not None:
            status, message = refusal
            body = json.dumps({"error": {"message": message, "code": status}}).encode()
            headers = [(b"content-type", b"application/json")]
            if status == 426:
                headers.append((b"sec-websocket-version", b"13"))
            await exchange.refuse(status, headers, body)
            return
        scope = _scope(request, client, server)
        scope.update(
            type="websocket",
            scheme="ws",
            subprotocols=[],
            extensions={"websocket.http.response": {}},
        )
        await self.app.worker_socket(scope, exchange.receive, exchange.send)

    async def _hand_off(self, stream: trio.SocketStream, head: bytes) -> None:
        server = TCPServer(
            self.hypercorn_app,
            self.config,
            self.context,
            ConnectionState(self.state.copy()),
            _Replay(stream, head),  # type: ignore[arg-type]
        )
        await server.run()


def _scope(
    request: h11.Request, client: tuple[str, int] | None, server: tuple[str, int] | None
) -> dict[str, Any]:
    """The ASGI scope of `request` as an HTTP request (the worker socket amends it)."""
    raw_path, _, query = request.target.partition(b"?")
    return {
        "type": "http",
        "asgi": _ASGI,
        "http_version": request.http_version.decode("ascii"),
        "method": request.method.decode("ascii"),
        "scheme": "http",
        "path": unquote(raw_path.decode("ascii")),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": list(request.headers),
        "client": client,
        "server": server,
        "extensions": {},
    }


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
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
    state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, config, state)
    context = WorkerContext(None)
    front = Front(app, wrapped, config, context, state)
    async with trio.open_nursery() as lifespan_nursery:
        if front.hangups is not None:
            lifespan_nursery.start_soon(front.hangups.run)
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        sockets = config.create_sockets()
        listeners = []
        urls = []
        for sock in sockets.insecure_sockets:
            sock.listen(config.backlog)
            listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
            urls.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
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
            await context.terminated.set()
            connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
