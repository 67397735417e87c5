"""mrcommon.sockio on real socket pairs, with direct I/O and without (portable)."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from mrcommon import sockio

pytestmark = pytest.mark.usefixtures("direct_io")


async def _pair() -> tuple[trio.SocketStream, trio.socket.SocketType]:
    ours, theirs = trio.socket.socketpair()
    return trio.SocketStream(ours), theirs


async def test_send_all_delivers_every_byte_also_past_the_socket_buffer(nursery) -> None:
    stream, theirs = await _pair()
    data = bytes(range(256)) * 2000  # more than one write's worth
    received = bytearray()
    done = trio.Event()

    async def read() -> None:
        while len(received) < len(data):
            received.extend(await theirs.recv(65536))
        done.set()

    nursery.start_soon(read)
    with trio.fail_after(5):
        await sockio.send_all(stream, data)
        await done.wait()
    assert bytes(received) == data
    await stream.aclose()
    theirs.close()


async def test_send_all_to_a_gone_peer_is_broken_resource() -> None:
    stream, theirs = await _pair()
    theirs.close()
    with pytest.raises(trio.BrokenResourceError):  # noqa: PT012 - the first writes may be taken
        for _ in range(10):
            await sockio.send_all(stream, b"x" * 65536)
    await stream.aclose()


async def test_write_now_takes_what_fits_and_never_waits(direct_io) -> None:
    stream, theirs = await _pair()
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = b"x" * 1_000_000
    with trio.testing.assert_no_checkpoints():
        first = sockio.write_now(stream, big)
        second = sockio.write_now(stream, big)  # nobody read: the buffer is full
    if direct_io:
        assert 0 < first < len(big)
        assert second == 0
    else:
        assert first == second == 0  # only trio writes without direct I/O
    theirs.close()
    if direct_io:
        with pytest.raises(trio.BrokenResourceError):
            sockio.write_now(stream, b"y")
    await stream.aclose()


async def test_read_now_never_waits(direct_io) -> None:
    stream, theirs = await _pair()
    with trio.testing.assert_no_checkpoints():
        assert sockio.read_now(stream, 100) is None  # nothing waiting (or no direct I/O)
    await theirs.send(b"hello")
    expected = b"hello" if direct_io else None
    with trio.testing.assert_no_checkpoints():
        assert sockio.read_now(stream, 100) == expected
    theirs.close()
    if direct_io:
        assert sockio.read_now(stream, 100) == b""  # EOF
    await stream.aclose()


async def test_read_when_ready_waits_for_bytes_and_sees_eof(nursery) -> None:
    stream, theirs = await _pair()

    async def later() -> None:
        await trio.testing.wait_all_tasks_blocked()
        await theirs.send(b"late")
        theirs.close()

    nursery.start_soon(later)
    with trio.fail_after(5), trio.testing.assert_checkpoints():
        assert await sockio.read_when_ready(stream, 100) == b"late"
    with trio.fail_after(5):
        assert await sockio.read_when_ready(stream, 100) == b""
    await stream.aclose()


async def test_read_when_ready_on_a_closed_socket_is_closed_resource() -> None:
    stream, theirs = await _pair()
    stream.socket.close()
    with pytest.raises(trio.ClosedResourceError):
        await sockio.read_when_ready(stream, 100)
    theirs.close()
