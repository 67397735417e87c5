"""A scripted worker: a real trio-websocket client speaking the wire protocol.

Tests drive it frame by frame to stage what a real agent cannot (hostile
frames, silence, lies about capacity). `ScriptedWorker` holds the script's
verbs; `FakeWorker` speaks them over a real WebSocket, and
tests/relay/memory_relay.py's `MemoryWorker` over a memory transport.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

import attrs
import trio
from trio_websocket import WebSocketConnection, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

import wire

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

E = TypeVar("E")


@attrs.define(eq=False)
class ScriptedWorker:
    """The agent's side of the protocol, frame by frame; subclasses carry the frames."""

    ack: wire.RegisterAck | None = attrs.field(default=None, kw_only=True)

    async def send_raw(self, data: str | bytes) -> None:
        raise NotImplementedError

    async def recv_raw(self) -> str | bytes:
        raise NotImplementedError

    @property
    def worker_id(self) -> str:
        assert self.ack is not None
        return self.ack.worker_id

    async def send(self, message: wire.Message) -> None:
        await self.send_raw(wire.encode(message))

    async def recv(self) -> wire.RelayToAgent:
        """The next frame that is not a ping (pings are answered)."""
        while True:
            message = wire.decode_relay_frame(await self.recv_raw())
            if isinstance(message, wire.Ping):
                await self.send(
                    wire.Pong(current_load=0, timestamp_unix_ms=message.timestamp_unix_ms)
                )
                continue
            return message

    async def register(
        self,
        models: Sequence[str],
        *,
        max_concurrent: int,
        name: str,
        capabilities: tuple[str, ...] | None,
    ) -> wire.RegisterAck:
        """Send the handshake's `Register` and keep the relay's `RegisterAck` as `ack`."""
        await self.send(
            wire.Register(
                worker_name=name,
                models=tuple(models),
                max_concurrent=max_concurrent,
                protocol_version=wire.PROTOCOL_VERSION,
                current_load=0,
                capabilities=capabilities,
            )
        )
        ack = await self.recv()
        assert isinstance(ack, wire.RegisterAck), ack
        self.ack = ack
        return ack

    async def recv_request(self) -> wire.Request:
        message = await self.recv()
        assert isinstance(message, wire.Request), message
        return message

    async def recv_cancel(self) -> wire.Cancel:
        message = await self.recv()
        assert isinstance(message, wire.Cancel), message
        return message

    async def reply(self, request: wire.Request, body: str, status: int = 200) -> None:
        await self.send(
            wire.ResponseComplete(
                request_id=request.request_id,
                status_code=status,
                headers={"content-type": "application/json"},
                body=body,
            )
        )

    async def chunk(self, request: wire.Request, text: str) -> None:
        await self.send(wire.ResponseChunk(request_id=request.request_id, chunk=text))


@attrs.define(eq=False)
class FakeWorker(ScriptedWorker):
    """A scripted worker on a real WebSocket (trio-websocket)."""

    ws: WebSocketConnection

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send_message(data)

    async def recv_raw(self) -> str | bytes:
        return await self.ws.get_message()


@asynccontextmanager
async def connect_worker(
    ws_url: str,
    models: Sequence[str] = ("m1",),
    *,
    max_concurrent: int = 1,
    secret: str = "test-secret",
    name: str = "fake",
    capabilities: tuple[str, ...] | None = None,
    register: bool = True,
) -> AsyncIterator[FakeWorker]:
    async with open_websocket_url(
        ws_url, extra_headers=[(b"x-worker-secret", secret.encode())]
    ) as ws:
        worker = FakeWorker(ws)
        if register:
            await worker.register(
                models, max_concurrent=max_concurrent, name=name, capabilities=capabilities
            )
        yield worker


# --- a bare wsproto client, for what trio-websocket will not do on the wire ------


async def open_raw_ws(
    ws_url: str, secret: str = "test-secret"
) -> tuple[trio.SocketStream, WSConnection]:
    """A TCP connection upgraded to the worker socket by hand; returns once accepted."""
    host_port = ws_url.removeprefix("ws://").split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    ws = WSConnection(ConnectionType.CLIENT)
    headers = [(b"x-worker-secret", secret.encode())]
    await stream.send_all(
        ws.send(Request(host=host_port, target="/v1/worker/connect", extra_headers=headers))
    )
    await next_ws_event(stream, ws, AcceptConnection)
    return stream, ws


async def next_ws_event(stream: trio.SocketStream, ws: WSConnection, kind: type[E]) -> E:
    """Read until wsproto yields an event of `kind` (others are skipped)."""
    while True:
        for event in ws.events():
            if isinstance(event, kind):
                return event
        ws.receive_data(await stream.receive_some() or None)
