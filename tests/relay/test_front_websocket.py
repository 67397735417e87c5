"""The worker socket on the builtin front (relay/front/websocket.py).

In memory of a relay (a socket pair and `WebSocketExchange` as the hub's
`Transport`): frames in and out, pings, close frames, broken framing, the
state after the agent left. Against a real relay: the handshake's refusals
and frames an agent could send.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import h11
import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.events import Request as WsRequest

import wire
from relay.front.websocket import DIRECT_READS, WebSocketExchange
from relay.worker_hub import TransportClosed
from tests.relay.conftest import SECRET
from tests.relay.fake_worker import next_ws_event, open_raw_ws
from tests.relay.front_client import RawClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.relay.conftest import RunningRelay

pytestmark = pytest.mark.usefixtures("direct_io")


@pytest.fixture
async def pair() -> AsyncIterator[tuple[WebSocketExchange, trio.SocketStream, WSConnection]]:
    """An accepted exchange, and the agent's end of its socket (wsproto as the client)."""
    ours, theirs = trio.socket.socketpair()
    ws = WSConnection(ConnectionType.CLIENT)
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(ws.send(WsRequest(host="r", target="/v1/worker/connect")))
    upgrade = conn.next_event()
    assert isinstance(upgrade, h11.Request)
    exchange = WebSocketExchange(trio.SocketStream(ours), upgrade, b"", 4096, b"today")
    agent = trio.SocketStream(theirs)
    await exchange.accept()
    ws.receive_data(await agent.receive_some(65536))
    assert [type(e).__name__ for e in ws.events()] == ["AcceptConnection"]
    yield exchange, agent, ws
    await agent.aclose()
    await exchange.stream.aclose()


async def _events(agent: trio.SocketStream, ws: WSConnection) -> list[object]:
    ws.receive_data(await agent.receive_some(65536))
    return list(ws.events())


async def test_text_and_binary_messages_arrive_as_str_and_bytes(pair) -> None:
    exchange, agent, ws = pair
    await agent.send_all(ws.send(TextMessage("héllo")) + ws.send(BytesMessage(b"\x00b")))
    with trio.fail_after(5):
        assert await exchange.receive() == "héllo"
        assert await exchange.receive() == b"\x00b"


async def test_send_is_one_text_frame(pair) -> None:
    exchange, agent, ws = pair
    await exchange.send('{"type":"ping"}')
    with trio.fail_after(5):
        [message] = await _events(agent, ws)
    assert isinstance(message, TextMessage)
    assert message.data == '{"type":"ping"}'


async def test_a_ping_is_answered_by_the_exchange_itself(pair, nursery) -> None:
    exchange, agent, ws = pair
    received: list[str | bytes] = []

    async def read() -> None:
        received.append(await exchange.receive())

    nursery.start_soon(read)
    await agent.send_all(ws.send(Ping(b"there?")))
    with trio.fail_after(5):
        [pong] = await _events(agent, ws)
    assert isinstance(pong, Pong)
    assert pong.payload == b"there?"
    assert received == []  # a ping is not a message for the hub
    await agent.send_all(ws.send(TextMessage("after")))
    await trio.testing.wait_all_tasks_blocked()
    assert received == ["after"]


async def test_the_agents_close_is_answered_and_nothing_follows(pair) -> None:
    exchange, agent, ws = pair
    await agent.send_all(ws.send(CloseConnection(code=1001, reason="bye")))
    with trio.fail_after(5), pytest.raises(TransportClosed):
        await exchange.receive()
    [echo] = await _events(agent, ws)
    assert isinstance(echo, CloseConnection)
    assert echo.code == 1001
    for _ in range(2):  # nothing follows: never another wait on the socket
        with pytest.raises(TransportClosed):
            await exchange.receive()
    with pytest.raises(TransportClosed):
        await exchange.send("late")
    await exchange.aclose(1000, "")  # a no-op, and no error


async def test_broken_framing_closes_with_its_code(pair) -> None:
    exchange, agent, ws = pair
    await agent.send_all(b"\x81\x02hi")  # unmasked: a protocol error (RFC 6455 5.1)
    # The worker's protocol error: its session counts and logs it.
    with trio.fail_after(5), pytest.raises(wire.ProtocolError, match="masked"):
        await exchange.receive()
    [close] = await _events(agent, ws)
    assert isinstance(close, CloseConnection)
    assert close.code == 1002
    await exchange.aclose(1011, "later close")  # our close went out already: no second one
    await exchange.stream.aclose()
    with trio.fail_after(5):
        assert await agent.receive_some(65536) == b""  # nothing after the first close


async def test_a_message_past_the_bound_closes_1009(pair) -> None:
    exchange, agent, ws = pair
    await agent.send_all(ws.send(TextMessage("x" * 5000)))  # the pair's bound is 4096
    with trio.fail_after(5), pytest.raises(wire.ProtocolError):
        await exchange.receive()
    [close] = await _events(agent, ws)
    assert close.code == 1009  # type: ignore[attr-defined]


async def test_our_close_goes_out_once(pair) -> None:
    exchange, agent, ws = pair
    await exchange.aclose(1001, "heartbeat timeout")
    await exchange.aclose(1000, "")
    with pytest.raises(TransportClosed):
        await exchange.send("late")
    [close] = await _events(agent, ws)
    assert (close.code, close.reason) == (1001, "heartbeat timeout")  # type: ignore[attr-defined]


async def test_the_agent_gone_ends_receive_and_send(pair) -> None:
    exchange, agent, _ws = pair
    await agent.aclose()
    with trio.fail_after(5), pytest.raises(TransportClosed):
        await exchange.receive()
    assert exchange.gone
    with pytest.raises(TransportClosed):
        await exchange.send("late")


async def test_an_agent_that_never_pauses_still_lets_the_relay_checkpoint(direct_io) -> None:
    """Frames already waiting are read straight from the kernel, but not forever
    (without direct I/O, every read is a checkpoint)."""
    ours, theirs = trio.socket.socketpair()
    with ours, theirs:
        request = h11.Request(method="GET", target="/v1/worker/connect", headers=[("host", "r")])
        exchange = WebSocketExchange(trio.SocketStream(ours), request, b"", 1 << 20, b"today")
        for _ in range(2):
            for _ in range(DIRECT_READS - 1):
                await theirs.send(b"frame")  # waiting before each read
                with (
                    trio.testing.assert_no_checkpoints()
                    if direct_io
                    else trio.testing.assert_checkpoints()
                ):
                    assert await exchange._read() == b"frame"
            await theirs.send(b"frame")
            with trio.testing.assert_checkpoints():
                assert await exchange._read() == b"frame"


# --- against a real relay -------------------------------------------------------------


REGISTER = wire.Register(
    worker_name="raw",
    models=("m1",),
    max_concurrent=1,
    protocol_version=wire.PROTOCOL_VERSION,
    current_load=0,
)


async def test_fragmented_register_is_assembled(relay) -> None:
    stream, ws = await open_raw_ws(relay.ws_url)
    frame = wire.encode(REGISTER)
    half = len(frame) // 2
    with trio.fail_after(5):
        await stream.send_all(
            ws.send(TextMessage(frame[:half], message_finished=False))
            + ws.send(TextMessage(frame[half:], message_finished=True))
        )
        ack = wire.decode_relay_frame((await next_ws_event(stream, ws, TextMessage)).data)
    assert isinstance(ack, wire.RegisterAck)
    await stream.aclose()


async def test_ping_is_answered_with_its_payload(relay) -> None:
    stream, ws = await open_raw_ws(relay.ws_url)
    with trio.fail_after(5):
        await stream.send_all(ws.send(Ping(payload=b"are you there")))
        pong = await next_ws_event(stream, ws, Pong)
    assert pong.payload == b"are you there"
    await stream.aclose()


async def test_unmasked_frame_is_closed_1002(relay) -> None:
    stream, ws = await open_raw_ws(relay.ws_url)
    # A client frame must be masked (RFC 6455 5.1): a text frame "hi" without a mask.
    with trio.fail_after(5):
        await stream.send_all(b"\x81\x02hi")
        close = await next_ws_event(stream, ws, CloseConnection)
    assert close.code == 1002
    await stream.aclose()


async def _upgrade(relay: RunningRelay, extra: bytes) -> tuple[h11.Response, bytes]:
    client = await RawClient.open(relay)
    with trio.fail_after(5):
        await client.send(
            b"GET /v1/worker/connect HTTP/1.1\r\nhost: relay\r\nupgrade: websocket\r\n"
            b"connection: Upgrade\r\nx-worker-secret: "
            + SECRET.encode()
            + b"\r\n"
            + extra
            + b"\r\n"
        )
        answer = await client.response()
    await client.aclose()
    return answer


async def test_an_upgrade_without_a_valid_key_is_400(relay) -> None:
    head, body = await _upgrade(relay, b"sec-websocket-version: 13\r\nsec-websocket-key: short\r\n")
    assert head.status_code == 400
    assert "Sec-WebSocket-Key" in json.loads(body)["error"]["message"]


async def test_an_old_websocket_version_is_426_naming_13(relay) -> None:
    head, _ = await _upgrade(
        relay, b"sec-websocket-version: 8\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    )
    assert head.status_code == 426
    assert dict(head.headers)[b"sec-websocket-version"] == b"13"
