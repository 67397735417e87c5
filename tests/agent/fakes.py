"""Fakes for the agent's tests: a relay over real WebSockets, an in-memory transport, and
a backend over real HTTP that gives one canned answer (for answers the FakeBackend cannot
be asked for)."""

from functools import partial
from typing import TypeVar

import attrs
import h11
import trio
import trio_websocket

from agent.config import AgentConfig, Backoff, Timeouts
from agent.exchange import Exchange, Reply, backend_headers
from agent.outbox import Outgoing
from agent.transport import closed_error
from wire import (
    CAPABILITY_DRAIN,
    PROTOCOL_VERSION,
    AgentToRelay,
    Register,
    RegisterAck,
    RelayToAgent,
    Request,
    ResponseChunk,
    ResponseComplete,
    decode_agent_frame,
    encode,
)

__all__ = [
    "CannedBackend",
    "FakeRelay",
    "MemoryRelayEnd",
    "MemoryTransport",
    "RelayConn",
    "answer_with",
    "drain",
    "fast_config",
    "memory_transport_pair",
    "start_fake_relay",
]

SECRET = "s3cret-value-never-logged"

T = TypeVar("T")


def fast_config(relay_url: str, backend_url: str, **overrides: object) -> AgentConfig:
    """A config with millisecond backoff, for tests that reconnect in real time."""
    values: dict[str, object] = {
        "worker_secret": SECRET,
        "proxy_url": relay_url,
        "backend_url": backend_url,
        "models": "fake-model",
        "worker_name": "test-box",
        "backoff": Backoff(
            initial_secs=0.01, max_secs=0.05, auth_initial_secs=0.02, auth_max_secs=0.1, jitter=0
        ),
        "timeouts": Timeouts(
            connect_secs=5,
            register_secs=5,
            close_secs=2,
            discovery_secs=5,
            discovery_retry_secs=0.02,
        ),
    }
    values.update(overrides)
    return AgentConfig.create(**values)  # type: ignore[arg-type]


# --- real WebSockets -----------------------------------------------------------


@attrs.define(eq=False)
class RelayConn:
    """The relay's end of one accepted agent connection."""

    ws: trio_websocket.WebSocketConnection
    path: str
    headers: dict[str, str]
    _done: trio.Event = attrs.field(factory=trio.Event)

    async def receive(self) -> AgentToRelay:
        """The next frame from the agent, decoded."""
        return decode_agent_frame(await self.ws.get_message())

    async def receive_raw(self) -> str | bytes:
        return await self.ws.get_message()

    async def send(self, msg: RelayToAgent) -> None:
        await self.ws.send_message(encode(msg))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.aclose(code, reason or None)
        self._done.set()

    async def register(
        self, *, worker_id: str = "w-1", capabilities: tuple[str, ...] | None = (CAPABILITY_DRAIN,)
    ) -> Register:
        """Receive the agent's `register` and acknowledge it."""
        msg = await self.receive()
        assert isinstance(msg, Register), msg
        await self.send(
            RegisterAck(
                worker_id=worker_id,
                models=msg.models,
                protocol_version=PROTOCOL_VERSION,
                capabilities=capabilities,
            )
        )
        return msg

    async def wait_closed(self) -> trio_websocket.CloseReason:
        """Read (and drop) frames until the agent closes; return the close reason."""
        while True:
            try:
                await self.ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                return exc.reason or trio_websocket.CloseReason(1006, None)


@attrs.define(eq=False)
class FakeRelay:
    """A relay stand-in: accepts agent WebSockets and hands them to the test in order.

    Attributes:
        url: ``ws://127.0.0.1:PORT``.
        reject_status: When set, upgrades are refused with this HTTP status.
        attempts: Upgrade requests seen (accepted or refused).
    """

    url: str = ""
    reject_status: int | None = None
    attempts: int = 0
    _send: trio.MemorySendChannel[RelayConn] = attrs.field(init=False)
    _receive: trio.MemoryReceiveChannel[RelayConn] = attrs.field(init=False)
    attempt_event: trio.Event = attrs.field(factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[RelayConn](16)

    async def next_connection(self) -> RelayConn:
        return await self._receive.receive()

    async def handler(self, request: trio_websocket.WebSocketRequest) -> None:
        self.attempts += 1
        event, self.attempt_event = self.attempt_event, trio.Event()
        event.set()
        if self.reject_status is not None:
            await request.reject(self.reject_status, body=b'{"error":"bad worker secret"}')
            return
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        ws = await request.accept()
        conn = RelayConn(ws, request.path, headers)
        await self._send.send(conn)
        await conn._done.wait()


async def start_fake_relay(nursery: trio.Nursery) -> FakeRelay:
    """Serve a `FakeRelay` on 127.0.0.1 (ephemeral port) in `nursery`."""
    relay = FakeRelay()
    server = await nursery.start(
        partial(
            trio_websocket.serve_websocket,
            relay.handler,
            "127.0.0.1",
            0,
            None,
            handler_nursery=nursery,
            max_message_size=64 * 1024 * 1024,
        )
    )
    relay.url = f"ws://127.0.0.1:{server.port}"
    return relay


# --- memory --------------------------------------------------------------------


@attrs.define(eq=False)
class MemoryTransport:
    """The agent's end of an in-memory connection (implements `agent.transport.Transport`)."""

    _outgoing: trio.MemorySendChannel[str]
    _incoming: trio.MemoryReceiveChannel[str | tuple[int, str]]
    closed_with: tuple[int, str] | None = None

    async def send(self, message: str) -> None:
        if self.closed_with is not None:
            raise closed_error(*self.closed_with)
        await self._outgoing.send(message)

    async def receive(self) -> str | bytes:
        if self.closed_with is not None:
            raise closed_error(*self.closed_with)
        item = await self._incoming.receive()
        if isinstance(item, tuple):  # the relay closed
            self.closed_with = item
            raise closed_error(*item)
        return item

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await trio.lowlevel.checkpoint()
        if self.closed_with is None:
            self.closed_with = (code, reason)
        self._outgoing.close()


@attrs.define(eq=False)
class MemoryRelayEnd:
    """The test's (relay's) end of an in-memory connection."""

    _incoming: trio.MemoryReceiveChannel[str]
    _outgoing: trio.MemorySendChannel[str | tuple[int, str]]
    transport: MemoryTransport

    async def receive(self) -> AgentToRelay:
        return decode_agent_frame(await self._incoming.receive())

    async def send(self, msg: RelayToAgent) -> None:
        await self._outgoing.send(encode(msg))

    async def send_raw(self, text: str) -> None:
        await self._outgoing.send(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._outgoing.send((code, reason))


def memory_transport_pair() -> tuple[MemoryTransport, MemoryRelayEnd]:
    """A connected (agent transport, relay end) pair over unbuffered-enough memory channels."""
    to_relay_send, to_relay_receive = trio.open_memory_channel[str](100)
    to_agent_send, to_agent_receive = trio.open_memory_channel[str | tuple[int, str]](100)
    transport = MemoryTransport(to_relay_send, to_agent_receive)
    return transport, MemoryRelayEnd(to_relay_receive, to_agent_send, transport)


@attrs.define(eq=False)
class CannedBackend:
    """A real HTTP/1.1 server on 127.0.0.1 answering every request with the same answer.

    Set the answer with `answer`; each request's path and body are kept in
    `requests`. The body goes out as one chunked piece per item of `pieces`.
    """

    status: int = 200
    content_type: str = "application/json"
    pieces: list[bytes] = attrs.field(factory=list)
    requests: list[tuple[str, bytes]] = attrs.field(factory=list)
    url: str = ""

    def answer(self, status: int, body: bytes | list[bytes], content_type: str) -> None:
        """Answer from now on with `status`, `body` (one piece or several) and `content_type`."""
        self.status, self.content_type = status, content_type
        self.pieces = body if isinstance(body, list) else [body]

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; started with the base URL."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        task_status.started(self.url)
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            try:
                while await self._one(stream, conn):
                    conn.start_next_cycle()
            except (trio.BrokenResourceError, h11.RemoteProtocolError):
                pass  # the client left mid-answer

    async def _one(self, stream: trio.SocketStream, conn: h11.Connection) -> bool:
        target, body = "", bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                target = event.target.decode()
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:  # ConnectionClosed: the pool closed an idle connection
                return False
        self.requests.append((target, bytes(body)))
        headers = [("content-type", self.content_type), ("transfer-encoding", "chunked")]
        await stream.send_all(conn.send(h11.Response(status_code=self.status, headers=headers)))
        for piece in self.pieces:
            await stream.send_all(conn.send(h11.Data(data=piece)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE


def drain(receive: trio.MemoryReceiveChannel[T]) -> list[T]:
    """Everything already waiting in `receive`, without waiting for more."""
    items: list[T] = []
    while True:
        try:
            items.append(receive.receive_nowait())
        except trio.WouldBlock:
            return items


async def answer_with(exchange: Exchange, request: Request) -> tuple[str, ResponseComplete, Reply]:
    """Run `request` through `exchange` to its end: the chunks' text, the complete, the reply.

    Every frame before the complete must be a chunk.
    """
    send, receive = trio.open_memory_channel[Outgoing](1000)
    reply = Reply(request, send)
    with trio.fail_after(10):
        await exchange.answer(request, backend_headers(request), reply)
    frames = drain(receive)
    complete = frames.pop()
    assert isinstance(complete, ResponseComplete)
    assert all(isinstance(f, ResponseChunk) for f in frames)
    return "".join(f.chunk for f in frames if isinstance(f, ResponseChunk)), complete, reply
