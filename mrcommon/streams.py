"""`SocketStreamWrapper`: a trio stream over one `trio.SocketStream` that passes every call on.

Both daemons wrap a socket stream to change one or two calls and keep the
rest: the agent's direct-I/O stream to the relay (reads and writes that skip
trio's scheduler trip), the relay's stream that replays bytes it already read
before handing a connection to Hypercorn. A subclass overrides what it
changes; everything else, and the ``socket`` attribute that trio-websocket
and Hypercorn look for, comes from here.
"""

from __future__ import annotations

import trio

__all__ = ["SocketStreamWrapper"]


class SocketStreamWrapper(trio.abc.HalfCloseableStream):
    """Owns nothing but the wrapped stream; each method calls the same one on it.

    Attributes:
        socket: The wrapped stream's socket (peer addresses, its descriptor).
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self.socket = stream.socket

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self._stream.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()
