"""Hypercorn's part (relay/front/hypercorn.py): what the builtin front hands over.

These tests fail when the Hypercorn internals the hand-off relies on change
(see that module's docstring): `TCPServer`'s constructor, and its reading a
stream without ``do_handshake`` as plain TCP. The whole Hypercorn front
(``--http-front hypercorn``) runs the worker-socket and integration tests.
"""

from __future__ import annotations

import inspect

import h2.config
import h2.connection
import h2.events
import trio
from hypercorn.trio.tcp_server import TCPServer
from wsproto import ConnectionType, WSConnection
from wsproto.events import RejectConnection
from wsproto.events import Request as WsRequest

from tests.relay.fake_worker import next_ws_event
from tests.relay.front_client import RawClient


def test_tcp_server_takes_what_the_hand_off_gives_it() -> None:
    params = list(inspect.signature(TCPServer).parameters)
    assert params == ["app", "config", "context", "state", "stream"]
    # A stream without do_handshake is plain TCP to it: the source still says so.
    source = inspect.getsource(TCPServer.run)
    assert "do_handshake" in source
    assert "except AttributeError" in source


async def test_an_http2_preface_is_served_by_hypercorn(relay) -> None:
    """HTTP/2 with prior knowledge: h11 parses the preface as ``PRI * HTTP/2.0``,
    which the front hands to Hypercorn with the bytes already read."""
    host, port = relay.url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(
        stream_id,
        [(":method", "GET"), (":path", "/health"), (":scheme", "http"), (":authority", "r")],
        end_stream=True,
    )
    await stream.send_all(conn.data_to_send())
    status = None
    body = b""
    with trio.fail_after(5):
        ended = False
        while not ended:
            data = await stream.receive_some(65536)
            assert data, "the connection closed before the response"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers)[b":status"]
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(len(event.data), event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
            await stream.send_all(conn.data_to_send())
    assert status == b"200"
    assert b'"status"' in body
    await stream.aclose()


async def test_unparseable_head_is_answered_by_hypercorn(relay) -> None:
    client = await RawClient.open(relay)
    with trio.fail_after(5):
        await client.send(b"POST /v1/chat/completions HTTP/1.1\r\nbad header line\r\n\r\n")
        data = b""
        while chunk := await client.stream.receive_some(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")
    await client.aclose()


async def test_other_upgrade_paths_are_hypercorns(relay) -> None:
    host_port = relay.url.removeprefix("http://")
    host, port = host_port.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(WsRequest(host=host_port, target="/v1/elsewhere")))
    with trio.fail_after(5):
        rejected = await next_ws_event(stream, ws, RejectConnection)
    assert rejected.status_code == 404  # Quart: no such websocket route
    await stream.aclose()
