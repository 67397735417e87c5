"""HTTP/1.1 on one connection: a request's ASGI ``receive``/``send`` (`Exchange`).

h11 parses the request; the response is framed here (h11's validating
writer cost ~65 µs a request, more than the parse): the head goes out with
the first body piece, a whole body gets a ``content-length``, a streamed one
is chunked (HTTP/1.1) or ends with the connection (HTTP/1.0), and a
``date`` header is added. A header that could split or smuggle a response
(CR, LF, NUL, a name that is not a token) is dropped, never sent. The
connection's request loop is `relay.front.listener`'s.
"""

from __future__ import annotations

import email.utils
import http
import json
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import h11
import trio

from mrcommon import sockio
from relay.boundary import Sent

if TYPE_CHECKING:
    from collections.abc import Iterable, MutableMapping

__all__ = [
    "MAX_HEAD",
    "MAX_RECV",
    "Exchange",
    "HttpDate",
    "asks_to_close",
    "head_lines",
    "http_scope",
]

MAX_RECV = 65536
"""Bytes asked of the kernel per socket read."""
MAX_HEAD = 16 * 1024
"""Largest request head accepted (Hypercorn's h11_max_incomplete_size default)."""
# Pipelined bytes buffered while a response is still being sent; past this,
# the connection stops reading (TCP pushes back) until the response is done.
_MAX_PIPELINED = 64 * 1024
_ASGI = {"version": "3.0", "spec_version": "2.3"}
_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError)
# Response header names are tokens (RFC 9110 5.6.2); values never carry CR, LF or NUL.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_UNSAFE_VALUE = re.compile(rb"[\r\n\x00]")
# Framing is the front's to decide.
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection", b"keep-alive"})
_REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus}


def head_lines(status: int, headers: Iterable[tuple[bytes, bytes]], date: bytes) -> list[bytes]:
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


def asks_to_close(headers: list[tuple[bytes, bytes]]) -> bool:
    """``Connection: close`` from the client, or a head whose framing is ambiguous.

    A request with both ``Content-Length`` and ``Transfer-Encoding`` may be
    a smuggling attempt (RFC 9112 §6.1): h11 reads it by its chunks; it is
    answered, and its connection then closed, so nothing more is read from it.

    Args:
        headers: The request's headers as h11 parsed them (lowercase names).
    """
    length = chunked = False
    for name, value in headers:
        if name == b"connection" and b"close" in value.lower():
            return True
        if name == b"content-length":
            length = True
        elif name == b"transfer-encoding":
            chunked = True
    return length and chunked


class HttpDate:
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


class Exchange:
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
        self.head_only = False  # a HEAD request: the head is sent, never a body
        self._chunked = False
        self._no_body = False
        self._body_done = False
        self._continued = False  # 100 Continue sent
        self._head: MutableMapping[str, Any] | None = None
        self._backlog = b""  # what a `send_now` could not write; goes out first
        self._parts: list[bytes] = []  # body parsed by `buffered_body`, not yet received

    def buffered_body(self) -> bytes | None:
        """The whole request body if it came with the head, else None; never reads the socket.

        A small request's body usually arrives in the same read as its head,
        and then the proxy needs neither ``receive()`` nor a deadline to wait
        for it (`relay.boundary.WHOLE_BODY_EXTENSION`). What is parsed of a
        longer body stays for `receive`, as does a framing error (h11 raises
        it again there).
        """
        conn = self.conn
        parts = self._parts
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return None
            if type(event) is h11.Data:
                parts.append(event.data)
            elif type(event) is h11.EndOfMessage:
                self._body_done = True
                self._parts = []
                return parts[0] if len(parts) == 1 else b"".join(parts)
            else:
                return None  # NEED_DATA: the rest is on its way, or waits for 100 Continue

    async def receive(self) -> dict[str, Any]:
        if self.gone:
            return {"type": "http.disconnect"}
        conn = self.conn
        if not self._body_done:
            if conn.client_is_waiting_for_100_continue and not self._continued:
                self._continued = True
                await self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
            parts, self._parts = self._parts, []
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
            data = await self.stream.receive_some(MAX_RECV)
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
            not sockio.DIRECT_IO
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
            sent = sockio.write_now(self.stream, data)
        except trio.BrokenResourceError:  # gone: the usual send finds out
            return Sent.NONE
        if sent == len(data):
            return Sent.ALL
        if not sent:  # full: the usual send waits for room
            return Sent.NONE
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
        lines = head_lines(status, headers, self.date)
        if status < 200 or status in (204, 304):
            self._no_body = True
        elif length is not None:
            lines.append(b"content-length: %b\r\n" % length)
        elif not more:
            lines.append(b"content-length: %d\r\n" % len(body))
        elif self.head_only:
            pass  # no body follows, so no framing for one
        elif self.keep_alive:
            self._chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
        else:
            self.keep_alive = False  # HTTP/1.0: the body ends with the connection
        if self.head_only:
            self._no_body = True
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    async def bad_request(self) -> None:
        """Answer a body h11 could not frame with a plain 400 (the proxy saw a disconnect)."""
        await self._plain(400, "malformed HTTP/1.1 request body")

    async def internal_error(self) -> None:
        """Answer a request whose app failed before it started a response."""
        await self._plain(500, "internal relay error; see the relay's log")

    async def _plain(self, status: int, message: str) -> None:
        body = json.dumps({"error": {"message": message, "code": status}}).encode()
        self.keep_alive = False
        out = self._start(status, [(b"content-type", b"application/json")], body, False)
        self.done = True
        await self._write(out + body)

    async def _write(self, data: bytes) -> None:
        try:
            await sockio.send_all(self.stream, data)
        except _BROKEN:
            # The client is gone: closing the socket wakes the task waiting
            # in `receive()`, which answers http.disconnect.
            self.gone = True
            self.stream.socket.close()


def http_scope(
    request: h11.Request,
    headers: list[tuple[bytes, bytes]],
    client: tuple[str, int] | None,
    server: tuple[str, int] | None,
) -> dict[str, Any]:
    """The ASGI scope of `request` as an HTTP request.

    Args:
        request: The head h11 parsed.
        headers: Its headers, read once into a list (h11's `Headers` is a
            `Sequence`: every pass over it calls ``__getitem__`` per header).
        client: The peer's address.
        server: Ours.
    """
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
        "headers": headers,
        "client": client,
        "server": server,
        "extensions": {},
    }
