"""The raw-ASGI worker socket: refusals on the wire, the query, the transport.

Two halves. Against a real relay (each front, real sockets): what an agent
sees of a refusal, how the query is read, and a worker whose TCP connection
just drops. In memory, against `WorkerSocket` and `AsgiTransport` with
scripted ASGI messages: what only a different server, a bug or an exact
ordering would show (no HTTP-response extension; a close after the peer left).
"""

from __future__ import annotations

import json
import logging
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url
from wsproto.events import TextMessage

import wire
from relay.core import Relay
from relay.worker_hub import TransportClosed
from relay.worker_socket import AsgiTransport, WorkerSocket
from tests.relay.conftest import SECRET, make_config
from tests.relay.fake_worker import connect_worker, next_ws_event, open_raw_ws

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, MutableMapping

    from wsproto import WSConnection

    from tests.relay.conftest import RunningRelay

CHAT = {"model": "m1", "messages": []}
REGISTER = wire.Register(worker_name="w", models=("m1",), max_concurrent=1)


@pytest.fixture
def relay(any_front_relay: RunningRelay) -> RunningRelay:
    """The real-relay half runs on both fronts: the builtin one calls `WorkerSocket`
    directly, Hypercorn through ASGI; an agent must see no difference."""
    return any_front_relay


# --------------------------------------------------------------- real relay


async def _rejected(url: str, headers: list[tuple[bytes, bytes]]) -> ConnectionRejected:
    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(url, extra_headers=headers):
            pass
    return info.value


def _refusal(rejected: ConnectionRejected) -> tuple[int, dict[bytes, bytes], object]:
    assert rejected.body is not None
    return rejected.status_code, dict(rejected.headers), json.loads(rejected.body)


async def test_refusals_are_http_statuses_with_a_json_body(relay) -> None:
    status, headers, body = _refusal(await _rejected(relay.ws_url, [(b"x-worker-secret", b"no")]))
    assert status == 401
    assert headers[b"content-type"] == b"application/json"
    assert body == {
        "error": {
            "message": "worker authentication failed: the worker secret is wrong",
            "code": 401,
        }
    }

    good = [(b"x-worker-secret", SECRET.encode())]
    status, _, body = _refusal(await _rejected(relay.ws_url + "?provider=elsewhere", good))
    assert status == 404
    assert body == {
        "error": {
            "message": "unknown provider 'elsewhere'; this relay serves 'local'",
            "code": 404,
        }
    }


async def test_rate_limited_refusal_carries_retry_after_and_body(start_relay) -> None:
    relay = await start_relay(auth_failure_limit=1)
    bad = [(b"x-worker-secret", b"no")]
    assert (await _rejected(relay.ws_url, bad)).status_code == 401
    status, headers, body = _refusal(await _rejected(relay.ws_url, bad))
    assert status == 429
    assert 1 <= int(headers[b"retry-after"]) <= 60
    assert body == {
        "error": {
            "message": "too many failed worker authentications from this address; retry later",
            "code": 429,
        }
    }


async def test_draining_relay_refuses_workers_with_503_retry_after_5(relay) -> None:
    relay.hub.begin_drain(1.0)
    good = [(b"x-worker-secret", SECRET.encode())]
    status, headers, body = _refusal(await _rejected(relay.ws_url, good))
    assert status == 503
    assert headers[b"retry-after"] == b"5"
    assert body == {"error": {"message": "the relay is shutting down", "code": 503}}


async def test_legacy_query_secret_is_percent_decoded(start_relay) -> None:
    relay = await start_relay(worker_secret="a b&c=d")
    async with open_websocket_url(relay.ws_url + "?worker_secret=a%20b%26c%3Dd") as ws:
        await ws.send_message(wire.encode(REGISTER))
        ack = wire.decode_relay_frame(await ws.get_message())
    assert isinstance(ack, wire.RegisterAck)


async def test_header_secret_wins_over_the_query(relay) -> None:
    rejected = await _rejected(
        relay.ws_url + f"?worker_secret={SECRET}", [(b"x-worker-secret", b"wrong")]
    )
    assert rejected.status_code == 401


async def test_blank_provider_is_not_the_default(relay) -> None:
    # As werkzeug's `args` read it: `?provider=` names provider "", not "local".
    rejected = await _rejected(relay.ws_url + "?provider=", [(b"x-worker-secret", b"test-secret")])
    assert rejected.status_code == 404


async def test_peer_is_the_client_host_without_port(relay) -> None:
    async with connect_worker(relay.ws_url) as worker:
        assert relay.hub.workers[worker.ack.worker_id].peer == "127.0.0.1"


@asynccontextmanager
async def _raw_worker(url: str) -> AsyncIterator[tuple[trio.SocketStream, WSConnection]]:
    """A registered worker on a bare wsproto connection, to drop TCP without a close frame."""
    stream, ws = await open_raw_ws(url, SECRET)
    await stream.send_all(ws.send(TextMessage(wire.encode(REGISTER))))
    ack = wire.decode_relay_frame((await next_ws_event(stream, ws, TextMessage)).data)
    assert isinstance(ack, wire.RegisterAck)
    try:
        yield stream, ws
    finally:
        await stream.aclose()


async def _dies_holding_a_request(relay, registered: trio.Event, last_words: str | None) -> None:  # type: ignore[no-untyped-def]
    """A worker takes a request and its TCP connection drops; a survivor answers it."""
    async with _raw_worker(relay.ws_url) as (stream, ws):
        registered.set()
        frame = await next_ws_event(stream, ws, TextMessage)
        assert isinstance(wire.decode_relay_frame(frame.data), wire.Request)
        if last_words is not None:
            await stream.send_all(ws.send(TextMessage(last_words)))
    # Closed with no close frame: the relay sees only EOF.
    async with connect_worker(relay.ws_url, name="survivor") as survivor:
        await survivor.reply(await survivor.recv_request(), '{"rescued":true}')


async def test_worker_whose_tcp_drops_mid_request_frees_its_lease(relay, nursery) -> None:
    registered = trio.Event()
    nursery.start_soon(_dies_holding_a_request, relay, registered, None)
    with trio.fail_after(5):
        await registered.wait()
        response = await relay.client.post("/v1/chat/completions", json=CHAT)
    assert response.json() == {"rescued": True}
    assert relay.hub.stats.requeues == 1
    assert relay.hub.stats.protocol_errors == 0


async def test_close_after_the_worker_left_is_harmless(relay, nursery, caplog) -> None:
    # A broken frame and EOF in one go: the hub closes 1002 as, or after,
    # the peer leaves. Nothing may raise out of the session for it.
    caplog.set_level(logging.WARNING)
    registered = trio.Event()
    nursery.start_soon(_dies_holding_a_request, relay, registered, "{garbage")
    with trio.fail_after(5):
        await registered.wait()
        response = await relay.client.post("/v1/chat/completions", json=CHAT)
    assert response.json() == {"rescued": True}
    assert relay.hub.stats.protocol_errors == 1
    assert relay.hub.stats.requeues == 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# ---------------------------------------------------------------- in memory


class _Asgi:
    """Scripted ASGI receive() and a record of what send() was given."""

    def __init__(self, *incoming: MutableMapping[str, Any]) -> None:
        self.incoming = list(incoming)
        self.sent: list[MutableMapping[str, Any]] = []

    async def receive(self) -> MutableMapping[str, Any]:
        await trio.lowlevel.checkpoint()
        assert self.incoming, "receive() called after the last message"
        return self.incoming.pop(0)

    async def send(self, message: MutableMapping[str, Any]) -> None:
        await trio.lowlevel.checkpoint()
        self.sent.append(message)


def _scope(secret: bytes = SECRET.encode(), **changes: object) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "websocket",
        "path": "/v1/worker/connect",
        "query_string": b"",
        "headers": [(b"x-worker-secret", secret)],
        "client": ("10.0.0.7", 51234),
        "extensions": {"websocket.http.response": {}},
    }
    scope.update(changes)
    return scope


CONNECT = {"type": "websocket.connect"}
DISCONNECT = {"type": "websocket.disconnect", "code": 1006}


async def test_transport_hands_over_text_and_bytes_then_stays_closed() -> None:
    asgi = _Asgi(
        {"type": "websocket.receive", "text": "t", "bytes": None},
        {"type": "websocket.receive", "bytes": b"b"},
        DISCONNECT,
    )
    transport = AsgiTransport(asgi.receive, asgi.send)
    assert await transport.receive() == "t"
    assert await transport.receive() == b"b"
    for _ in range(2):  # no second receive() from the server: nothing follows a disconnect
        with pytest.raises(TransportClosed):
            await transport.receive()
    with pytest.raises(TransportClosed):
        await transport.send("late")
    await transport.aclose(1002, "too late")  # no error, and nothing sent
    assert asgi.sent == []


async def test_transport_closes_once_and_sends_nothing_after() -> None:
    asgi = _Asgi()
    transport = AsgiTransport(asgi.receive, asgi.send)
    await transport.send("frame")
    await transport.aclose(1001, "heartbeat timeout")
    await transport.aclose(1000, "")
    with pytest.raises(TransportClosed):  # Hypercorn raises on a send after close
        await transport.send("late")
    assert asgi.sent == [
        {"type": "websocket.send", "text": "frame"},
        {"type": "websocket.close", "code": 1001, "reason": "heartbeat timeout"},
    ]


async def test_session_ended_by_disconnect_sends_no_close(tmp_path) -> None:
    relay = Relay.from_config(make_config(tmp_path))
    asgi = _Asgi(CONNECT, {"type": "websocket.receive", "text": wire.encode(REGISTER)}, DISCONNECT)
    with trio.fail_after(5):
        await WorkerSocket(relay)(_scope(), asgi.receive, asgi.send)
    accept, ack = asgi.sent
    assert accept == {"type": "websocket.accept"}
    assert isinstance(wire.decode_relay_frame(ack["text"]), wire.RegisterAck)
    assert relay.hub.workers == {}


async def test_without_the_http_response_extension_refusal_is_close_1008(tmp_path) -> None:
    relay = Relay.from_config(make_config(tmp_path))
    asgi = _Asgi(CONNECT)
    await WorkerSocket(relay)(_scope(b"wrong", extensions={}), asgi.receive, asgi.send)
    [close] = asgi.sent
    assert close["type"] == "websocket.close"
    assert close["code"] == 1008
    # An upstream-style refusal: our agent reads "authentication" in the reason.
    assert "authentication" in close["reason"]


async def test_a_bug_in_the_session_is_logged_and_closes_1011(tmp_path, caplog) -> None:
    peers: list[str] = []

    async def broken_session(transport: AsgiTransport, peer: str) -> None:
        peers.append(peer)
        raise RuntimeError("bug")

    fake = SimpleNamespace(
        config=make_config(tmp_path),
        hub=SimpleNamespace(draining=False, run_session=broken_session),
    )
    socket = WorkerSocket(fake)  # type: ignore[arg-type]
    asgi = _Asgi(CONNECT)
    await socket(_scope(), asgi.receive, asgi.send)
    asgi2 = _Asgi(CONNECT)
    await socket(_scope(client=None), asgi2.receive, asgi2.send)
    assert peers == ["10.0.0.7", "<local>"]  # the host, as Quart's remote_addr gave it
    assert asgi.sent == [
        {"type": "websocket.accept"},
        {"type": "websocket.close", "code": 1011, "reason": "internal relay error"},
    ]
    assert "internal error in a worker session" in caplog.text
