"""The worker socket on the builtin front: RFC 6455 over the raw socket, as the hub's `Transport`.

`relay.wsframes` parses and builds the frames (no I/O); this module owns the
socket: the handshake's checks and answer, reading frames straight from the
kernel, answering pings and close frames, and one lock for writes. Who may
connect, and what a connection does, is `relay.worker_socket.WorkerSocket`'s.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

import trio

import wire
from mrcommon import closecodes, sockio
from relay import wsframes
from relay.front.http1 import MAX_RECV, head_lines
from relay.worker_hub import TransportClosed

if TYPE_CHECKING:
    import h11

__all__ = ["DIRECT_READS", "WebSocketExchange", "handshake_refusal"]

_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError)
DIRECT_READS = 16
"""Reads from an agent served straight from the kernel in a row before one checkpoint."""


def handshake_refusal(request: h11.Request) -> tuple[int, str] | None:
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


class WebSocketExchange:
    """One worker's socket: the hub's `Transport`, framed by `relay.wsframes` on the raw socket.

    The hub's session calls it directly (no ASGI messages, no task or channel
    between the socket and the hub's reader). `receive` is called by one task
    (the session's reader) and answers pings and close frames itself; `send`
    by the session's writer. Both write under one lock, so frames never
    interleave. A frame that breaks RFC 6455 closes the socket with the code
    it calls for (1002, 1007, or 1009 past `max_message`).

    It is the one place that holds the connection's state: `gone` (the
    agent left, broke the framing, or a write failed) and `closed` (our close
    frame, or an HTTP answer, went out). After either, `send` raises
    `TransportClosed` and `aclose` does nothing.
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
        self.closed = False
        self.gone = False
        self._leftover = leftover
        self._pending: list[wsframes.Message | wsframes.Ping | wsframes.Close] = []
        self._lock = trio.Lock()
        self._direct_reads = 0  # reads in a row that did not checkpoint

    async def accept(self) -> None:
        """Answer the upgrade with 101 Switching Protocols."""
        key = dict(self.request.headers)[b"sec-websocket-key"]
        await self._write(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
            b"connection: Upgrade\r\nsec-websocket-accept: %b\r\ndate: %b\r\n\r\n"
            % (wsframes.accept_key(key), self.date)
        )

    async def refuse(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Answer the upgrade with a plain HTTP response, and end the connection."""
        lines = head_lines(status, headers, self.date)
        lines.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.closed = True
        await self._write(b"".join(lines) + body)

    async def send(self, text: str) -> None:
        """One text frame to the agent.

        Raises:
            TransportClosed: The connection is gone or closed, or the write failed.
        """
        if self.gone or self.closed:
            raise TransportClosed
        await self._write(wsframes.frame(wsframes.TEXT, text.encode("utf-8")))
        if self.gone:
            raise TransportClosed

    async def receive(self) -> str | bytes:
        """The agent's next whole message, text or binary.

        Raises:
            TransportClosed: The agent closed or left.
            wire.ProtocolError: The agent broke the framing (RFC 6455, or the
                size bound); our close frame with the code it calls for has
                gone out.
        """
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
                    # The worker's protocol error (counted and logged by its
                    # session), like a frame the wire protocol cannot decode.
                    raise wire.ProtocolError(f"framing: {exc.reason}") from None
                self._pending.reverse()
                continue
            event = self._pending.pop()
            if type(event) is wsframes.Message:
                return event.data
            if type(event) is wsframes.Ping:
                await self._write(wsframes.frame(wsframes.PONG, event.payload))
            elif type(event) is wsframes.Close:
                # Answer the peer's close with its code (1000 if it gave none).
                code = closecodes.NORMAL if event.code == closecodes.NO_STATUS else event.code
                await self._close(code, "")
                break
        # Nothing follows: a later receive() must not wait for bytes that never come.
        self.gone = True
        raise TransportClosed

    async def aclose(self, code: int, reason: str) -> None:
        """Our close frame, unless the connection is already gone or closed."""
        if not self.gone:
            await self._close(code, reason)

    async def _read(self) -> bytes:
        """The next bytes from the agent: straight from the kernel when they are
        waiting, but through a checkpoint at least every `DIRECT_READS` reads,
        so that an agent that never pauses cannot keep the loop from its other
        tasks (the hub's reader does not otherwise yield between frames)."""
        data = sockio.read_now(self.stream, MAX_RECV)
        if data is None:
            self._direct_reads = 0
            return await sockio.read_when_ready(self.stream, MAX_RECV)
        self._direct_reads += 1
        if self._direct_reads >= DIRECT_READS:
            self._direct_reads = 0
            await trio.lowlevel.checkpoint()
        return data

    async def _close(self, code: int, reason: str) -> None:
        if not self.closed:
            # Set first: a close cancelled mid-write has still happened.
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
            await sockio.send_all(self.stream, data)
        except _BROKEN:
            self.gone = True
        finally:
            self._lock.release()
