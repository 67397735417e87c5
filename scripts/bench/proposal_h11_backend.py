"""Proposal P1, as a working prototype: the agent's backend POST path on h11 + trio sockets.

Not used by the agent: `agent_variant.py` patches it in so that the bench can
measure it (``BENCH_AGENT_VARIANT=h11``). Meant to move into
`agent/backend.py` (see docs/benchmarks.md, "Proposed changes"):

- one keep-alive pool per backend, idle connections on a LIFO stack: O(1)
  per request, whatever the number of open streams (httpcore 1.0.9 scans
  every connection, quadratically, on every request start and end);
- the body is yielded one *socket read* at a time (every h11 ``Data`` event
  that read produced, joined), so the agent's per-piece work runs once per
  read instead of once per HTTP chunk;
- a connection is reused only when both sides finished the exchange
  cleanly; anything else (cancellation included) closes it at once, so the
  backend sees the client leave; an idle connection the backend closed
  (readable while idle) is dropped instead of reused;
- ``accept-encoding: identity``: the agent never has to decompress (the
  relay drops ``content-encoding`` anyway);
- errors map to the same `BackendError` classes as `agent.backend._translate`.

Plain ``http://`` backends only; ``https://`` (and GET for discovery) stay
on httpx.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import h11
import trio
from agent.backend import _DROPPED_RESPONSE_HEADERS
from agent.config import redact_url
from agent.errors import BackendBroken, BackendUnreachable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

_READ_SIZE = 65536
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
_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError, OSError)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class H11Response:
    """The surface of `agent.backend.BackendResponse`: status, headers, url, iter_bytes, read."""

    def __init__(
        self,
        status_code: int,
        headers: dict[str, str],
        url: str,
        stream: trio.SocketStream,
        conn: h11.Connection,
    ) -> None:
        self.status_code = status_code
        self.headers = headers
        self.url = url
        self._stream = stream
        self._conn = conn
        self.complete = False  # the whole body was read

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """Everything each socket read brings, as one piece; raises BackendBroken midway."""
        conn = self._conn
        try:
            while True:
                parts = []
                while True:
                    event = conn.next_event()
                    if type(event) is h11.Data:
                        parts.append(event.data)
                    elif event is h11.NEED_DATA:
                        break
                    elif type(event) is h11.EndOfMessage:
                        self.complete = True
                        if parts:
                            yield b"".join(parts)
                        return
                    else:  # ConnectionClosed, or a protocol violation
                        raise h11.RemoteProtocolError(
                            f"unexpected {type(event).__name__} in the body"
                        )
                if parts:
                    yield parts[0] if len(parts) == 1 else b"".join(parts)
                conn.receive_data(await self._stream.receive_some(_READ_SIZE))
        except _BROKEN as exc:
            raise BackendBroken(
                f"the backend broke the connection: {_describe(exc)}", redact_url(self.url)
            ) from exc

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self.iter_bytes()])


class H11Pool:
    """Keep-alive HTTP/1.1 connections to one ``http://`` backend."""

    def __init__(
        self, base_url: str, connect_timeout: float, max_idle: int, idle_expiry: float = 5.0
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"H11Pool serves http:// URLs only, not {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = (host if parts.port is None else f"{host}:{parts.port}").encode("ascii")
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.idle_expiry = idle_expiry
        self._idle: list[tuple[float, trio.SocketStream, h11.Connection]] = []

    def _take_idle(self) -> tuple[trio.SocketStream, h11.Connection] | None:
        now = trio.current_time()
        while self._idle:
            since, stream, conn = self._idle.pop()
            # Readable while idle: the backend closed it (or sent junk). Expired: drop it.
            if now - since < self.idle_expiry and not stream.socket.is_readable():
                return stream, conn
            stream.socket.close()
        return None

    async def _connect(self, url: str) -> tuple[trio.SocketStream, h11.Connection]:
        try:
            with trio.fail_after(self.connect_timeout):
                stream = await trio.open_tcp_stream(self.host, self.port)
        except (OSError, trio.TooSlowError) as exc:
            raise BackendUnreachable(
                f"cannot connect to the backend: {_describe(exc)}", redact_url(url)
            ) from exc
        return stream, h11.Connection(h11.CLIENT)

    @asynccontextmanager
    async def post(
        self, path: str, body: bytes, headers: Mapping[str, str], url: str
    ) -> AsyncIterator[H11Response]:
        head = [
            (b"host", self.host_header),
            (b"content-length", b"%d" % len(body)),
            (b"accept-encoding", b"identity"),
        ]
        head += [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in headers.items()
            if name.lower() not in _NOT_FORWARDED
        ]
        stream, conn = self._take_idle() or await self._connect(url)
        response: H11Response | None = None
        try:
            try:
                await stream.send_all(
                    conn.send(
                        h11.Request(
                            method=b"POST", target=(self.prefix + path).encode(), headers=head
                        )
                    )
                    + conn.send(h11.Data(data=body))
                    + conn.send(h11.EndOfMessage())
                )
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(_READ_SIZE))
                    elif type(event) is h11.Response:
                        break
                    elif type(event) is h11.InformationalResponse:
                        continue
                    else:
                        raise h11.RemoteProtocolError(
                            f"unexpected {type(event).__name__} before the response"
                        )
            except _BROKEN as exc:
                raise BackendBroken(
                    f"the backend broke the connection: {_describe(exc)}", redact_url(url)
                ) from exc
            kept: dict[str, str] = {}
            for raw_name, raw_value in event.headers:
                name = raw_name.decode("latin-1")  # h11 lower-cases names
                if name in _DROPPED_RESPONSE_HEADERS:
                    continue
                value = raw_value.decode("latin-1")
                kept[name] = f"{kept[name]}, {value}" if name in kept else value
            response = H11Response(event.status_code, kept, url, stream, conn)
            yield response
        finally:
            reusable = (
                response is not None
                and response.complete
                and conn.our_state is h11.DONE
                and conn.their_state is h11.DONE
                and len(self._idle) < self.max_idle
            )
            if reusable:
                conn.start_next_cycle()
                self._idle.append((trio.current_time(), stream, conn))
            else:
                await trio.aclose_forcefully(stream)
