"""Every idle connection is bounded, whichever server holds it (issue 13, item 4).

A real relay in this process on a real socket, with a short keep-alive
timeout: a connection that asked for nothing, or stopped asking after an
answer, is closed by the relay, on the builtin front and under Hypercorn.
"""

from __future__ import annotations

import pytest
import trio

pytestmark = pytest.mark.parametrize("front", ["builtin", "hypercorn"])

_HEALTH = b"GET /health HTTP/1.1\r\nhost: relay.test\r\n\r\n"
_BODY = b'{"model": "x"}'
_POST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: relay.test\r\ncontent-length: %d\r\n\r\n%b"
    % (len(_BODY), _BODY)
)


async def _closed_by_relay(stream: trio.SocketStream) -> bytes:
    """Everything the relay sends until it closes the connection."""
    received = b""
    while True:
        try:
            data = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            return received
        if not data:
            return received
        received += data


@pytest.mark.parametrize("request_bytes", [b"", _HEALTH, _POST], ids=["silent", "get", "post"])
async def test_an_idle_keep_alive_connection_is_closed(
    start_relay, front: str, request_bytes: bytes
) -> None:
    relay = await start_relay(keep_alive_timeout=1.0, http_front=front)
    host, port = relay.url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    with trio.fail_after(10):  # the bound is 1 s; a hang fails here
        await stream.send_all(request_bytes)
        received = await _closed_by_relay(stream)
    if request_bytes:
        assert received.startswith(b"HTTP/1.1 "), received[:100]
    await stream.aclose()
