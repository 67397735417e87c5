"""Keep-alive HTTP/1.1 connections to an ``http://`` backend, on httptools and trio sockets.

This is the agent's hot path: every relayed POST to a plain-HTTP backend goes
through `HttpPool.post`. It does what httpx + httpcore did for it at a
fraction of their CPU (docs/benchmarks.md), and nothing more. The request
head is a few bytes joined by hand; the answer is parsed by llhttp (C, through
httptools, as in uvicorn), whose callbacks only collect what it found. (h11
did both before, and was ~20 % of the agent's CPU: it validates and parses
event by event in Python.)

- idle connections wait on a LIFO stack, so taking and returning one is
  O(1) whatever the number of open streams (httpcore 1.0.9 scans every
  connection on every request start and end: encode/httpcore#1035);
- a connection goes back on the stack only when both sides finished the
  exchange cleanly, the whole body was read, the backend speaks HTTP/1.1
  and kept the connection open, and nothing came after the answer. Anything
  else (an early exit, an exception, a cancellation) closes its socket at
  once, so the backend sees the client leave and stops generating;
- an idle connection that turned readable (the backend closed it, or sent
  bytes nobody asked for) or that waited longer than `IDLE_EXPIRY_SECS`
  is dropped instead of reused; when a reused one fails anyway before any
  byte of the answer arrived (the backend closed it while the request was
  on its way), the request goes once more on a new connection;
- 1xx answers are skipped; response heads (1xx ones included) are refused
  past 100 KiB; a body without a length or chunks ends with the connection;
- the body is yielded one socket read at a time (every piece llhttp found
  in that read, joined), so the agent's per-piece work runs once per read,
  not once per HTTP chunk;
- a forwarded header whose name is not a token or whose value holds a
  control character (CR, LF, NUL...) is refused, so a caller cannot inject
  a header or a request;
- ``accept-encoding: identity``: the agent never decompresses.

Failures are raised as `agent.errors.BackendError` subclasses whose messages
carry the URL without credentials.
"""

import base64
import re
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from urllib.parse import quote, unquote, urlsplit

import attrs
import httptools
import trio

from agent.config import redact_url
from agent.errors import BackendBroken, BackendUnreachable
from mrcommon.sockio import read_when_ready, send_all

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

# The response heads of one exchange (1xx ones included) larger than this are
# refused (httpcore, which the agent used before h11, allowed 100 KiB).
# llhttp sets no bound of its own.
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

# What a forwarded header must look like (RFC 9110 §5.1, §5.5; what h11
# checked before): a token for a name, and for a value visible Latin-1
# characters, spaces and tabs. No CR, LF or NUL: nothing can end the line early.
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")

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


class _BadAnswer(Exception):
    """The answer breaks HTTP/1.1 (malformed, truncated, too large); the message says how."""


class _PastTheAnswer(Exception):
    """A message began after the answer ended: raised to stop llhttp right there."""


# What a dead or misbehaving peer raises while we read or write. trio's
# SocketStream turns socket errors into BrokenResourceError.
_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError, _BadAnswer)


def _broken(exc: Exception, url: str) -> BackendBroken:
    reason = str(exc) if isinstance(exc, _BadAnswer) else _describe(exc)
    return BackendBroken(f"the backend broke the connection: {reason}", redact_url(url))


@attrs.define(eq=False)
class _Answer:
    """Owns the parsing of one answer: its llhttp parser, and what the callbacks found.

    llhttp calls the ``on_*`` methods from within `feed`. They only record;
    the pool reads the record after each `feed`.

    Attributes:
        status_code: The final (non-1xx) status, once `head_done`.
        headers: The final head's raw header pairs (1xx heads and trailers are dropped).
        head_size: Bytes of reason phrases and header lines seen, 1xx heads included.
        head_done: The final head has been parsed.
        body: Body pieces parsed since the caller last took them.
        complete: The final message ended.
        keep_alive: The connection may carry another exchange (HTTP/1.1, no
            ``Connection: close``); known once `complete`.
        extra: Bytes came after the end of the answer.
        switching: The backend answered 101 Switching Protocols.
    """

    parser: httptools.HttpResponseParser = attrs.field(init=False, repr=False)
    status_code: int = 0
    headers: list[tuple[bytes, bytes]] = attrs.field(factory=list)
    head_size: int = 0
    head_done: bool = False
    body: list[bytes] = attrs.field(factory=list)
    complete: bool = False
    keep_alive: bool = False
    extra: bool = False
    switching: bool = False

    @classmethod
    def start(cls) -> "_Answer":
        """An answer with nothing parsed yet."""
        answer = cls()
        answer.parser = httptools.HttpResponseParser(answer)
        return answer

    def feed(self, data: bytes) -> None:
        """Parse one socket read; none may follow once the answer is `complete`.

        Raises:
            _BadAnswer: The answer is malformed.
        """
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if not self.complete:
                if self.switching:
                    raise _BadAnswer("it answered 101 Switching Protocols to a POST") from exc
                raise _BadAnswer(f"malformed response ({_describe(exc)})") from exc
            # llhttp stopped at bytes past the answer: a message (on_message_begin
            # raised) or junk. The answer stands; the connection is out of step.
            self.extra = True
        if self.complete:
            # Nothing more to parse. The parser refers back to this answer through
            # its callbacks: without it, refcounting frees both at once, rather
            # than the cycle collector later (~1 us a request).
            del self.parser

    def ends_with_close(self) -> bool:
        """The body has neither a length nor chunks: it ends with the connection (RFC 9112 §6.3)."""
        for name, value in self.headers:
            key = name.lower()
            if key == b"content-length":
                return False
            if key == b"transfer-encoding" and value.rstrip(b" \t").lower().endswith(b"chunked"):
                return False
        return True

    def kept_headers(self) -> dict[str, str]:
        """The final head's headers worth passing on (see `kept_response_headers`)."""
        # llhttp strips the whitespace before a value, not after it.
        return kept_response_headers(
            (name.decode("latin-1"), value.decode("latin-1").rstrip(" \t"))
            for name, value in self.headers
        )

    # --- llhttp callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            raise _PastTheAnswer

    def on_status(self, status: bytes) -> None:
        self.head_size += len(status)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head_done:  # after the head: chunked trailers, dropped
            self.head_size += len(name) + len(value) + 4
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            # llhttp ends a 1xx message with its head and parses the next one.
            self.headers.clear()
            self.switching = status == 101
            return
        self.status_code = status
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.head_done:  # not a 1xx
            self.complete = True
            parser = self.parser
            # HTTP/1.0 never (as with h11), even when it says keep-alive.
            self.keep_alive = parser.should_keep_alive() and parser.get_http_version() == "1.1"


@attrs.define(eq=False)
class _Connection:
    """One socket to the backend, and when it went idle."""

    stream: trio.SocketStream
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
    _answer: _Answer = attrs.field(repr=False)
    complete: bool = False

    @property
    def is_success(self) -> bool:
        """A 2xx status."""
        return 200 <= self.status_code < 300

    @property
    def reusable(self) -> bool:
        """Its connection can carry another exchange: the body was read to a clean end."""
        answer = self._answer
        return self.complete and answer.keep_alive and not answer.extra

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """Yield the body as the backend delivers it: what one socket read brings, as one piece.

        Raises:
            BackendBroken: The connection broke midway, or the body is malformed.
        """
        answer = self._answer
        pieces = answer.body
        try:
            while not self.complete:
                if pieces:
                    piece = pieces[0] if len(pieces) == 1 else b"".join(pieces)
                    pieces.clear()
                    yield piece
                if answer.complete:
                    self.complete = True
                    break
                data = await read_when_ready(self._stream, _READ_SIZE)
                if data:
                    answer.feed(data)
                elif answer.ends_with_close():
                    answer.complete = True  # keep_alive stays False: the socket is closed
                else:
                    raise _BadAnswer("it closed the connection before the body ended")
        except _BROKEN as exc:
            raise _broken(exc, self.url) from exc

    async def read(self) -> bytes:
        """Read the whole body.

        Raises:
            BackendBroken: The connection broke midway, or the body is malformed.
        """
        return b"".join([piece async for piece in self.iter_bytes()])


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
        if not host_header.isprintable() or " " in host_header:
            # It goes into every request head as it is.
            raise ValueError(f"invalid host in {redact_url(base_url)!r}")
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
            BackendBroken: A header cannot be sent (see `_request`), the
                request could not be sent, or the answer was broken or malformed.
        """
        request = self._request(path, len(body), headers, url) + body
        conn = self._take_idle()
        if conn is None:
            conn = await self._connect(url)
        response: HttpPoolResponse | None = None
        try:
            try:
                response = await self._exchange(conn, request, url)
            except _StaleConnection:
                # The keep-alive race: the backend closed this idle connection
                # while the request was on its way. Once, on a new connection.
                conn.close()
                self._retried += 1
                conn = await self._connect(url)
                response = await self._exchange(conn, request, url)
            yield response
        finally:
            if response is not None and response.reusable:
                self._put_idle(conn)
            else:
                await trio.aclose_forcefully(conn.stream)

    def _request(self, path: str, length: int, headers: Mapping[str, str], url: str) -> bytes:
        """The request head, ``POST <target> HTTP/1.1`` to the blank line.

        Raises:
            BackendBroken: A forwarded header's name is not a token, or its
                value holds a control or non-Latin-1 character.
        """
        target = quote(self.prefix + path, safe=_TARGET_SAFE).encode("ascii")
        lines = [
            b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-length: %d\r\naccept-encoding: identity\r\n"
            % (target, self.host_header, length)
        ]
        authorization = self.authorization
        for name, value in headers.items():
            key = name.lower()
            if key in _NOT_FORWARDED or (authorization is not None and key == "authorization"):
                continue
            if _TOKEN.fullmatch(key) is None:
                raise BackendBroken(
                    f"the request cannot be sent to the backend: invalid header name {name!r}",
                    redact_url(url),
                    public=True,
                )
            if _FIELD_VALUE.fullmatch(value) is None:
                # Never the value itself in the message: it may be a credential.
                raise BackendBroken(
                    f"the request cannot be sent to the backend: the {key} header holds"
                    " a control character or a character outside Latin-1",
                    redact_url(url),
                    public=True,
                )
            lines.append(f"{key}: {value}\r\n".encode("latin-1"))
        if authorization is not None:
            lines.append(b"authorization: %s\r\n" % authorization)
        lines.append(b"\r\n")
        return b"".join(lines)

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
        return _Connection(stream)

    async def _exchange(self, conn: _Connection, request: bytes, url: str) -> HttpPoolResponse:
        """Send the request and read the answer's head (skipping 1xx answers).

        Raises:
            _StaleConnection: `conn` was reused and failed before any byte arrived.
            BackendBroken: Anything else went wrong.
        """
        answer = _Answer.start()
        received = 0  # bytes of the answer so far: once one arrived, never send again
        try:
            await send_all(conn.stream, request)
            while not answer.head_done:
                data = await read_when_ready(conn.stream, _READ_SIZE)
                if not data:
                    if received:
                        raise _BadAnswer("it closed the connection in the middle of the head")
                    if conn.reused:
                        raise _StaleConnection
                    raise BackendBroken(
                        "the backend closed the connection before answering",
                        redact_url(url),
                        public=True,
                    )
                received += len(data)
                answer.feed(data)
                # While the head is incomplete, all that arrived is head; llhttp
                # itself would buffer a header line of any length.
                if answer.head_size > _MAX_HEAD_SIZE or (
                    not answer.head_done and received > _MAX_HEAD_SIZE
                ):
                    raise _BadAnswer(
                        f"its response head is larger than {_MAX_HEAD_SIZE // 1024} KiB"
                    )
        except trio.BrokenResourceError as exc:
            if conn.reused and not received:
                raise _StaleConnection from exc
            raise _broken(exc, url) from exc
        except _BROKEN as exc:
            raise _broken(exc, url) from exc
        return HttpPoolResponse(answer.status_code, answer.kept_headers(), url, conn.stream, answer)
