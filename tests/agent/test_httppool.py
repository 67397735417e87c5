"""The HTTP/1.1 pool against real sockets on 127.0.0.1: a raw HTTP/1.1 server per test,
scripted per connection, that counts the connections it accepted and sees the
client leave."""

from __future__ import annotations

import base64
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence

import attrs
import h11
import httpx
import pytest
import trio
import trio.testing

from agent.backend import open_backend
from agent.errors import BackendBroken, BackendUnreachable
from agent.httppool import IDLE_EXPIRY_SECS, HttpPool
from tests.agent.fakes import fast_config

# Every test runs with direct socket I/O and without it (the portable branch).
pytestmark = pytest.mark.usefixtures("direct_io")

_BODY = b'{"model":"m","messages":[]}'


@attrs.define(eq=False)
class Peer:
    """The server's end of one accepted connection."""

    index: int
    stream: trio.SocketStream
    conn: h11.Connection = attrs.field(factory=lambda: h11.Connection(h11.SERVER))
    requests: list[tuple[h11.Request, bytes]] = attrs.field(factory=list)
    eof: trio.Event = attrs.field(factory=trio.Event)  # the client closed its end

    async def next_request(self) -> h11.Request | None:
        """The next whole request, or None once the client closed the connection."""
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                if not await self._receive():
                    return None
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                self.requests.append((request, bytes(body)))
                return request
            else:
                raise AssertionError(f"unexpected {event!r}")

    async def respond(
        self, body: bytes | None = None, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """A 200 with a content-length; by default the body names this connection."""
        data = f"conn{self.index}".encode() if body is None else body
        head = [("content-length", str(len(data))), *headers]
        out = self.conn.send(h11.Response(status_code=200, headers=head))
        out += self.conn.send(h11.Data(data=data)) + self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(out)

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def answer_raw(self, data: bytes) -> None:
        """Send a whole answer written by hand; the connection can take another request."""
        await self.stream.send_all(data)
        self.conn = h11.Connection(h11.SERVER)

    async def wait_client_close(self) -> None:
        """Read (and drop) whatever comes until the client closes its end."""
        while await self._receive(keep=False):
            pass

    async def reset(self) -> None:
        """Close with a TCP RST instead of a FIN."""
        self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.stream.aclose()

    async def _receive(self, *, keep: bool = True) -> bool:
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            data = b""
        if not data:
            self.eof.set()
            return False
        if keep:
            self.conn.receive_data(data)
        return True


Script = Callable[[Peer], Awaitable[None]]


async def keep_alive(peer: Peer) -> None:
    """Answer every request on the connection, until the client closes it."""
    while await peer.next_request() is not None:
        await peer.respond()


@attrs.define(eq=False)
class RawBackend:
    """A raw HTTP/1.1 server: each accepted connection runs `scripts[n]` (the last one repeats)."""

    scripts: Sequence[Script]
    peers: list[Peer] = attrs.field(factory=list)
    url: str = ""

    async def run(
        self,
        host: str = "127.0.0.1",
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host=host)
        port = listeners[0].socket.getsockname()[1]
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        task_status.started(self.url)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        peer = Peer(len(self.peers), stream)
        self.peers.append(peer)
        script = self.scripts[min(peer.index, len(self.scripts) - 1)]
        try:
            await script(peer)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)


async def start(nursery: trio.Nursery, *scripts: Script, host: str = "127.0.0.1") -> RawBackend:
    server = RawBackend(scripts or (keep_alive,))
    await nursery.start(server.run, host)
    return server


def pool_for(server: RawBackend, *, max_idle: int = 8, url: str | None = None) -> HttpPool:
    return HttpPool.for_url(url or server.url, connect_timeout=5, max_idle=max_idle)


async def post(pool: HttpPool, path: str = "/v1/chat/completions") -> bytes:
    async with pool.post(path, _BODY, {}, url=f"http://backend{path}") as response:
        assert response.status_code == 200
        return await response.read()


async def not_kept(server: RawBackend, pool: HttpPool) -> None:
    """The pool kept no idle connection, and the backend saw ours close."""
    assert pool.statistics().idle == 0
    await server.peers[0].eof.wait()


# --- reuse ---------------------------------------------------------------------------------


async def test_sequential_requests_share_one_connection(nursery: trio.Nursery) -> None:
    server = await start(nursery)
    pool = pool_for(server)
    with trio.fail_after(5):
        assert await post(pool) == b"conn0"
        assert await post(pool) == b"conn0"
    assert len(server.peers) == 1
    assert len(server.peers[0].requests) == 2
    assert pool.statistics().opened == 1
    assert pool.statistics().reused == 1


async def test_idle_connections_are_taken_last_in_first_out(nursery: trio.Nursery) -> None:
    server = await start(nursery)
    pool = pool_for(server)
    with trio.fail_after(5):
        async with pool.post("/a", _BODY, {}, url="u") as first:
            assert await first.read() == b"conn0"
            async with pool.post("/b", _BODY, {}, url="u") as second:
                assert await second.read() == b"conn1"
        # conn1 went back first, conn0 last: conn0 is on top.
        assert await post(pool) == b"conn0"
        assert await post(pool) == b"conn0"
    assert pool.statistics().idle == 2


async def test_idle_connections_are_bounded_by_max_idle(nursery: trio.Nursery) -> None:
    server = await start(nursery)
    pool = pool_for(server, max_idle=1)
    with trio.fail_after(5):
        async with pool.post("/a", _BODY, {}, url="u") as first:
            await first.read()
            async with pool.post("/b", _BODY, {}, url="u") as second:
                await second.read()
        assert pool.statistics().idle == 1
        await server.peers[0].eof.wait()  # the second one back found the stack full
    assert not server.peers[1].eof.is_set()


async def test_closing_the_backend_closes_its_idle_connections(nursery: trio.Nursery) -> None:
    server = await start(nursery)
    async with open_backend(fast_config("ws://127.0.0.1:1", server.url)) as backend:
        with trio.fail_after(5):
            async with backend.post("/v1/chat/completions", _BODY, {}) as response:
                await response.read()
        assert not server.peers[0].eof.is_set()
    with trio.fail_after(5):
        await server.peers[0].eof.wait()


# --- what is not reused --------------------------------------------------------------------


@pytest.mark.parametrize("leave", ["cancel", "early exit", "exception"])
async def test_an_unfinished_exchange_closes_its_connection(
    nursery: trio.Nursery, leave: str
) -> None:
    async def stream_then_hold(peer: Peer) -> None:
        await peer.next_request()
        await peer.send_raw(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await peer.wait_client_close()

    server = await start(nursery, stream_then_hold, keep_alive)
    pool = pool_for(server)
    with trio.fail_after(5):
        with trio.CancelScope() as scope:
            try:
                async with pool.post("/v1/chat/completions", _BODY, {}, url="u") as response:
                    async for piece in response.iter_bytes():
                        assert piece == b"first"
                        if leave == "cancel":
                            scope.cancel()  # the next read is cancelled
                        elif leave == "early exit":
                            break
                        else:
                            raise ValueError("the caller failed")
            except ValueError:
                assert leave == "exception"
        assert scope.cancelled_caught == (leave == "cancel")
        # Closed at once, so the backend sees the client leave.
        await server.peers[0].eof.wait()
        assert pool.statistics().idle == 0
        assert await post(pool) == b"conn1"


async def test_an_unread_body_is_not_reused(nursery: trio.Nursery) -> None:
    server = await start(nursery)
    pool = pool_for(server)
    with trio.fail_after(5):
        async with pool.post("/v1/chat/completions", _BODY, {}, url="u") as response:
            assert response.status_code == 200
        await server.peers[0].eof.wait()
        assert await post(pool) == b"conn1"
    assert pool.statistics().reused == 0


async def test_connection_close_from_the_backend_is_not_reused(nursery: trio.Nursery) -> None:
    async def answer_then_hold(peer: Peer) -> None:
        await peer.next_request()
        await peer.respond(headers=[("connection", "close")])
        await peer.wait_client_close()

    server = await start(nursery, answer_then_hold, keep_alive)
    pool = pool_for(server)
    with trio.fail_after(5):
        assert await post(pool) == b"conn0"
        # Nothing says closed on the socket yet: the header alone decided.
        await not_kept(server, pool)
        assert await post(pool) == b"conn1"


@pytest.mark.parametrize(
    "junk",
    [
        b"junk",
        b"\x00\x01",
        b"HTTP/1.1 200 OK\r\n",
        b"\r\nHTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nextra",
    ],
    ids=["text", "binary", "a head begun", "a blank line and a head begun", "a whole answer"],
)
async def test_garbage_past_the_answer_is_not_reused(nursery: trio.Nursery, junk: bytes) -> None:
    async def answer_then_junk(peer: Peer) -> None:
        await peer.next_request()
        await peer.send_raw(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" + junk)
        await peer.wait_client_close()

    server = await start(nursery, answer_then_junk, keep_alive)
    pool = pool_for(server)
    with trio.fail_after(5):
        assert await post(pool) == b"ok"  # the answer itself stands
        await not_kept(server, pool)
        assert await post(pool) == b"conn1"


async def test_an_http_1_0_answer_is_not_reused_even_with_keep_alive(
    nursery: trio.Nursery,
) -> None:
    async def old_server(peer: Peer) -> None:
        await peer.next_request()
        await peer.send_raw(
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok"
        )
        await peer.wait_client_close()

    server = await start(nursery, old_server, keep_alive)
    pool = pool_for(server)
    with trio.fail_after(5):
        assert await post(pool) == b"ok"
        await not_kept(server, pool)


@pytest.mark.parametrize("misdeed", ["close", "junk"])
async def test_an_idle_connection_turned_readable_is_dropped(
    nursery: trio.Nursery, misdeed: str
) -> None:
    answered = trio.Event()  # the first exchange is over: misbehave only now

    async def answer_then_misbehave(peer: Peer) -> None:
        await peer.next_request()
        await peer.respond()
        await answered.wait()
        if misdeed == "close":
            await peer.stream.aclose()
        else:
            await peer.send_raw(b"HTTP/1.1 200 OK\r\n")
            await peer.wait_client_close()

    server = await start(nursery, answer_then_misbehave, keep_alive)
    pool = pool_for(server)
    with trio.fail_after(5):
        assert await post(pool) == b"conn0"
        (idle,) = pool._idle
        answered.set()
        await trio.lowlevel.wait_readable(idle.stream.socket)
        assert await post(pool) == b"conn1"
        if misdeed == "junk":
            await server.peers[0].eof.wait()  # and the pool closed it
    stats = pool.statistics()
    assert (stats.opened, stats.reused, stats.retried) == (2, 0, 0)


async def test_an_idle_connection_past_its_expiry_is_closed(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.rate = 1  # real time runs too, so that fail_after still guards against a hang
    server = await start(nursery)
    pool = pool_for(server)
    with trio.fail_after(30):
        assert await post(pool) == b"conn0"
        mock_clock.jump(IDLE_EXPIRY_SECS - 0.5)
        assert await post(pool) == b"conn0"
        mock_clock.jump(IDLE_EXPIRY_SECS)
        assert await post(pool) == b"conn1"
        await server.peers[0].eof.wait()
    assert len(server.peers[0].requests) == 2


async def test_expired_connections_at_the_bottom_are_closed_when_one_returns(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.rate = 1  # real time runs too, so that fail_after still guards against a hang
    server = await start(nursery)
    pool = pool_for(server)
    with trio.fail_after(30):
        async with pool.post("/a", _BODY, {}, url="u") as first:
            await first.read()
            async with pool.post("/b", _BODY, {}, url="u") as second:
                await second.read()
            mock_clock.jump(IDLE_EXPIRY_SECS)  # conn1 is idle and now expired
        await server.peers[1].eof.wait()
    assert pool.statistics().idle == 1


# --- the keep-alive race -------------------------------------------------------------------


def answer_once_then(misdeed: str) -> Script:
    async def script(peer: Peer) -> None:
        await peer.next_request()
        await peer.respond()
        await peer.next_request()  # read the second request, never answer it
        if misdeed == "reset":
            await peer.reset()
        elif misdeed.startswith("partial answer"):
            await peer.send_raw(b"HTTP/1.1 200 OK\r\n")
            if misdeed.endswith("reset"):
                await peer.reset()
            else:
                await peer.stream.aclose()
        else:
            await peer.stream.aclose()

    return script


async def refuse_to_answer(peer: Peer) -> None:
    await peer.next_request()
    await peer.stream.aclose()


@pytest.mark.parametrize("misdeed", ["close", "reset"])
async def test_a_reused_connection_closed_before_answering_is_retried_once(
    nursery: trio.Nursery, misdeed: str
) -> None:
    server = await start(nursery, answer_once_then(misdeed), keep_alive)
    pool = pool_for(server)
    with trio.fail_after(5):
        assert await post(pool, "/first") == b"conn0"
        assert await post(pool, "/second") == b"conn1"
    assert [r.target for r, _ in server.peers[0].requests] == [b"/first", b"/second"]
    assert [r.target for r, _ in server.peers[1].requests] == [b"/second"]
    assert len(server.peers) == 2
    assert pool.statistics().retried == 1


async def test_the_retry_is_not_retried(nursery: trio.Nursery) -> None:
    server = await start(nursery, answer_once_then("close"), refuse_to_answer, keep_alive)
    pool = pool_for(server)
    with trio.fail_after(5):
        await post(pool)
        with pytest.raises(BackendBroken, match="closed the connection before answering"):
            await post(pool)
    assert len(server.peers) == 2
    assert pool.statistics().retried == 1


async def test_a_fresh_connection_is_never_retried(nursery: trio.Nursery) -> None:
    server = await start(nursery, refuse_to_answer, keep_alive)
    pool = pool_for(server)
    with trio.fail_after(5), pytest.raises(BackendBroken):
        await post(pool)
    assert len(server.peers) == 1
    assert pool.statistics().retried == 0


@pytest.mark.parametrize("misdeed", ["partial answer, close", "partial answer, reset"])
async def test_no_retry_once_answer_bytes_arrived(nursery: trio.Nursery, misdeed: str) -> None:
    server = await start(nursery, answer_once_then(misdeed), keep_alive)
    pool = pool_for(server)
    with trio.fail_after(5):
        await post(pool)
        with pytest.raises(
            BackendBroken, match=r"closed the connection in the middle of the head|reset by peer"
        ):
            await post(pool)
    assert len(server.peers) == 1
    assert pool.statistics().retried == 0


# --- responses -----------------------------------------------------------------------------


async def test_a_chunked_body_comes_one_piece_per_read(nursery: trio.Nursery) -> None:
    async def three_chunks(peer: Peer) -> None:
        await peer.next_request()
        await peer.answer_raw(  # one write: the client gets it in one read
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n3\r\ndef\r\n3\r\nghi\r\n0\r\n\r\n"
        )
        await keep_alive(peer)

    server = await start(nursery, three_chunks)
    pool = pool_for(server)
    with trio.fail_after(5):
        async with pool.post("/v1/chat/completions", _BODY, {}, url="u") as response:
            pieces = [piece async for piece in response.iter_bytes()]
        assert pieces == [b"abcdefghi"]
        assert all(type(piece) is bytes for piece in pieces)
        assert pool.statistics().idle == 1
        assert await post(pool) == b"conn0"


async def test_a_close_delimited_body_is_read_to_the_end(nursery: trio.Nursery) -> None:
    async def until_close(peer: Peer) -> None:
        await peer.next_request()
        await peer.send_raw(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nhello ")
        await peer.send_raw(b"world")
        await peer.stream.aclose()

    server = await start(nursery, until_close, keep_alive)
    pool = pool_for(server)
    with trio.fail_after(5):
        assert await post(pool) == b"hello world"
        assert pool.statistics().idle == 0
        assert await post(pool) == b"conn1"


async def test_informational_answers_are_skipped(nursery: trio.Nursery) -> None:
    async def hints_first(peer: Peer) -> None:
        await peer.next_request()
        await peer.send_raw(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"
        )
        await peer.answer_raw(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok")
        await keep_alive(peer)

    server = await start(nursery, hints_first)
    pool = pool_for(server)
    with trio.fail_after(5):
        async with pool.post("/v1/x", _BODY, {}, url="u") as response:
            assert response.status_code == 201
            assert "link" not in response.headers
            assert await response.read() == b"ok"
        assert await post(pool) == b"conn0"  # the exchange ended cleanly: reused


async def test_response_headers_are_filtered_joined_and_the_body_left_encoded(
    nursery: trio.Nursery,
) -> None:
    async def odd_headers(peer: Peer) -> None:
        await peer.next_request()
        await peer.answer_raw(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nX-A: 1\r\nx-a: 2\r\n"
            b"Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: 4\r\n\r\nGZIP"
        )
        await keep_alive(peer)

    server = await start(nursery, odd_headers)
    pool = pool_for(server)
    with trio.fail_after(5):
        async with pool.post("/v1/x", _BODY, {}, url="http://b/v1/x") as response:
            assert response.status_code == 404
            assert not response.is_success
            assert response.url == "http://b/v1/x"
            assert response.headers == {"content-type": "application/json", "x-a": "1, 2"}
            assert await response.read() == b"GZIP"  # never decompressed


async def test_an_answer_arriving_one_byte_per_read_is_parsed(nursery: trio.Nursery) -> None:
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-a: 1  \r\n"
        b"transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )

    async def byte_by_byte(peer: Peer) -> None:
        await peer.next_request()
        for index in range(len(answer)):
            await peer.send_raw(answer[index : index + 1])
            # The client has read this byte (alone) before the next is sent.
            await trio.testing.wait_all_tasks_blocked()
        peer.conn = h11.Connection(h11.SERVER)
        await keep_alive(peer)

    server = await start(nursery, byte_by_byte)
    pool = pool_for(server)
    with trio.fail_after(10):
        async with pool.post("/v1/chat/completions", _BODY, {}, url="u") as response:
            assert response.status_code == 200
            assert response.headers == {"content-type": "text/plain", "x-a": "1"}
            pieces = [piece async for piece in response.iter_bytes()]
        assert pieces == [b"a", b"b", b"c"]  # one read, one piece
        assert pool.statistics().idle == 1
        assert await post(pool) == b"conn0"


async def test_trailers_are_dropped_and_the_connection_reused(nursery: trio.Nursery) -> None:
    async def with_trailers(peer: Peer) -> None:
        await peer.next_request()
        await peer.answer_raw(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-t\r\n\r\n"
            b"2\r\nok\r\n0\r\nx-t: 1\r\n\r\n"
        )
        await keep_alive(peer)

    server = await start(nursery, with_trailers)
    pool = pool_for(server)
    with trio.fail_after(5):
        async with pool.post("/v1/x", _BODY, {}, url="u") as response:
            assert await response.read() == b"ok"
        assert response.headers == {}
        assert await post(pool) == b"conn0"


def _head(size: int) -> bytes:
    """A response head of about `size` bytes, 1 KiB header lines, and a 2-byte body."""
    lines = b"".join(b"x-h%03d: %s\r\n" % (i, b"v" * 1016) for i in range(size // 1024))
    return b"HTTP/1.1 200 OK\r\n" + lines + b"content-length: 2\r\n\r\nok"


@pytest.mark.parametrize(
    "answer",
    [
        _head(101 * 1024),
        # Never ends: refused once 100 KiB arrived, not when the line ends.
        b"HTTP/1.1 200 OK\r\nx-h: " + b"v" * (101 * 1024),
        # The 1xx heads count too.
        b"HTTP/1.1 103 Early Hints\r\nlink: " + b"v" * (60 * 1024) + b"\r\n\r\n" + _head(60 * 1024),
    ],
    ids=["whole", "unfinished", "after a 1xx"],
)
async def test_a_response_head_over_100_kib_is_refused(
    nursery: trio.Nursery, answer: bytes
) -> None:
    async def huge_head(peer: Peer) -> None:
        await peer.next_request()
        await peer.send_raw(answer)
        await peer.wait_client_close()

    server = await start(nursery, huge_head)
    pool = pool_for(server)
    with trio.fail_after(5):
        with pytest.raises(BackendBroken, match="response head is larger than 100 KiB"):
            await post(pool)
        await server.peers[0].eof.wait()


async def test_a_response_head_under_100_kib_is_accepted(nursery: trio.Nursery) -> None:
    async def big_head(peer: Peer) -> None:
        await peer.next_request()
        await peer.answer_raw(_head(98 * 1024))
        await keep_alive(peer)

    server = await start(nursery, big_head)
    pool = pool_for(server)
    with trio.fail_after(5):
        async with pool.post("/v1/x", _BODY, {}, url="u") as response:
            assert len(response.headers) == 98
            assert await response.read() == b"ok"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"HTTP/1.1 2000 OK\r\n\r\n", r"malformed response \(HttpParserInvalidStatusError"),
        (b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", r"malformed response \(HttpParserError"),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            r"malformed response \(HttpParserError",
        ),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101 Switching Protocols to a POST"),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n",
            "101 Switching Protocols to a POST",
        ),
    ],
    ids=["status", "header", "chunk size", "101", "101 with upgrade"],
)
async def test_a_malformed_answer_is_backend_broken(
    nursery: trio.Nursery, answer: bytes, reason: str
) -> None:
    async def malformed(peer: Peer) -> None:
        await peer.next_request()
        await peer.send_raw(answer)
        await peer.wait_client_close()

    server = await start(nursery, malformed)
    pool = pool_for(server)
    with trio.fail_after(5):
        with pytest.raises(BackendBroken, match=f"the backend broke the connection: .*{reason}"):
            await post(pool)
        await server.peers[0].eof.wait()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n5\r\nsec",
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst",
    ],
    ids=["chunked", "content-length"],
)
async def test_a_truncated_body_is_backend_broken_without_credentials(
    nursery: trio.Nursery, answer: bytes
) -> None:
    async def truncate(peer: Peer) -> None:
        await peer.next_request()
        await peer.send_raw(answer)
        await peer.stream.aclose()

    server = await start(nursery, truncate)
    url = server.url.replace("http://", "http://user:s3cret@") + "/p"
    async with open_backend(fast_config("ws://127.0.0.1:1", url)) as backend:
        with trio.fail_after(5), pytest.raises(BackendBroken) as caught:
            async with backend.post("/v1/chat/completions", _BODY, {}) as response:
                await response.read()
    assert "s3cret" not in str(caught.value)
    assert caught.value.url == f"{server.url}/p/v1/chat/completions"
    assert caught.value.message == (
        "the backend broke the connection: it closed the connection before the body ended"
    )


# --- requests ------------------------------------------------------------------------------


async def test_the_request_keeps_the_prefix_and_sends_only_its_own_framing(
    nursery: trio.Nursery,
) -> None:
    server = await start(nursery)
    config = fast_config("ws://127.0.0.1:1", server.url + "/prefix", backend_api_key="bk-1")
    caller = {
        "host": "evil.example",
        "content-length": "999",
        "transfer-encoding": "chunked",
        "connection": "close",
        "accept-encoding": "gzip",
        "te": "trailers",
        "upgrade": "h2c",
        "authorization": "Bearer the-client",
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
    }
    async with open_backend(config) as backend:
        with trio.fail_after(5):
            async with backend.post("/v1/chat/completions?x=1", _BODY, caller) as response:
                assert await response.read() == b"conn0"
    ((request, body),) = server.peers[0].requests
    assert request.method == b"POST"
    assert request.target == b"/prefix/v1/chat/completions?x=1"
    assert body == _BODY
    assert sorted(request.headers) == sorted(
        [
            (b"host", server.url.removeprefix("http://").encode()),
            (b"content-length", str(len(_BODY)).encode()),
            (b"accept-encoding", b"identity"),
            (b"authorization", b"Bearer bk-1"),
            (b"content-type", b"application/json"),
            (b"anthropic-version", b"2023-06-01"),
        ]
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"x-a": "1\r\nx-injected: 1"},
        {"x-a": "1\nx-injected: 1"},
        {"x-a": "1\rx-injected: 1"},
        {"x-a": "1\x00"},
        {"x-a": "1\r\n\r\nPOST /smuggled HTTP/1.1"},
        {"x-a\r\nx-injected": "1"},
        {"x-a: 1\r\nx-injected": "1"},
        {"x-a\x00": "1"},
        {"": "1"},
        {"x-a": "\u2028"},  # not Latin-1
    ],
    ids=[
        "CRLF in value",
        "LF in value",
        "CR in value",
        "NUL in value",
        "smuggled request",
        "CRLF in name",
        "colon and CRLF in name",
        "NUL in name",
        "empty name",
        "non-Latin-1 value",
    ],
)
async def test_a_header_that_could_inject_is_refused_before_connecting(
    nursery: trio.Nursery, headers: dict[str, str]
) -> None:
    server = await start(nursery)
    pool = pool_for(server)
    with trio.fail_after(5):
        with pytest.raises(BackendBroken, match="the request cannot be sent to the backend"):
            async with pool.post("/v1/x", _BODY, headers, url="http://b/v1/x"):
                pass
        assert pool.statistics().opened == 0
        assert await post(pool) == b"conn0"  # the pool is fine
    ((request, _body),) = server.peers[0].requests
    assert request.target == b"/v1/chat/completions"
    assert not any(b"inject" in name or name == b"x-a" for name, _ in request.headers)


async def test_a_refused_header_value_is_never_shown(nursery: trio.Nursery) -> None:
    server = await start(nursery)
    pool = pool_for(server)
    with trio.fail_after(5), pytest.raises(BackendBroken) as caught:
        async with pool.post("/v1/x", _BODY, {"x-key": "s3cret\r\nx: 1"}, url="u"):
            pass
    assert "s3cret" not in str(caught.value)
    assert "x-key" in caught.value.message


async def test_latin_1_values_and_tabs_are_forwarded_as_they_are(nursery: trio.Nursery) -> None:
    server = await start(nursery)
    pool = pool_for(server)
    with trio.fail_after(5):
        async with pool.post("/v1/x", _BODY, {"X-Note": "caf\xe9\tau lait"}, url="u") as response:
            await response.read()
    ((request, _body),) = server.peers[0].requests
    assert (b"x-note", b"caf\xe9\tau lait") in request.headers


async def test_a_path_with_spaces_or_non_ascii_is_percent_encoded(nursery: trio.Nursery) -> None:
    server = await start(nursery)
    pool = pool_for(server)
    with trio.fail_after(5):
        await post(pool, "/v1/a b/é?q=1 2")
    assert server.peers[0].requests[0][0].target == b"/v1/a%20b/%C3%A9?q=1%202"


async def test_an_ipv6_literal_backend(nursery: trio.Nursery) -> None:
    try:
        server = await start(nursery, host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    pool = pool_for(server)
    with trio.fail_after(5):
        assert await post(pool) == b"conn0"
    host = dict(server.peers[0].requests[0][0].headers)[b"host"]
    assert host == server.url.removeprefix("http://").encode()
    assert host.startswith(b"[::1]:")


def test_the_url_gives_host_port_prefix_and_host_header() -> None:
    pool = HttpPool.for_url("http://[::1]:8080/p/", connect_timeout=1, max_idle=1)
    assert (pool.host, pool.port, pool.prefix, pool.host_header) == (
        "::1",
        8080,
        "/p",
        b"[::1]:8080",
    )
    pool = HttpPool.for_url("http://box:80", connect_timeout=1, max_idle=1)
    assert (pool.port, pool.prefix, pool.host_header) == (80, "", b"box")
    assert pool.authorization is None
    with pytest.raises(ValueError, match="http:// URLs only"):
        HttpPool.for_url("https://box", connect_timeout=1, max_idle=1)


def test_url_credentials_become_basic_auth_as_with_httpx() -> None:
    url = "http://us%40er:p%3Ass@box:8000"
    pool = HttpPool.for_url(url, connect_timeout=1, max_idle=1)
    expected = httpx.BasicAuth("us@er", "p:ss")._auth_header
    assert pool.authorization == expected.encode()
    assert base64.b64decode(expected.split()[1]) == b"us@er:p:ss"
    assert "p%3Ass" not in repr(pool)


# --- connecting ----------------------------------------------------------------------------


async def test_connection_refused_is_unreachable_without_credentials() -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = fast_config("ws://127.0.0.1:1", f"http://u:s3cret@127.0.0.1:{port}")
    async with open_backend(config) as backend:
        with trio.fail_after(5), pytest.raises(BackendUnreachable) as caught:
            async with backend.post("/v1/chat/completions", _BODY, {}):
                pass
    assert "s3cret" not in str(caught.value)
    assert "cannot connect to the backend" in caught.value.message
    assert "Connection refused" in caught.value.message


async def test_the_connect_timeout_is_the_configured_one(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never_connects(host: str, port: int) -> trio.SocketStream:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    # No real I/O in virtual time: the connect is a fake that never completes.
    monkeypatch.setattr(trio, "open_tcp_stream", never_connects)
    timeouts = fast_config("ws://127.0.0.1:1", "http://127.0.0.1:9").timeouts
    config = fast_config(
        "ws://127.0.0.1:1",
        "http://127.0.0.1:9",
        timeouts=attrs.evolve(timeouts, backend_connect_secs=7.5),
    )
    async with open_backend(config) as backend:
        with pytest.raises(BackendUnreachable, match=r"no connection within 7\.5 s"):
            async with backend.post("/v1/chat/completions", _BODY, {}):
                pass
    assert trio.current_time() == pytest.approx(7.5)
