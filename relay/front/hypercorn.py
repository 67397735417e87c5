"""Hypercorn's part in the relay: the whole front (`serve`), or what the builtin one hands over.

``relay serve --http-front hypercorn`` serves every connection with
`hypercorn.trio.serve` (Hypercorn's documented entry point) and the
Quart-Trio app, exactly as a plain Quart deployment would: the proxy is
reached through `RelayApp.__call__`, notices a client leaving with a
watcher task on ``receive()`` (no hang-up watch, no ``send_now``), and the
worker socket is the ASGI `relay.worker_socket.WorkerSocket`. It is the
reference the builtin front is measured and checked against.

The builtin front (`relay.front.listener`) serves every request h11 can
parse. What it cannot serve (an HTTP/2 preface, a head h11 rejects, a
WebSocket upgrade to another path than the worker socket) it hands, with
every byte read so far, to Hypercorn's connection server, which owns the
connection from then on and serves the same app.

Hypercorn internals relied on (Hypercorn has no public API to serve one
accepted connection):

- ``hypercorn.trio.tcp_server.TCPServer(app, config, context, state, stream)``
  and its ``run()``, with ``hypercorn.trio.worker_context.WorkerContext`` and
  ``hypercorn.typing.ConnectionState``; ``hypercorn.utils.wrap_app`` makes the
  app wrapper it calls.
- ``TCPServer.run`` treats a stream whose ``do_handshake`` raises
  ``AttributeError`` as plain TCP (not TLS) and reads the addresses from
  its ``socket`` attribute: `_Replay` has no ``do_handshake`` for that reason.

tests/relay/test_front_hypercorn.py fails when either changes (the
constructor's parameters are checked by name, and an HTTP/2 preface, an
unparseable head and another upgrade are served through the hand-off).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from hypercorn.config import Config

    from relay.app import RelayApp

__all__ = ["HandOff", "serve"]


async def serve(
    app: RelayApp,
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on `config.bind` with Hypercorn alone until `shutdown_trigger` returns."""
    if config.ssl_enabled:
        raise ValueError("the relay does not terminate TLS itself; see contrib/nginx")
    await hypercorn_serve(
        app,  # type: ignore[arg-type]
        config,
        shutdown_trigger=shutdown_trigger,
        task_status=task_status,
        mode="asgi",
    )


class _Replay(trio.abc.HalfCloseableStream):
    """A socket stream whose first read returns bytes already read from it.

    Hypercorn's `TCPServer` takes it for the connection it is handed; it
    looks for ``socket`` (addresses) and finds no ``do_handshake`` (not TLS).
    """

    def __init__(self, stream: trio.SocketStream, head: bytes) -> None:
        self._stream = stream
        self._head = head
        self.socket = stream.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


class HandOff:
    """Gives connections to Hypercorn's connection server, the bytes read so far first."""

    def __init__(self, app: RelayApp, config: Config, state: dict[str, Any]) -> None:
        self.app = wrap_app(app, config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
        self.config = config
        self.state = state
        self.context = WorkerContext(None)

    async def terminate(self) -> None:
        """Shutdown: handed-off connections close once idle."""
        await self.context.terminated.set()

    async def serve(self, stream: trio.SocketStream, head: bytes) -> None:
        """Serve the connection until it closes; Hypercorn closes it."""
        server = TCPServer(
            self.app,
            self.config,
            self.context,
            ConnectionState(self.state.copy()),
            _Replay(stream, head),  # type: ignore[arg-type]
        )
        await server.run()
