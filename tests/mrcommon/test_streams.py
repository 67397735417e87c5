"""`SocketStreamWrapper` passes every call on to the socket stream it wraps."""

import pytest
import trio
import trio.testing

from mrcommon.streams import SocketStreamWrapper


async def test_a_wrapped_pair_is_still_a_working_stream() -> None:
    """trio's own conformance checks for a half-closeable stream pair, on real sockets."""

    async def pair() -> tuple[SocketStreamWrapper, SocketStreamWrapper]:
        left, right = trio.socket.socketpair()
        return (
            SocketStreamWrapper(trio.SocketStream(left)),
            SocketStreamWrapper(trio.SocketStream(right)),
        )

    await trio.testing.check_half_closeable_stream(pair, None)


async def test_the_socket_is_the_wrapped_streams_and_closing_closes_it() -> None:
    left, right = trio.socket.socketpair()
    inner = trio.SocketStream(left)
    wrapper = SocketStreamWrapper(inner)
    assert wrapper.socket is inner.socket
    await wrapper.aclose()
    assert left.fileno() == -1
    with pytest.raises(trio.ClosedResourceError):
        await inner.send_all(b"x")
    right.close()
