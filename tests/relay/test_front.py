"""The relay's own HTTP/1.1 front (relay/front.py) on real sockets.

POST /v1/* is served by h11 on the socket; anything else is handed, with
the bytes already read, to Hypercorn. These tests speak raw bytes so that
what goes over the wire (keep-alive, pipelining, 100-continue, chunked
bodies, hand-off mid-connection) is exactly what they say.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import TYPE_CHECKING

import h11
import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    TextMessage,
)
from wsproto.events import Request as WsRequest

import wire
from relay.front.hangup import HangupWatch
from relay.front.http1 import Exchange
from relay.front.websocket import DIRECT_READS, WebSocketExchange
from relay.worker_hub import Sent
from tests.relay.conftest import SECRET
from tests.relay.fake_worker import connect_worker, next_ws_event, open_raw_ws

if TYPE_CHECKING:
    from tests.relay.conftest import RunningRelay


# Every test runs with direct socket I/O and without it (the portable branch).
pytestmark = pytest.mark.usefixtures("direct_io")

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
BODY = json.dumps(CHAT).encode()


def _post(path: str = "/v1/chat/completions", body: bytes = BODY, extra: bytes = b"") -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nhost: relay\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n%s\r\n%s" % (path.encode(), len(body), extra, body)
    )


class RawClient:
    """One TCP connection to the relay; responses parsed with h11."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, relay: RunningRelay) -> RawClient:
        host, port = relay.url.removeprefix("http://").rsplit(":", 1)
        return cls(await trio.open_tcp_stream(host, int(port)))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _event(self) -> object:
        if self.conn.our_state is h11.IDLE:
            # The bytes went out raw; h11 only needs to know a request was sent.
            self.conn.send(h11.Request(method="POST", target="/", headers=[("host", "r")]))
            self.conn.send(h11.EndOfMessage())
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(await self.stream.receive_some(65536))

    async def informational_or_response(self) -> h11.InformationalResponse | h11.Response:
        event = await self._event()
        assert isinstance(event, (h11.InformationalResponse, h11.Response)), event
        return event

    async def response(self) -> tuple[h11.Response, bytes]:
        """The next whole response; the client is ready for another after it."""
        head = await self._event()
        while isinstance(head, h11.InformationalResponse):
            head = await self._event()
        assert isinstance(head, h11.Response), head
        body = b""
        while True:
            event = await self._event()
            if isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise AssertionError(event)
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return head, body

    async def at_eof(self) -> bool:
        return await self.stream.receive_some(65536) == b""

    async def aclose(self) -> None:
        await self.stream.aclose()


async def _serve_requests(
    worker: object, count: int, seen: list[wire.Request] | None = None
) -> None:
    """Answer `count` requests with ``{"n": k}``, the k-th; record them in `seen`."""
    for n in range(1, count + 1):
        request = await worker.recv_request()  # type: ignore[attr-defined]
        if seen is not None:
            seen.append(request)
        await worker.reply(request, json.dumps({"n": n}))  # type: ignore[attr-defined]


async def test_keep_alive_serves_two_posts_on_one_connection(relay, nursery) -> None:
    seen: list[wire.Request] = []
    async with connect_worker(relay.ws_url) as worker:
        nursery.start_soon(_serve_requests, worker, 2, seen)
        client = await RawClient.open(relay)
        with trio.fail_after(5):
            for n in (1, 2):
                await client.send(_post())
                head, body = await client.response()
                assert head.status_code == 200
                assert json.loads(body) == {"n": n}
                assert dict(head.headers)[b"date"]
        await client.aclose()
    assert [json.loads(r.body) for r in seen] == [CHAT, CHAT]


async def test_pipelined_posts_are_answered_in_order(relay, nursery) -> None:
    async with connect_worker(relay.ws_url) as worker:
        nursery.start_soon(_serve_requests, worker, 2)
        client = await RawClient.open(relay)
        with trio.fail_after(5):
            await client.send(_post() + _post())
            first = await client.response()
            second = await client.response()
        assert (json.loads(first[1]), json.loads(second[1])) == ({"n": 1}, {"n": 2})
        await client.aclose()


async def test_get_after_a_post_is_handed_to_hypercorn_mid_connection(relay, nursery) -> None:
    async with connect_worker(relay.ws_url) as worker:
        nursery.start_soon(_serve_requests, worker, 1)
        client = await RawClient.open(relay)
        with trio.fail_after(5):
            await client.send(_post())
            head, _ = await client.response()
            assert head.status_code == 200
            # The GET and a POST after it in one write: Hypercorn owns the rest.
            await client.send(b"GET /health HTTP/1.1\r\nhost: relay\r\n\r\n" + _post(body=b"{"))
            head, body = await client.response()
            assert head.status_code == 200
            assert json.loads(body)["workers_connected"] == 1
            head, body = await client.response()
            assert head.status_code == 400
            assert "not valid JSON" in json.loads(body)["error"]["message"]
        await client.aclose()


async def test_expect_100_continue_then_body_is_answered(relay) -> None:
    client = await RawClient.open(relay)
    body = b"{not json"
    head_only = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: relay\r\nexpect: 100-continue\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    )
    with trio.fail_after(5):
        await client.send(head_only)
        interim = await client.informational_or_response()
        assert interim.status_code == 100
        await client.send(body)
        head, answer = await client.response()
    assert head.status_code == 400
    assert "not valid JSON" in json.loads(answer)["error"]["message"]
    await client.aclose()


async def test_chunked_request_body_is_read_whole(relay) -> None:
    doc = json.dumps({**CHAT, "model": "nobody-serves-this"}).encode()
    half = len(doc) // 2
    chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, doc[:half], len(doc) - half, doc[half:])
    client = await RawClient.open(relay)
    with trio.fail_after(5):
        await client.send(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: relay\r\n"
            b"transfer-encoding: chunked\r\n\r\n" + chunked
        )
        head, answer = await client.response()
    # Parsed as JSON (a torn body would be a 400): no worker serves the model.
    assert head.status_code == 404
    assert "nobody-serves-this" in json.loads(answer)["error"]["message"]
    await client.aclose()


async def test_malformed_chunked_body_is_400_and_closes(relay) -> None:
    client = await RawClient.open(relay)
    with trio.fail_after(5):
        await client.send(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: relay\r\n"
            b"transfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
        )
        head, answer = await client.response()
        assert head.status_code == 400
        assert "malformed" in json.loads(answer)["error"]["message"]
        assert await client.at_eof()
    await client.aclose()


async def test_http_1_0_client_gets_a_close_delimited_answer(relay) -> None:
    client = await RawClient.open(relay)
    with trio.fail_after(5):
        await client.send(_post(body=b"{").replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        data = b""
        while chunk := await client.stream.receive_some(65536):
            data += chunk  # the relay closes after the body
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"not valid JSON" in data
    await client.aclose()


async def test_unparseable_head_is_answered_by_hypercorn(relay) -> None:
    client = await RawClient.open(relay)
    with trio.fail_after(5):
        await client.send(b"POST /v1/chat/completions HTTP/1.1\r\nbad header line\r\n\r\n")
        data = b""
        while chunk := await client.stream.receive_some(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")
    await client.aclose()


@pytest.fixture(params=["epoll", "watcher task"])
async def any_watch_relay(request, start_relay, monkeypatch) -> RunningRelay:
    """A relay noticing hang-ups with its epoll set, or (as where there is no
    epoll, and under Hypercorn) with a task per request watching ``receive()``."""
    if request.param == "epoll" and not HangupWatch.available:
        pytest.skip("no epoll on this platform: the watcher-task case covers it")
    if request.param == "watcher task":
        monkeypatch.setattr(HangupWatch, "available", False)
    return await start_relay()  # type: ignore[no-any-return]


def _reset(client: RawClient) -> None:
    """Close with an RST instead of a FIN (SO_LINGER 0)."""
    client.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.stream.socket.close()


@pytest.mark.parametrize("how", ["close", "reset", "shut_wr"])
async def test_client_leaving_cancels_the_request(any_watch_relay, how) -> None:
    relay = any_watch_relay
    async with connect_worker(relay.ws_url) as worker:
        client = await RawClient.open(relay)
        await client.send(_post())
        with trio.fail_after(5):
            request = await worker.recv_request()
            # The client leaves while the relay waits for the worker.
            if how == "close":
                await client.aclose()
            elif how == "reset":
                _reset(client)
            else:  # a half-close counts as leaving (STACK-NOTES trap 3)
                await client.stream.send_eof()
            cancel = await worker.recv()
        assert isinstance(cancel, wire.Cancel)
        assert cancel.request_id == request.request_id
        assert cancel.reason == wire.CancelReason.CLIENT_DISCONNECT
        assert relay.server.relay.inflight.active == {}
        await client.aclose()


async def test_a_client_gone_while_queued_is_never_dispatched(any_watch_relay, nursery) -> None:
    relay = any_watch_relay
    async with connect_worker(relay.ws_url) as worker:  # one slot
        holder = await RawClient.open(relay)
        await holder.send(_post())
        queued = await RawClient.open(relay)
        with trio.fail_after(5):
            held = await worker.recv_request()
            await queued.send(_post())
            # In-process relay: once every task is blocked, the request waits in the queue.
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)
            assert len(relay.hub.queue) == 1
            await queued.aclose()  # leaves while waiting for the busy worker
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)
            assert len(relay.hub.queue) == 0
            await worker.reply(held, json.dumps({"n": 1}))
            head, _ = await holder.response()
            assert head.status_code == 200
            # Had the gone client's request been dispatched, it would still be
            # in flight, waiting for the worker's answer.
            await relay.server.relay.inflight.wait_idle()
        await holder.aclose()


async def test_pipelined_bytes_while_waiting_are_not_a_hang_up(any_watch_relay, nursery) -> None:
    """The next request arriving while the first waits must not cancel the first."""
    relay = any_watch_relay
    async with connect_worker(relay.ws_url) as worker:
        client = await RawClient.open(relay)
        with trio.fail_after(5):
            await client.send(_post())
            first = await worker.recv_request()
            await client.send(_post())
            # In-process relay: once every task is blocked, a wrong cancel would be sent.
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)
            await worker.reply(first, json.dumps({"n": 1}))
            second = await worker.recv_request()  # not a Cancel
            await worker.reply(second, json.dumps({"n": 2}))
            answers = [await client.response(), await client.response()]
        assert [json.loads(body) for _, body in answers] == [{"n": 1}, {"n": 2}]
        await client.aclose()


async def test_drain_closes_idle_keep_alive_connections(relay, nursery) -> None:
    async with connect_worker(relay.ws_url) as worker:
        nursery.start_soon(_serve_requests, worker, 1)
        client = await RawClient.open(relay)
        with trio.fail_after(5):
            await client.send(_post())
            head, _ = await client.response()
            assert head.status_code == 200
    nursery.start_soon(relay.server.drain)
    with trio.fail_after(5):
        assert await client.at_eof()  # idle: closed at shutdown, not left open
    await client.aclose()


async def test_idle_connection_closes_after_keep_alive_timeout(relay, autojump_clock) -> None:
    del autojump_clock  # virtual time: the 30 s idle timeout passes at once
    client = await RawClient.open(relay)
    await client.send(_post(body=b"{"))
    head, _ = await client.response()
    assert head.status_code == 400
    answered = trio.current_time()
    assert await client.at_eof()
    assert trio.current_time() - answered >= 30
    await client.aclose()


# --- the worker socket, framed by relay.wsframes in the front -------------------


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


async def test_a_head_dribbled_byte_by_byte_is_cut_at_the_keep_alive_timeout(
    relay, autojump_clock
) -> None:
    del autojump_clock  # virtual time
    client = await RawClient.open(relay)
    started = trio.current_time()
    for byte in _post():
        try:
            await client.send(bytes([byte]))
        except trio.BrokenResourceError:
            break
        await trio.sleep(5)  # every byte well inside the timeout, the head never done
    else:
        raise AssertionError("the relay read the whole dribbled head")
    assert 30 <= trio.current_time() - started <= 40
    await client.aclose()


# --- response framing ------------------------------------------------------------


async def test_a_worker_header_that_would_split_the_response_is_dropped(relay, nursery) -> None:
    async with connect_worker(relay.ws_url) as worker:

        async def serve() -> None:
            request = await worker.recv_request()
            await worker.send(
                wire.ResponseComplete(
                    request_id=request.request_id,
                    status_code=200,
                    headers={
                        "content-type": "application/json",
                        "x-evil": "a\r\nx-injected: 1",
                        "x-fine": "kept",
                    },
                    body="{}",
                )
            )

        nursery.start_soon(serve)
        client = await RawClient.open(relay)
        with trio.fail_after(5):
            await client.send(_post())
            head, body = await client.response()
    headers = dict(head.headers)
    assert head.status_code == 200
    assert body == b"{}"
    assert headers[b"x-fine"] == b"kept"
    assert b"x-evil" not in headers
    assert b"x-injected" not in headers
    await client.aclose()


async def _stream_two_events(worker: object) -> None:
    request = await worker.recv_request()  # type: ignore[attr-defined]
    for event in ('data: {"a":1}\n\n', "data: [DONE]\n\n"):
        await worker.send(wire.ResponseChunk(request_id=request.request_id, chunk=event))  # type: ignore[attr-defined]
    await worker.send(wire.ResponseComplete(request_id=request.request_id, status_code=200))  # type: ignore[attr-defined]


async def test_a_whole_body_has_a_length_and_a_stream_is_chunked(relay, nursery) -> None:
    async with connect_worker(relay.ws_url) as worker:
        nursery.start_soon(_serve_requests, worker, 1)
        client = await RawClient.open(relay)
        with trio.fail_after(5):
            await client.send(_post())
            head, body = await client.response()
        assert dict(head.headers)[b"content-length"] == str(len(body)).encode()
        nursery.start_soon(_stream_two_events, worker)
        with trio.fail_after(5):
            await client.send(_post(body=json.dumps({**CHAT, "stream": True}).encode()))
            head, body = await client.response()
        assert dict(head.headers)[b"transfer-encoding"] == b"chunked"
        assert body == b'data: {"a":1}\n\ndata: [DONE]\n\n'
        await client.aclose()


async def test_connection_close_from_the_client_is_honoured(relay) -> None:
    client = await RawClient.open(relay)
    with trio.fail_after(5):
        await client.send(_post(body=b"{", extra=b"connection: close\r\n"))
        head, _ = await client.response()
        assert head.status_code == 400
        assert dict(head.headers)[b"connection"] == b"close"
        assert await client.at_eof()
    await client.aclose()


async def test_an_http_1_0_stream_ends_with_the_connection(relay, nursery) -> None:
    async with connect_worker(relay.ws_url) as worker:
        nursery.start_soon(_stream_two_events, worker)
        client = await RawClient.open(relay)
        body = json.dumps({**CHAT, "stream": True}).encode()
        with trio.fail_after(5):
            await client.send(_post(body=body).replace(b"HTTP/1.1", b"HTTP/1.0", 1))
            data = b""
            while chunk := await client.stream.receive_some(65536):
                data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        assert b"transfer-encoding" not in head.lower()
        assert b"connection: close" in head.lower()
        assert rest == b'data: {"a":1}\n\ndata: [DONE]\n\n'
        await client.aclose()


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


async def test_an_unfinished_head_past_16_kib_is_refused_without_harm(relay) -> None:
    client = await RawClient.open(relay)
    # 20 KiB of head and no blank line yet: more than the relay buffers for one.
    unfinished = b"POST /v1/chat/completions HTTP/1.1\r\nx-filler: " + b"a" * (20 * 1024)
    with trio.fail_after(5):
        await client.send(unfinished)
        data = b""
        while chunk := await client.stream.receive_some(65536):
            data += chunk
    assert data.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 431 "))
    await client.aclose()
    # The relay still serves the next client.
    second = await RawClient.open(relay)
    with trio.fail_after(5):
        await second.send(_post(body=b"{"))
        head, _ = await second.response()
    assert head.status_code == 400
    await second.aclose()


@pytest.mark.skipif(not HangupWatch.available, reason="no epoll on this platform")
async def test_hangup_watch_calls_back_once_and_never_after_unwatch(nursery) -> None:
    watch = HangupWatch()
    nursery.start_soon(watch.run)
    calls: list[str] = []
    pairs = [trio.socket.socketpair() for _ in range(3)]
    (kept, kept_peer), (left, left_peer), (unwatched, unwatched_peer) = pairs
    watch.watch(kept.fileno(), lambda: calls.append("kept"))
    watch.watch(left.fileno(), lambda: calls.append("left"))
    stop = watch.watch(unwatched.fileno(), lambda: calls.append("unwatched"))
    stop()
    await kept_peer.send(b"bytes are not a hang-up")
    left_peer.close()
    unwatched_peer.close()
    await trio.testing.wait_all_tasks_blocked(cushion=0.01)
    assert calls == ["left"]
    for sock in (kept, kept_peer, left, unwatched):
        sock.close()
    nursery.cancel_scope.cancel()


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
