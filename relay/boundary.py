"""The boundary between a client request and the hub: who writes the client's socket.

A request's response reaches its client along one of two paths, and this
module owns the rule that keeps them apart:

- the **request's task** (`relay.http_api.Proxy`) writes with the server's
  ASGI ``send``: it may block, and it is the only path for the response
  head, the end of the response, and anything that has queued up;
- the **hub's reader** (the worker session that reads the agent's frames)
  writes a lone streamed chunk at once with the server's ``send_now``
  (`SEND_NOW_EXTENSION`), which never blocks, so the chunk costs one task
  wake-up instead of two (docs/architecture.md, "One request, in scopes").

The rule: **``send_now`` never runs while the request's task writes.** Two
writers on one socket would interleave bytes mid-frame. Three places keep
the rule, and `ClientWriter` checks it:

1. the proxy hands the lease a `ClientWriter` only once the streamed
   response has started (the head is written by the request's task);
2. `relay.worker_hub.Lease.feed` writes directly only while the request's
   task is parked in `Lease.receive` with nothing queued (so it is not in
   ``send``, and order is kept);
3. the server's ``send_now`` refuses (`Sent.NONE`) while its own backlog is
   unwritten, and leaves a partial write's rest for the next ``send``
   (`Sent.PART`: the lease wakes the request's task to make that ``send``).

`ClientWriter` is the guard: the request's task writes through its `send`,
which marks the writer busy; a `send_now` that finds it busy writes nothing
(`Sent.NONE`, so the chunk is queued the usual way and no byte is
interleaved) and the request's task raises `ConcurrentWrite` as soon as its
``send`` returns. So a broken rule fails that one request loudly, in tests
and in production, and harms nothing else (the hub's reader, which serves
every request on that worker, never raises for it). The check is one
attribute test; no task, lock or scheduler trip is added.

The scope extensions are the ASGI side of the same boundary: what a server
(the relay's own front) offers the proxy beyond plain ASGI.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, MutableMapping

    from relay.asgi import Send

__all__ = [
    "HANGUP_EXTENSION",
    "SEND_NOW_EXTENSION",
    "WHOLE_BODY_EXTENSION",
    "ClientWriter",
    "ConcurrentWrite",
    "Sent",
]

SEND_NOW_EXTENSION = "modelrelay.send_now"
"""ASGI scope extension: ``send_now(body: bytes) -> Sent`` writes one more piece
of a started streamed response at once, without blocking, if the socket takes
it. Called from another task than the request's, so only under the rule of
this module (the proxy wraps it in a `ClientWriter`)."""

WHOLE_BODY_EXTENSION = "modelrelay.whole_body"
"""ASGI scope extension: the whole request body (bytes), present when the
server already had all of it with the head. The app then reads no
``http.request`` message: ``receive()`` goes straight to waiting for
``http.disconnect``. Saves the small request a receive and a deadline scope."""

HANGUP_EXTENSION = "modelrelay.hangup"
"""ASGI scope extension a server may offer instead of ``http.disconnect`` watching.

Its value is ``watch(on_hangup) -> unwatch``: the server calls ``on_hangup()``
at most once, from another task, if the client leaves before ``unwatch()``.
"""


class Sent(enum.Enum):
    """What a direct write of one chunk did (the answer of ``send_now``)."""

    ALL = "all"  # the client's socket took all of it
    PART = "part"  # the rest waits in the server's buffer for the next `send`
    NONE = "none"  # nothing written: send it the usual way


class ConcurrentWrite(RuntimeError):
    """Two tasks wrote one client's socket at once: a relay bug, never the client's."""


class ClientWriter:
    """Owns the right to write one client's socket: one task at a time.

    The request's task writes with `send`; the hub's reader with `send_now`
    (through `relay.worker_hub.Lease.direct`), only while the request's task
    is not inside `send`.
    """

    __slots__ = ("_clash", "_send", "_send_now", "_writing")

    def __init__(self, send: Send, send_now: Callable[[bytes], Sent]) -> None:
        self._send = send
        self._send_now = send_now
        self._writing = False  # the request's task is inside `send`
        self._clash = False  # a `send_now` came while it was

    async def send(self, message: MutableMapping[str, Any]) -> None:
        """The server's ASGI ``send``, marked busy for as long as it runs.

        Raises:
            ConcurrentWrite: another task tried `send_now` meanwhile.
        """
        self._writing = True
        try:
            await self._send(message)
        finally:
            self._writing = False
        if self._clash:
            raise ConcurrentWrite(
                "the hub's reader tried to write a client's socket while the "
                "request's task was writing it (the send_now rule, relay/boundary.py)"
            )

    def send_now(self, chunk: str) -> Sent:
        """Write one chunk at once if the socket takes it; never blocks or yields.

        Refused (`Sent.NONE`, nothing written) while `send` runs: the request's
        task then raises `ConcurrentWrite`.
        """
        if self._writing:
            self._clash = True
            return Sent.NONE
        return self._send_now(chunk.encode())
