"""Keep-alive HTTP/1.1 connections to an ``http://`` backend, on h11 and trio sockets.

This is the agent's hot path: every relayed POST to a plain-HTTP backend goes
through `HttpPool.post`. It does what httpx + httpcore did for it at a
fraction of their CPU (docs/benchmarks.md), and nothing more:

- idle connections wait on a LIFO stack, so taking and returning one is
  O(1) whatever the number of open streams (httpcore 1.0.9 scans every
  connection on every request start and end: encode/httpcore#1035);
- a connection goes back on the stack only when both sides finished the
  exchange cleanly and the whole body was read. Anything else (an early
  exit, an exception, a cancellation) closes its socket at once, so the
  backend sees the client leave and stops generating;
- an idle connection that turned readable (the backend closed it, or sent
  bytes nobody asked for) or that waited longer than `IDLE_EXPIRY_SECS`
  is dropped instead of reused; when a reused one fails anyway before any
  byte of the answer arrived (the backend closed it while the request was
  on its way), the request goes once more on a new connection;
- the body is yielded one socket read at a time (every h11 ``Data`` event
  of that read, joined), so the agent's per-piece work runs once per read,
  not once per HTTP chunk;
- ``accept-encoding: identity``: the agent never decompresses.

Failures are raised as `agent.errors.BackendError` subclasses whose messages
carry the URL without credentials.
"""

import base64
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from urllib.parse import quote, unquote, urlsplit

import attrs
import h11
import trio

from agent.config import redact_url
from agent.errors import BackendBroken, BackendUnreachable

__all__ = [
    "DROPPED_RESPONSE_HEADERS",
    "IDLE_EXPIRY_SECS",
    "HttpPool",
    "HttpPoolResponse",
    "HttpPoolStatistics",
    "kept_response_headers",
]

# An idle connection older than this is closed rather than reused: servers
# close idle keep-alive connections after a few seconds (Hypercorn: 5 s), and
# an old one is the likeliest to be closed while our request is on its way.
IDLE_EXPIRY_SECS = 5.0

# One socket read at most; also what one yielded body piece can hold of it.
_READ_SIZE = 64 * 1024

# A response head larger than this is refused (h11's default is 16 KiB;
# httpcore, which the agent used before, allows 100 KiB).
_MAX_HEAD_SIZE = 100 * 1024

# Hop-by-hop headers, and the framing headers that no longer describe the body
# once the client has de-chunked (and, for httpx, decompressed) it.
DROPPED_RESPONSE_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
    }
)

# The pool writes these itself (framing, Host, identity encoding), or they
# describe a connection the caller does not own.
_NOT_FORWARDED = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "accept-encoding",
        "te",
        "upgrade",
    }
)

# What a dead or misbehaving peer raises while we read or write. trio's
# SocketStream turns socket errors into BrokenResourceError.
_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError)

# Printable ASCII other than the unreserved characters `quote` always keeps:
# a request target keeps these as they are; a space, a control character or
# non-ASCII is percent-encoded (what httpx did to the same path).
_TARGET_SAFE = "!$&'()*+,/:;=?@%[]"


def kept_response_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The response headers worth passing to the client, lower-case.

    Repeated headers are joined with ``", "``.

    Args:
        pairs: Header name/value pairs in arrival order.

    Returns:
        Everything but `DROPPED_RESPONSE_HEADERS`.
    """
    kept: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        if key in DROPPED_RESPONSE_HEADERS:
            continue
        kept[key] = f"{kept[key]}, {value}" if key in kept else value
    return kept


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _describe_connect_error(exc: OSError) -> str:
    # trio's "all attempts to connect to ... failed" keeps the reasons in its
    # cause: name those instead, an operator needs "refused" vs "unreachable".
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        return "; ".join(dict.fromkeys(_describe(leaf) for leaf in cause.exceptions))
    return _describe(exc)


class _StaleConnection(Exception):
    """A reused connection failed before any byte of the answer arrived."""


@attrs.define(eq=False)
class _Connection:
    """One socket and its h11 state machine (`state`)."""

    stream: trio.SocketStream
    state: h11.Connection
    reused: bool = False
    idle_since: float = 0.0

    def close(self) -> None:
        # Synchronous on purpose: dropping an idle connection needs no checkpoint.
        self.stream.socket.close()


@attrs.frozen
class HttpPoolStatistics:
    """A snapshot of one pool's counters.

    Attributes:
        idle: Connections waiting on the idle stack now.
        opened: Connections opened since the pool was made.
        reused: Requests sent on an idle connection.
        retried: Requests sent again on a new connection because the idle
            one they were sent on turned out to be closed.
    """

    idle: int
    opened: int
    reused: int
    retried: int


@attrs.define(eq=False)
class HttpPoolResponse:
    """Owns the reading of one response body from its connection.

    Attributes:
        status_code: The backend's HTTP status.
        headers: Response headers to pass on (see `kept_response_headers`).
        url: The URL called.
        complete: The whole body has been read.
    """

    status_code: int
    headers: dict[str, str]
    url: str
    _stream: trio.SocketStream = attrs.field(repr=False)
    _conn: h11.Connection = attrs.field(repr=False)
    complete: bool = False

    @property
    def is_success(self) -> bool:
        """A 2xx status."""
        return 200 <= self.status_code < 300

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """Yield the body as the backend delivers it: what one socket read brings, as one piece.

        Raises:
            BackendBroken: The connection broke midway, or the body is malformed.
        """
        conn = self._conn
        try:
            while not self.complete:
                parts: list[bytes] = []
                while True:
                    event = conn.next_event()
                    if isinstance(event, h11.Data):
                        parts.append(event.data)
                    elif event is h11.NEED_DATA:
                        break
                    elif isinstance(event, h11.EndOfMessage):
                        self.complete = True
                        break
                    else:
                        raise h11.RemoteProtocolError(
                            f"unexpected {_event_name(event)} in the body"
                        )
                if parts:
                    # h11 hands out bytearrays; one join makes the piece bytes.
                    yield b"".join(parts)
                if not self.complete:
                    conn.receive_data(await self._stream.receive_some(_READ_SIZE))
        except _BROKEN as exc:
            raise BackendBroken(
                f"the backend broke the connection: {_describe(exc)}", redact_url(self.url)
            ) from exc

    async def read(self) -> bytes:
        """Read the whole body.

        Raises:
            BackendBroken: The connection broke midway, or the body is malformed.
        """
        return b"".join([piece async for piece in self.iter_bytes()])


def _event_name(event: object) -> str:
    return event.__name__ if isinstance(event, type) else type(event).__name__


@attrs.define(eq=False)
class HttpPool:
    """Owns the idle keep-alive connections to one ``http://`` backend.

    Build it with `HttpPool.for_url`. Connections in use belong to the
    `post` call that holds them; only idle ones are kept here, at most
    `max_idle`, the most recently used on top.

    Attributes:
        host: Host to connect to (an IPv6 literal without brackets).
        port: TCP port.
        prefix: The base URL's path, prepended to every request path.
        host_header: The ``Host`` header's value.
        authorization: ``Basic`` credentials from the base URL's userinfo,
            sent instead of any caller ``authorization`` (as httpx did).
        connect_timeout: Seconds to open a TCP connection.
        max_idle: Idle connections kept at most.
        idle_expiry: Seconds an idle connection may wait before it is dropped.
    """

    host: str
    port: int
    prefix: str
    host_header: bytes
    authorization: bytes | None = attrs.field(repr=False)
    connect_timeout: float
    max_idle: int
    idle_expiry: float = IDLE_EXPIRY_SECS
    _idle: deque[_Connection] = attrs.field(factory=deque, init=False)
    _opened: int = attrs.field(default=0, init=False)
    _reused: int = attrs.field(default=0, init=False)
    _retried: int = attrs.field(default=0, init=False)
    _closed: bool = attrs.field(default=False, init=False)

    @classmethod
    def for_url(
        cls,
        base_url: str,
        *,
        connect_timeout: float,
        max_idle: int,
        idle_expiry: float = IDLE_EXPIRY_SECS,
    ) -> "HttpPool":
        """A pool for the backend at `base_url`.

        Args:
            base_url: ``http://host[:port][/prefix]``, without trailing slash.
            connect_timeout: Seconds to open a TCP connection.
            max_idle: Idle connections kept at most.
            idle_expiry: Seconds an idle connection may wait before it is dropped.

        Returns:
            An empty pool.

        Raises:
            ValueError: `base_url` is not an ``http://`` URL with a host.
        """
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"HttpPool serves http:// URLs only, not {redact_url(base_url)!r}")
        host = parts.hostname
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
        netloc_host = f"[{host}]" if ":" in host else host
        port = parts.port or 80
        host_header = netloc_host if port == 80 else f"{netloc_host}:{port}"
        authorization = None
        if parts.username is not None or parts.password is not None:
            userinfo = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            authorization = b"Basic " + base64.b64encode(userinfo.encode("utf-8"))
        return cls(
            host=host,
            port=port,
            prefix=parts.path.rstrip("/"),
            host_header=host_header.encode("ascii"),
            authorization=authorization,
            connect_timeout=connect_timeout,
            max_idle=max_idle,
            idle_expiry=idle_expiry,
        )

    def statistics(self) -> HttpPoolStatistics:
        """A snapshot of the pool's counters."""
        return HttpPoolStatistics(len(self._idle), self._opened, self._reused, self._retried)

    def close(self) -> None:
        """Close every idle connection; a connection in use closes when its call ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()

    @asynccontextmanager
    async def post(
        self, path: str, body: bytes, headers: Mapping[str, str], *, url: str
    ) -> AsyncIterator[HttpPoolResponse]:
        """POST `body` to `path` and yield the response with its body still unread.

        Args:
            path: Absolute path (with any query), appended to the base URL's path.
            body: Request body, sent as is with a ``content-length``.
            headers: Request headers; framing and connection headers among
                them are replaced by the pool's own.
            url: The full URL, for error messages (its credentials are never shown).

        Yields:
            The open response. Leaving the block returns the connection to the
            pool if the exchange finished cleanly, and closes it otherwise.

        Raises:
            BackendUnreachable: No connection could be opened.
            BackendBroken: The request could not be sent or the answer was
                broken or malformed.
        """
        request = self._request(path, len(body), headers, url)
        conn = self._take_idle()
        if conn is None:
            conn = await self._connect(url)
        response: HttpPoolResponse | None = None
        try:
            try:
                response = await self._exchange(conn, request, body, url)
            except _StaleConnection:
                # The keep-alive race: the backend closed this idle connection
                # while the request was on its way. Once, on a new connection.
                conn.close()
                self._retried += 1
                conn = await self._connect(url)
                response = await self._exchange(conn, request, body, url)
            yield response
        finally:
            if response is not None and self._reusable(conn, response):
                conn.state.start_next_cycle()
                self._put_idle(conn)
            else:
                await trio.aclose_forcefully(conn.stream)

    def _request(self, path: str, length: int, headers: Mapping[str, str], url: str) -> h11.Request:
        head = [
            (b"host", self.host_header),
            (b"content-length", b"%d" % length),
            (b"accept-encoding", b"identity"),
        ]
        for name, value in headers.items():
            key = name.lower()
            if key in _NOT_FORWARDED or (self.authorization is not None and key == "authorization"):
                continue
            head.append((key.encode("latin-1"), value.encode("latin-1")))
        if self.authorization is not None:
            head.append((b"authorization", self.authorization))
        target = quote(self.prefix + path, safe=_TARGET_SAFE)
        try:
            return h11.Request(method=b"POST", target=target.encode("ascii"), headers=head)
        except h11.LocalProtocolError as exc:
            raise BackendBroken(
                f"the request cannot be sent to the backend: {_describe(exc)}", redact_url(url)
            ) from exc

    def _take_idle(self) -> _Connection | None:
        now = trio.current_time()
        while self._idle:
            conn = self._idle.pop()
            # Readable while idle: the backend closed it, or sent bytes nobody asked for.
            if now - conn.idle_since < self.idle_expiry and not conn.stream.socket.is_readable():
                self._reused += 1
                return conn
            conn.close()
        return None

    def _put_idle(self, conn: _Connection) -> None:
        now = trio.current_time()
        # The oldest wait at the bottom of the stack: drop the expired ones
        # there, so that a burst's leftovers do not linger until the next burst.
        while self._idle and now - self._idle[0].idle_since >= self.idle_expiry:
            self._idle.popleft().close()
        if self._closed or len(self._idle) >= self.max_idle:
            conn.close()
            return
        conn.reused = True
        conn.idle_since = now
        self._idle.append(conn)

    @staticmethod
    def _reusable(conn: _Connection, response: HttpPoolResponse) -> bool:
        state = conn.state
        if not (
            response.complete and state.our_state is h11.DONE and state.their_state is h11.DONE
        ):
            return False
        # Bytes past the answer put the stream out of step; and a body that
        # ended with the connection (no length, no chunks) leaves h11 DONE but
        # the socket closed.
        extra, closed = state.trailing_data
        return not extra and not closed

    async def _connect(self, url: str) -> _Connection:
        try:
            with trio.fail_after(self.connect_timeout):
                stream = await trio.open_tcp_stream(self.host, self.port)
        except trio.TooSlowError as exc:
            raise BackendUnreachable(
                f"cannot connect to the backend: no connection within {self.connect_timeout:g} s",
                redact_url(url),
            ) from exc
        except OSError as exc:
            raise BackendUnreachable(
                f"cannot connect to the backend: {_describe_connect_error(exc)}", redact_url(url)
            ) from exc
        self._opened += 1
        return _Connection(
            stream, h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD_SIZE)
        )

    async def _exchange(
        self, conn: _Connection, request: h11.Request, body: bytes, url: str
    ) -> HttpPoolResponse:
        """Send the request and read the answer's head (skipping 1xx answers).

        Raises:
            _StaleConnection: `conn` was reused and failed before any byte arrived.
            BackendBroken: Anything else went wrong.
        """
        state = conn.state
        answered = False  # a byte of the answer arrived: never send again
        out = [state.send(request)]
        if body:
            out.append(state.send(h11.Data(data=body)))
        out.append(state.send(h11.EndOfMessage()))
        try:
            await conn.stream.send_all(b"".join(filter(None, out)))
            while True:
                event = state.next_event()
                if event is h11.NEED_DATA:
                    data = await conn.stream.receive_some(_READ_SIZE)
                    if not data and not answered:
                        if conn.reused:
                            raise _StaleConnection
                        raise BackendBroken(
                            "the backend closed the connection before answering", redact_url(url)
                        )
                    answered = True
                    state.receive_data(data)
                elif isinstance(event, h11.Response):
                    headers = kept_response_headers(
                        (name.decode("latin-1"), value.decode("latin-1"))
                        for name, value in event.headers
                    )
                    return HttpPoolResponse(event.status_code, headers, url, conn.stream, state)
                elif not isinstance(event, h11.InformationalResponse):
                    raise h11.RemoteProtocolError(
                        f"unexpected {_event_name(event)} before the response"
                    )
        except trio.BrokenResourceError as exc:
            if conn.reused and not answered:
                raise _StaleConnection from exc
            raise BackendBroken(
                f"the backend broke the connection: {_describe(exc)}", redact_url(url)
            ) from exc
        except _BROKEN as exc:
            raise BackendBroken(
                f"the backend broke the connection: {_describe(exc)}", redact_url(url)
            ) from exc
