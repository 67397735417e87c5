"""Socket writes and reads that skip trio's scheduler trip when the kernel can act at once.

trio yields to its run loop after every socket operation, also one that
completed without waiting (a checkpoint: one more loop iteration, one more
``epoll_wait``). On both daemons' hot paths (the relay's client and worker
sockets, the agent's requests to its backend and frames to the relay) the
kernel almost always takes or has the bytes at once, so these try the
non-blocking descriptor directly and go through trio only for what it could
not do.

`DIRECT_IO` is read at every call (as ``sockio.DIRECT_IO``), so a test can
turn it off to run the portable branch (trio's own ``send_all`` and
``receive_some``) on Linux too.
"""

from __future__ import annotations

import os

import trio

__all__ = ["DIRECT_IO", "read_now", "read_when_ready", "send_all", "write_now"]

DIRECT_IO = os.name == "posix"
"""os.write()/os.read() work on a socket's descriptor on POSIX, not on Windows."""


def write_now(stream: trio.SocketStream, data: bytes | bytearray | memoryview) -> int:
    """Write what the kernel takes of `data` at once; how many bytes that was.

    Never blocks and never yields: 0 when the socket's buffer is full, or
    always without direct I/O. The caller must be the socket's only writer
    at that moment.

    Raises:
        trio.BrokenResourceError: The peer is gone (EPIPE, ECONNRESET, EBADF).
    """
    if not DIRECT_IO:
        return 0
    try:
        return os.write(stream.socket.fileno(), data)
    except BlockingIOError:
        return 0
    except OSError as exc:  # EPIPE, ECONNRESET, EBADF: as send_all would say
        raise trio.BrokenResourceError(str(exc)) from exc


async def send_all(stream: trio.SocketStream, data: bytes | bytearray | memoryview) -> None:
    """`stream.send_all`, without the scheduler trip when the kernel takes every byte.

    The caller must be the socket's only writer (one task, or under a lock):
    nothing else may interleave with the direct write.

    Raises:
        trio.BrokenResourceError: The peer is gone (EPIPE, ECONNRESET, EBADF).
    """
    if DIRECT_IO:
        sent = write_now(stream, data)
        if sent == len(data):
            return
        if sent:
            data = memoryview(data)[sent:]
    await stream.send_all(data)


def read_now(stream: trio.SocketStream, max_bytes: int) -> bytes | None:
    """Bytes already waiting in the socket (``b""`` at EOF), or None when none are.

    Never blocks and never yields; the caller decides when to wait through trio.

    Raises:
        trio.BrokenResourceError: The peer reset the connection, or the socket is closed.
    """
    if not DIRECT_IO:
        return None
    try:
        return os.read(stream.socket.fileno(), max_bytes)
    except BlockingIOError:
        return None
    except OSError as exc:  # ECONNRESET, EBADF: as receive_some would say
        raise trio.BrokenResourceError(str(exc)) from exc


async def read_when_ready(stream: trio.SocketStream, max_bytes: int) -> bytes:
    """Wait until the socket is readable, then read: `stream.receive_some` without
    its first read, which fails whenever nothing is waiting yet (the usual case
    for the next piece of a stream). Always a checkpoint.

    Raises:
        trio.BrokenResourceError: The peer reset the connection.
        trio.ClosedResourceError: The socket was closed meanwhile.
    """
    if DIRECT_IO:
        fd = stream.socket.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the socket was closed")
        await trio.lowlevel.wait_readable(fd)
        data = read_now(stream, max_bytes)
        if data is not None:
            return data
    return await stream.receive_some(max_bytes)
