"""The relay's hot path in memory: `Proxy` and `Hub`, no socket, no process.

`MemoryRelay` is a relay's state (`relay.core.Relay`) and its proxy, with
workers connected through in-memory transports (`MemoryWorker`) and clients
served by `MemoryExchange`, which plays the front's part of the ASGI
conversation: it hands the proxy the request body, records what the proxy
sends, offers the front's scope extensions (``send_now``, the hang-up
watch) or, without them, reports a hang-up through ``receive()`` as
Hypercorn does. Everything runs on trio's clock, so tests about deadlines
can use the autojump clock (no real I/O is in flight).

What this cannot show (real socket buffers, the front's HTTP/1.1 framing,
the worker socket's WebSocket framing) stays in the real-socket tests.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import trio

import wire
from relay.boundary import HANGUP_EXTENSION, SEND_NOW_EXTENSION, WHOLE_BODY_EXTENSION, Sent
from relay.core import Relay
from relay.http_api import Proxy
from relay.worker_hub import TransportClosed
from tests.relay.fake_worker import ScriptedWorker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, MutableMapping, Sequence

    from relay.config import RelayConfig
    from relay.worker_hub import Hub

__all__ = [
    "MemoryExchange",
    "MemoryRelay",
    "MemoryTransport",
    "MemoryWorker",
    "Response",
    "refusal",
]


class MemoryTransport:
    """The relay's end of a worker socket (the hub's `Transport`), as two memory channels."""

    def __init__(self) -> None:
        self.to_relay_tx, self.to_relay_rx = trio.open_memory_channel[str](100)
        self.to_agent_tx, self.to_agent_rx = trio.open_memory_channel[str](100)
        self.closed: tuple[int, str] | None = None
        self.closed_event = trio.Event()

    async def send(self, text: str) -> None:
        try:
            await self.to_agent_tx.send(text)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise TransportClosed from None

    async def receive(self) -> str:
        try:
            return await self.to_relay_rx.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise TransportClosed from None

    async def aclose(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self.closed_event.set()

    async def agent_send(self, message: wire.Message) -> None:
        await self.to_relay_tx.send(wire.encode(message))

    async def agent_recv(self) -> wire.RelayToAgent:
        return wire.decode_relay_frame(await self.to_agent_rx.receive())


@attrs.define(eq=False)
class MemoryWorker(ScriptedWorker):
    """A scripted agent on a `MemoryTransport`: the in-memory twin of `FakeWorker`."""

    transport: MemoryTransport

    async def send_raw(self, data: str | bytes) -> None:
        assert isinstance(data, str)  # the hub's Transport speaks text frames
        await self.transport.to_relay_tx.send(data)

    async def recv_raw(self) -> str:
        return await self.transport.to_agent_rx.receive()

    async def disconnect(self) -> None:
        """The agent's socket goes away (as a killed agent's would)."""
        await self.transport.to_relay_tx.aclose()


@attrs.frozen
class Response:
    """What a client received for one request."""

    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    complete: bool  # the last body piece was sent (more_body false)
    direct: int  # body pieces written through send_now

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:  # noqa: ANN401 - parsed JSON is any shape
        return json.loads(self.body)


class MemoryExchange:
    """One client request as a server would serve it to the proxy, in memory.

    Args:
        path: the request's path (and ``?query``).
        body: the request body.
        headers: request headers (names lower-cased on the way in).
        extensions: offer the front's ``send_now`` and hang-up watch; without
            them a hang-up is reported through ``receive()`` (Hypercorn's way).
        direct: what ``send_now`` answers once a stream has started.
        whole: hand the body over in the scope, as the builtin front does when
            it came with the head (``receive()`` then only waits for a hang-up).
    """

    def __init__(
        self,
        path: str,
        body: bytes,
        headers: Sequence[tuple[str, str]] = (),
        *,
        extensions: bool = True,
        direct: Sent = Sent.ALL,
        whole: bool = False,
    ) -> None:
        target, _, query = path.partition("?")
        self.scope: dict[str, Any] = {
            "type": "http",
            "method": "POST",
            "path": target,
            "query_string": query.encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
            "extensions": {},
        }
        if extensions:
            self.scope["extensions"][SEND_NOW_EXTENSION] = self.send_now
            self.scope["extensions"][HANGUP_EXTENSION] = self.watch
        if whole:
            self.scope["extensions"][WHOLE_BODY_EXTENSION] = body
        self._body = body
        self._body_sent = whole
        self._direct = direct
        self._on_hangup: Callable[[], None] | None = None
        self.gone = trio.Event()  # the client hung up
        self.started = trio.Event()  # the response head arrived
        self.done = trio.Event()  # the whole response arrived
        self.finished = trio.Event()  # the proxy returned (`MemoryRelay.serve`)
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.pieces: list[bytes] = []
        self.direct_writes = 0
        self.writing = False  # a body `send` is in progress
        self._gate: trio.Event | None = None

    # -- the client's side --

    def hang_up(self) -> None:
        """The client leaves (the front's hang-up watch, or ``http.disconnect``)."""
        self.gone.set()
        on_hangup, self._on_hangup = self._on_hangup, None
        if on_hangup is not None:
            on_hangup()

    def hold(self) -> None:
        """The client's socket is full: body sends block until `release()`."""
        self._gate = trio.Event()

    def release(self) -> None:
        assert self._gate is not None
        self._gate.set()
        self._gate = None

    def response(self) -> Response:
        return Response(
            status=self.status or 0,
            headers=self.headers,
            body=b"".join(self.pieces),
            complete=self.done.is_set(),
            direct=self.direct_writes,
        )

    # -- the ASGI side the proxy sees --

    async def receive(self) -> MutableMapping[str, Any]:
        if not self._body_sent and not self.gone.is_set():
            self._body_sent = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        await trio.lowlevel.checkpoint()  # a real send is a checkpoint too
        assert not self.done.is_set(), f"sent after the end: {message}"
        if message["type"] == "http.response.start":
            assert self.status is None, "two response heads"
            self.status = message["status"]
            self.headers = {k.decode(): v.decode() for k, v in message.get("headers", ())}
            self.started.set()
        else:
            assert self.status is not None, "a body before the head"
            if self._gate is not None:
                self.writing = True
                try:
                    await self._gate.wait()
                finally:
                    self.writing = False
            self.pieces.append(message.get("body", b""))
            if not message.get("more_body", False):
                self.done.set()

    def send_now(self, body: bytes) -> Sent:
        assert not self.writing, "send_now while a send is in progress"
        if self.status is None or self.done.is_set() or self._direct is Sent.NONE:
            return Sent.NONE
        self.direct_writes += 1
        self.pieces.append(body)
        return self._direct

    def watch(self, on_hangup: Callable[[], None]) -> Callable[[], None]:
        assert self._on_hangup is None, "watched twice"
        self._on_hangup = on_hangup

        def unwatch() -> None:
            self._on_hangup = None

        return unwatch


@attrs.define(eq=False)
class MemoryRelay:
    """A relay's state and its proxy, served in memory from the test's nursery."""

    relay: Relay
    nursery: trio.Nursery
    proxy: Proxy = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.proxy = Proxy(self.relay)

    @classmethod
    def from_config(cls, config: RelayConfig, nursery: trio.Nursery) -> MemoryRelay:
        return cls(Relay.from_config(config), nursery)

    @property
    def hub(self) -> Hub:
        return self.relay.hub

    # -- workers --

    async def attach_worker(
        self,
        models: Sequence[str] = ("m1",),
        *,
        max_concurrent: int = 1,
        name: str = "fake",
        capabilities: tuple[str, ...] | None = None,
    ) -> MemoryWorker:
        """A registered worker whose session runs until its transport closes."""
        transport = MemoryTransport()
        self.nursery.start_soon(self.hub.run_session, transport, "memory")
        worker = MemoryWorker(transport)
        await worker.register(
            models, max_concurrent=max_concurrent, name=name, capabilities=capabilities
        )
        return worker

    @asynccontextmanager
    async def worker(
        self, models: Sequence[str] = ("m1",), *, max_concurrent: int = 1, name: str = "fake"
    ) -> AsyncIterator[MemoryWorker]:
        """`attach_worker` for the block's duration; it disconnects at the end."""
        worker = await self.attach_worker(models, max_concurrent=max_concurrent, name=name)
        try:
            yield worker
        finally:
            await worker.disconnect()

    # -- clients --

    def exchange(
        self,
        path: str = "/v1/chat/completions",
        json_body: object = None,
        *,
        content: bytes | None = None,
        headers: Sequence[tuple[str, str]] = (),
        extensions: bool = True,
        direct: Sent = Sent.ALL,
        whole: bool = False,
    ) -> MemoryExchange:
        body = content if content is not None else json.dumps(json_body).encode()
        return MemoryExchange(
            path, body, headers, extensions=extensions, direct=direct, whole=whole
        )

    async def serve(self, exchange: MemoryExchange) -> Response:
        """Run the proxy for `exchange` in this task, to its end."""
        try:
            await self.proxy(exchange.scope, exchange.receive, exchange.send)
        finally:
            exchange.finished.set()
        return exchange.response()

    async def post(
        self,
        path: str = "/v1/chat/completions",
        json_body: object = None,
        *,
        content: bytes | None = None,
        headers: Sequence[tuple[str, str]] = (),
        extensions: bool = True,
        whole: bool = False,
    ) -> Response:
        """One request through the proxy, served in this task."""
        exchange = self.exchange(
            path, json_body, content=content, headers=headers, extensions=extensions, whole=whole
        )
        return await self.serve(exchange)

    def start(
        self,
        path: str = "/v1/chat/completions",
        json_body: object = None,
        *,
        extensions: bool = True,
        direct: Sent = Sent.ALL,
    ) -> MemoryExchange:
        """One request through the proxy in a task of its own; returns at once."""
        exchange = self.exchange(path, json_body, extensions=extensions, direct=direct)
        self.nursery.start_soon(self.serve, exchange)
        return exchange


def refusal(request: wire.Request, code: str) -> wire.ResponseComplete:
    """What our agent answers a request it refuses (nothing ran): 503 with the refusal code."""
    return wire.ResponseComplete(
        request_id=request.request_id,
        status_code=503,
        headers={"content-type": "application/json", wire.REFUSED_HEADER: code},
        body='{"error":{"message":"refused"}}',
    )
