"""The builtin front's listener (relay/front/listener.py) on real sockets.

Every request h11 parses is served on the connection (POST /v1/* by the
proxy, the rest by the app); only what the front does not speak goes to
Hypercorn (tests/relay/test_front_hypercorn.py). These tests speak raw bytes
so that what goes over the wire (keep-alive, pipelining, 100-continue,
chunked bodies, the idle timeout) is exactly what they say.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import TYPE_CHECKING, Any

import hypercorn.config
import pytest
import trio
import trio.testing

import wire
from relay.boundary import HANGUP_EXTENSION, WHOLE_BODY_EXTENSION
from relay.front import listener
from relay.front.hangup import HangupWatch
from tests.relay.fake_worker import connect_worker
from tests.relay.front_client import CHAT, RawClient, post, serve_requests

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping

    Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
    Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

    from tests.relay.conftest import RunningRelay


# Every test runs with direct socket I/O and without it (the portable branch).
pytestmark = pytest.mark.usefixtures("direct_io")


async def test_keep_alive_serves_two_posts_on_one_connection(relay, nursery) -> None:
    seen: list[wire.Request] = []
    async with connect_worker(relay.ws_url) as worker:
        nursery.start_soon(serve_requests, worker, 2, seen)
        client = await RawClient.open(relay)
        with trio.fail_after(5):
            for n in (1, 2):
                await client.send(post())
                head, body = await client.response()
                assert head.status_code == 200
                assert json.loads(body) == {"n": n}
                assert dict(head.headers)[b"date"]
        await client.aclose()
    assert [json.loads(r.body) for r in seen] == [CHAT, CHAT]


async def test_pipelined_posts_are_answered_in_order(relay, nursery) -> None:
    async with connect_worker(relay.ws_url) as worker:
        nursery.start_soon(serve_requests, worker, 2)
        client = await RawClient.open(relay)
        with trio.fail_after(5):
            await client.send(post() + post())
            first = await client.response()
            second = await client.response()
        assert (json.loads(first[1]), json.loads(second[1])) == ({"n": 1}, {"n": 2})
        await client.aclose()


async def test_get_after_a_post_is_served_on_the_same_connection(relay, nursery) -> None:
    async with connect_worker(relay.ws_url) as worker:
        nursery.start_soon(serve_requests, worker, 1)
        client = await RawClient.open(relay)
        with trio.fail_after(5):
            await client.send(post())
            head, _ = await client.response()
            assert head.status_code == 200
            # The GET and a POST after it in one write: both answered here, in order.
            await client.send(b"GET /health HTTP/1.1\r\nhost: relay\r\n\r\n" + post(body=b"{"))
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
        await client.send(post(body=b"{").replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        data = b""
        while chunk := await client.stream.receive_some(65536):
            data += chunk  # the relay closes after the body
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"not valid JSON" in data
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
        await client.send(post())
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
        await holder.send(post())
        queued = await RawClient.open(relay)
        with trio.fail_after(5):
            held = await worker.recv_request()
            await queued.send(post())
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
            await client.send(post())
            first = await worker.recv_request()
            await client.send(post())
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
        nursery.start_soon(serve_requests, worker, 1)
        client = await RawClient.open(relay)
        with trio.fail_after(5):
            await client.send(post())
            head, _ = await client.response()
            assert head.status_code == 200
    nursery.start_soon(relay.server.drain)
    with trio.fail_after(5):
        assert await client.at_eof()  # idle: closed at shutdown, not left open
    await client.aclose()


async def test_idle_connection_closes_after_keep_alive_timeout(start_relay) -> None:
    relay = await start_relay(keep_alive_timeout=0.2)
    client = await RawClient.open(relay)
    with trio.fail_after(5):
        await client.send(post(body=b"{"))
        head, _ = await client.response()
        assert head.status_code == 400
        assert await client.at_eof()  # nothing more was sent: the reaper closed it
    await client.aclose()


async def test_a_head_dribbled_byte_by_byte_is_cut_at_the_keep_alive_timeout(
    start_relay,
) -> None:
    """Bytes arriving do not reset the idle clock: only a whole request does."""
    relay = await start_relay(keep_alive_timeout=0.3)
    client = await RawClient.open(relay)
    head = post()
    with trio.fail_after(10):
        for byte in head:
            try:
                await client.send(bytes([byte]))
            except trio.BrokenResourceError:
                break
            # Each byte well inside the timeout; the whole head takes ~20 timeouts.
            await trio.sleep(0.05)
        else:
            raise AssertionError("the relay read the whole dribbled head")
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
            await client.send(post())
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
        nursery.start_soon(serve_requests, worker, 1)
        client = await RawClient.open(relay)
        with trio.fail_after(5):
            await client.send(post())
            head, body = await client.response()
        assert dict(head.headers)[b"content-length"] == str(len(body)).encode()
        nursery.start_soon(_stream_two_events, worker)
        with trio.fail_after(5):
            await client.send(post(body=json.dumps({**CHAT, "stream": True}).encode()))
            head, body = await client.response()
        assert dict(head.headers)[b"transfer-encoding"] == b"chunked"
        assert body == b'data: {"a":1}\n\ndata: [DONE]\n\n'
        await client.aclose()


async def test_connection_close_from_the_client_is_honoured(relay) -> None:
    client = await RawClient.open(relay)
    with trio.fail_after(5):
        await client.send(post(body=b"{", extra=b"connection: close\r\n"))
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
            await client.send(post(body=body).replace(b"HTTP/1.1", b"HTTP/1.0", 1))
            data = b""
            while chunk := await client.stream.receive_some(65536):
                data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        assert b"transfer-encoding" not in head.lower()
        assert b"connection: close" in head.lower()
        assert rest == b'data: {"a":1}\n\ndata: [DONE]\n\n'
        await client.aclose()


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
        await second.send(post(body=b"{"))
        head, _ = await second.response()
    assert head.status_code == 400
    await second.aclose()


# --- every request h11 parses stays on the connection ------------------------------


class _App:
    """A stand-in for `RelayApp` with the three entries the listener calls.

    ``proxy_request`` (POST /v1/*) records the body it got (whole with the
    head, or by ``receive()``), raises for ``/v1/boom``, and otherwise waits
    for its client to hang up through the hang-up watch and records it;
    ``__call__`` answers every other request ``ok`` (or raises, for paths
    starting ``/boom``) and speaks the lifespan.
    """

    worker_socket = None

    def __init__(self) -> None:
        self.hung_up = trio.Event()
        self.proxied: list[str] = []
        self.bodies: list[tuple[str, bytes]] = []  # ("whole" or "received", body)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"].startswith("/boom"):
            raise RuntimeError("a bug below the app")
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    async def proxy_request(
        self, scope: MutableMapping[str, Any], receive: Receive, send: Send
    ) -> None:
        self.proxied.append(scope["path"])
        whole = scope["extensions"].get(WHOLE_BODY_EXTENSION)
        if whole is not None:
            self.bodies.append(("whole", whole))
        else:
            message = await receive()
            self.bodies.append(("received", message["body"]))
        if scope["path"] == "/v1/boom":
            raise RuntimeError("a bug in the proxy")
        watch = scope["extensions"].get(HANGUP_EXTENSION)
        assert watch is not None, "a POST /v1/* here always gets the hang-up watch"
        left = trio.Event()
        stop = watch(left.set)
        try:
            await left.wait()
        finally:
            stop()
        self.hung_up.set()


@pytest.fixture
async def front_app(nursery) -> AsyncIterator[tuple[_App, str]]:
    """`relay.front.listener.serve` on 127.0.0.1:0 with the stand-in app."""
    app = _App()
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 0.5
    stop = trio.Event()
    urls = await nursery.start(
        lambda task_status: listener.serve(
            app,  # type: ignore[arg-type]
            config,
            shutdown_trigger=stop.wait,
            task_status=task_status,
        )
    )
    yield app, urls[0]
    stop.set()


@pytest.mark.skipif(not HangupWatch.available, reason="no epoll on this platform")
async def test_a_post_after_a_get_on_one_connection_gets_the_hangup_watch(front_app) -> None:
    """Once, the first GET handed the connection to Hypercorn for good, and a
    POST after it lost the hang-up watch (and send_now)."""
    app, url = front_app
    client = await RawClient.open(url)
    with trio.fail_after(5):
        await client.send(b"GET /health HTTP/1.1\r\nhost: relay\r\n\r\n")
        head, body = await client.response()
        assert (head.status_code, body) == (200, b"ok")
        await client.send(post())
        await trio.testing.wait_all_tasks_blocked(cushion=0.01)
        assert app.proxied == ["/v1/chat/completions"]
        await client.stream.send_eof()  # the client leaves (a half-close counts)
        await app.hung_up.wait()
    await client.aclose()


@pytest.mark.parametrize(
    ("request_bytes", "logged"),
    [
        (b"GET /boom HTTP/1.1\r\nhost: relay\r\n\r\n", "internal error in the app"),
        (post("/v1/boom"), "internal error in the proxy"),
    ],
    ids=["app", "proxy"],
)
async def test_a_bug_below_the_front_is_a_plain_500_and_the_connection_closes(
    front_app, caplog, request_bytes: bytes, logged: str
) -> None:
    _app, url = front_app
    client = await RawClient.open(url)
    with trio.fail_after(5):
        await client.send(request_bytes)
        head, body = await client.response()
        assert head.status_code == 500
        assert "internal relay error" in json.loads(body)["error"]["message"]
        assert await client.at_eof()
    assert logged in caplog.text
    await client.aclose()


async def test_a_body_that_came_with_its_head_is_handed_over_whole(front_app) -> None:
    """One read brought head and body: the proxy gets the body in the scope
    and waits for nothing; a body still on its way comes by ``receive()``."""
    app, url = front_app
    body = b'{"model": "m"}'
    whole = await RawClient.open(url)
    later = await RawClient.open(url)
    with trio.fail_after(5):
        await whole.send(post("/v1/boom", body=body))
        await whole.response()
        request = post("/v1/boom", body=body)
        await later.send(request[: -len(body)])  # the head only
        await trio.testing.wait_all_tasks_blocked(cushion=0.01)
        assert len(app.bodies) == 1  # the second waits for its body
        await later.send(body)
        await later.response()
    assert app.bodies == [("whole", body), ("received", body)]
    await whole.aclose()
    await later.aclose()


async def test_a_post_after_a_get_is_cancelled_when_its_client_leaves(relay) -> None:
    async with connect_worker(relay.ws_url) as worker:
        client = await RawClient.open(relay)
        with trio.fail_after(5):
            await client.send(b"GET /health HTTP/1.1\r\nhost: relay\r\n\r\n")
            head, _ = await client.response()
            assert head.status_code == 200
            await client.send(post())
            request = await worker.recv_request()
            await client.aclose()
            cancel = await worker.recv()
        assert isinstance(cancel, wire.Cancel)
        assert cancel.request_id == request.request_id
        assert cancel.reason == wire.CancelReason.CLIENT_DISCONNECT


async def test_head_gets_the_head_only_and_the_connection_goes_on(relay) -> None:
    client = await RawClient.open(relay)
    with trio.fail_after(5):
        await client.send(b"HEAD /health HTTP/1.1\r\nhost: relay\r\n\r\n")
        await client.send(b"GET /health HTTP/1.1\r\nhost: relay\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 200 ") < 2 or not data.endswith(b"}"):
            data += await client.stream.receive_some(65536)
    first, _, rest = data.partition(b"\r\n\r\n")
    assert b"content-length" in first.lower()
    assert rest.startswith(b"HTTP/1.1 200 ")  # no body between the two heads
    await client.aclose()


async def test_an_answer_that_left_the_body_unread_keeps_the_connection(start_relay) -> None:
    """The admin API refuses a bad token before it reads the body; the rest of
    the body is read and dropped, and the connection serves the next request."""
    relay = await start_relay(admin_token="right")
    client = await RawClient.open(relay)
    body = b'{"name": "' + b"x" * 100_000 + b'"}'
    with trio.fail_after(5):
        await client.send(
            b"POST /admin/keys HTTP/1.1\r\nhost: relay\r\nauthorization: Bearer wrong\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        )
        head, _ = await client.response()
        assert head.status_code == 401
        await client.send(b"GET /health HTTP/1.1\r\nhost: relay\r\n\r\n")
        head, answer = await client.response()
        assert head.status_code == 200
        assert json.loads(answer)["status"] == "ok"
    await client.aclose()
