"""WebSocket framing for the server side of the worker socket (RFC 6455), sans I/O.

Every streamed chunk crosses the worker socket as one text frame, so the
relay parses frames on its hottest path. wsproto spends ~30 µs on one small
masked frame here (a generator per frame, an object per step); this reader
spends ~4 µs. It is strict where the RFC says a server must be: client frames
must be masked, no extension is negotiated (RSV bits clear), control frames
are short and whole, fragments follow the rules, text is valid UTF-8, and a
message is bounded. A violation is a `FrameError` carrying the close code to
answer with (1002 protocol error, 1007 bad UTF-8, 1009 too big).

The handshake itself is `accept_key`; the caller writes the 101.
"""

from __future__ import annotations

import base64
import hashlib

from mrcommon.closecodes import (
    INVALID_DATA,
    MESSAGE_TOO_BIG,
    NO_STATUS,
    PROTOCOL_ERROR,
    SENDABLE,
)

__all__ = [
    "CLOSE",
    "PING",
    "PONG",
    "Close",
    "FrameError",
    "FrameReader",
    "Message",
    "Ping",
    "accept_key",
    "close_frame",
    "frame",
]

CONTINUATION = 0x0
TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA


_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_CONTROL = 125


class FrameError(Exception):
    """The peer broke the framing rules; close the connection with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Message:
    """A whole data message: `data` is ``str`` for text, ``bytes`` for binary."""

    __slots__ = ("data",)

    def __init__(self, data: str | bytes) -> None:
        self.data = data


class Ping:
    """A ping; answer with a pong carrying `payload`."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class Close:
    """The peer's close frame."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


def accept_key(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` value for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final frame (a server never masks)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is cut to fit the 125-byte control payload."""
    text = reason.encode("utf-8")[: _MAX_CONTROL - 2].decode("utf-8", "ignore").encode("utf-8")
    return frame(CLOSE, code.to_bytes(2, "big") + text)


_XOR_TABLES = [bytes(byte ^ key for byte in range(256)) for key in range(256)]


def _unmask(data: bytearray, mask: bytes) -> bytes | bytearray:
    """Unmask `data` (a fresh copy, changed in place when that is faster)."""
    n = len(data)
    if n < 512:
        # One XOR of two integers: fastest for the small frames of a stream.
        key = (mask * ((n >> 2) + 1))[:n]
        return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(
            n, "little"
        )
    # Every 4th byte through a translation table: twice as fast for large frames.
    for i in range(4):
        data[i::4] = data[i::4].translate(_XOR_TABLES[mask[i]])
    return data


class FrameReader:
    """Parses client frames from the bytes fed to it.

    Attributes:
        max_message: Largest data message accepted, in bytes (1009 past it).
    """

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._buffer = bytearray()
        self._opcode: int | None = None  # of the data message being assembled
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> list[Message | Ping | Close]:
        """Add bytes; return every complete message or control frame they finish.

        Raises:
            FrameError: The peer broke the framing rules.
        """
        buffer = self._buffer
        buffer += data
        out: list[Message | Ping | Close] = []
        while len(buffer) >= 2:
            b0, b1 = buffer[0], buffer[1]
            if b0 & 0x70:
                raise FrameError(PROTOCOL_ERROR, "reserved bits set without an extension")
            if not b1 & 0x80:
                raise FrameError(PROTOCOL_ERROR, "client frames must be masked")
            length = b1 & 0x7F
            start = 2
            if length == 126:
                if len(buffer) < 4:
                    break
                length = int.from_bytes(buffer[2:4], "big")
                start = 4
            elif length == 127:
                if len(buffer) < 10:
                    break
                length = int.from_bytes(buffer[2:10], "big")
                if length >> 63:
                    raise FrameError(PROTOCOL_ERROR, "frame length has its top bit set")
                start = 10
            opcode = b0 & 0x0F
            final = bool(b0 & 0x80)
            if opcode >= CLOSE:
                if not final or length > _MAX_CONTROL:
                    raise FrameError(PROTOCOL_ERROR, "control frames must be final and short")
            elif self._size + length > self.max_message:
                raise FrameError(MESSAGE_TOO_BIG, f"message larger than {self.max_message} bytes")
            end = start + 4 + length
            if len(buffer) < end:
                break
            payload = _unmask(buffer[start + 4 : end], bytes(buffer[start : start + 4]))
            del buffer[:end]
            event = self._frame(opcode, final, payload)
            if event is not None:
                out.append(event)
        return out

    def _frame(
        self, opcode: int, final: bool, payload: bytes | bytearray
    ) -> Message | Ping | Close | None:
        if opcode in (TEXT, BINARY):
            if self._opcode is not None:
                raise FrameError(PROTOCOL_ERROR, "a new message began inside a fragmented one")
            if final:
                return _message(opcode, payload)
            self._opcode = opcode
            self._parts = [bytes(payload)]
            self._size = len(payload)
            return None
        if opcode == CONTINUATION:
            if self._opcode is None:
                raise FrameError(PROTOCOL_ERROR, "continuation frame without a message")
            self._parts.append(bytes(payload))
            self._size += len(payload)
            if not final:
                return None
            whole, kind = b"".join(self._parts), self._opcode
            self._opcode, self._parts, self._size = None, [], 0
            return _message(kind, whole)
        if opcode == PING:
            return Ping(bytes(payload))
        if opcode == PONG:
            return None
        if opcode == CLOSE:
            return _close(payload)
        raise FrameError(PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")


def _message(opcode: int, payload: bytes | bytearray) -> Message:
    if opcode == BINARY:
        return Message(bytes(payload))
    try:
        return Message(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise FrameError(INVALID_DATA, "text message is not valid UTF-8") from None


def _close(payload: bytes | bytearray) -> Close:
    if not payload:
        return Close(NO_STATUS, "")
    if len(payload) == 1:
        raise FrameError(PROTOCOL_ERROR, "close frame with a one-byte payload")
    code = int.from_bytes(payload[:2], "big")
    # Codes 3000-4999 are for libraries and applications (RFC 6455 7.4.2).
    if code not in SENDABLE and not 3000 <= code <= 4999:
        raise FrameError(PROTOCOL_ERROR, f"close code {code} may not be sent")
    try:
        return Close(code, payload[2:].decode("utf-8"))
    except UnicodeDecodeError:
        raise FrameError(INVALID_DATA, "close reason is not valid UTF-8") from None
