"""One HTTP/1.1 exchange (relay/front/http1.py) on a socket pair: framing and send_now."""

from __future__ import annotations

import socket

import h11
import pytest
import trio
import trio.testing

from relay.boundary import Sent
from relay.front.http1 import Exchange, head_lines

pytestmark = pytest.mark.usefixtures("direct_io")


def _exchange(ours: trio.socket.SocketType, request: bytes) -> Exchange:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(request)
    assert type(conn.next_event()) is h11.Request
    return Exchange(trio.SocketStream(ours), conn, b"today")


async def _all(theirs: trio.socket.SocketType) -> bytes:
    data = b""
    while chunk := await theirs.recv(65536):
        data += chunk
    return data


def test_head_lines_drop_a_header_that_would_split_the_response() -> None:
    lines = head_lines(
        200,
        [(b"X-Fine", b"kept"), (b"x-evil", b"a\r\nx-injected: 1"), (b"bad name", b"v")],
        b"today",
    )
    assert lines == [b"HTTP/1.1 200 OK\r\n", b"x-fine: kept\r\n", b"date: today\r\n"]


async def test_a_head_request_gets_the_length_and_no_body() -> None:
    ours, theirs = trio.socket.socketpair()
    exchange = _exchange(ours, b"HEAD /health HTTP/1.1\r\nhost: r\r\n\r\n")
    exchange.head_only = True
    await exchange.send({"type": "http.response.start", "status": 200, "headers": []})
    await exchange.send({"type": "http.response.body", "body": b"{}"})
    assert exchange.done
    ours.close()
    data = await _all(theirs)
    assert data.endswith(b"content-length: 2\r\n\r\n")
    theirs.close()


async def test_a_body_the_client_sends_chunked_arrives_whole() -> None:
    ours, theirs = trio.socket.socketpair()
    exchange = _exchange(
        ours,
        b"POST /v1/x HTTP/1.1\r\nhost: r\r\ntransfer-encoding: chunked\r\n\r\n"
        b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
    )
    assert await exchange.receive() == {"type": "http.request", "body": b"abc", "more_body": False}
    theirs.close()  # after the body, receive() waits for the client to leave
    with trio.fail_after(5):
        assert await exchange.receive() == {"type": "http.disconnect"}
    ours.close()


async def test_send_now_writes_what_the_socket_takes_and_the_rest_goes_first_after(
    nursery, direct_io
) -> None:
    """A stream's piece written from another task: partly, when the socket is
    full; the next send writes the rest first, so the client sees one intact
    stream in order. Without direct I/O it never writes (the usual send does)."""
    ours, theirs = trio.socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"POST /v1/x HTTP/1.1\r\nhost: r\r\ncontent-length: 0\r\n\r\n")
    assert type(conn.next_event()) is h11.Request
    exchange = Exchange(trio.SocketStream(ours), conn, b"today")
    assert exchange.send_now(b"early") is Sent.NONE  # no response started yet
    await exchange.send({"type": "http.response.start", "status": 200, "headers": []})
    await exchange.send({"type": "http.response.body", "body": b"a", "more_body": True})
    if not direct_io:
        assert exchange.send_now(b"b") is Sent.NONE
        ours.close()
        theirs.close()
        return
    big = b"x" * 200_000  # more than the socket buffers take at once
    assert exchange.send_now(big) is Sent.PART
    assert exchange.send_now(b"y") is Sent.NONE  # never past the unwritten rest

    received = bytearray()

    async def client() -> None:
        while chunk := await theirs.recv(65536):
            received.extend(chunk)

    nursery.start_soon(client)
    await exchange.send({"type": "http.response.body", "body": b"", "more_body": True})
    await trio.testing.wait_all_tasks_blocked()  # the client has read it all
    assert exchange.send_now(b"b") is Sent.ALL
    await exchange.send({"type": "http.response.body", "body": b"c", "more_body": False})
    assert exchange.send_now(b"late") is Sent.NONE  # the response is done
    ours.close()
    await trio.testing.wait_all_tasks_blocked()
    parser = h11.Connection(h11.CLIENT)
    parser.send(h11.Request(method="POST", target="/", headers=[("host", "r")]))
    parser.send(h11.EndOfMessage())
    parser.receive_data(bytes(received))
    head = parser.next_event()
    assert isinstance(head, h11.Response)
    assert head.status_code == 200
    body = b""
    while isinstance(event := parser.next_event(), h11.Data):
        body += event.data
    assert isinstance(event, h11.EndOfMessage)
    assert body == b"a" + big + b"b" + b"c"
    theirs.close()
