"""The send_now rule's guard (relay/boundary.py): one writer per client socket at a time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from relay.boundary import ClientWriter, ConcurrentWrite, Sent

if TYPE_CHECKING:
    from collections.abc import MutableMapping


class _Socket:
    """A client socket as the server's `send` and `send_now` see it: records every write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.unblock = trio.Event()
        self.block = False

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if self.block:
            await self.unblock.wait()  # a full socket: the write waits
        self.writes.append(message["body"])

    def send_now(self, body: bytes) -> Sent:
        self.writes.append(body)
        return Sent.ALL


async def test_send_now_writes_when_no_send_runs() -> None:
    sock = _Socket()
    writer = ClientWriter(sock.send, sock.send_now)
    await writer.send({"type": "http.response.body", "body": b"a", "more_body": True})
    assert writer.send_now("b") is Sent.ALL
    await writer.send({"type": "http.response.body", "body": b"c", "more_body": False})
    assert sock.writes == [b"a", b"b", b"c"]


async def test_send_now_during_a_send_writes_nothing_and_the_send_raises(nursery) -> None:
    sock = _Socket()
    writer = ClientWriter(sock.send, sock.send_now)
    sock.block = True
    raised: list[BaseException] = []

    async def request_task() -> None:
        try:
            await writer.send({"type": "http.response.body", "body": b"head", "more_body": True})
        except ConcurrentWrite as exc:
            raised.append(exc)

    nursery.start_soon(request_task)
    await trio.testing.wait_all_tasks_blocked()  # the request's task is inside send
    # The rule broken: another task writes while the request's task does.
    assert writer.send_now("interleaved") is Sent.NONE
    assert sock.writes == []  # not a byte of it reached the socket
    sock.unblock.set()
    await trio.testing.wait_all_tasks_blocked()
    assert sock.writes == [b"head"]
    assert len(raised) == 1
    assert "send_now rule" in str(raised[0])


async def test_a_cancelled_send_leaves_the_writer_free() -> None:
    sock = _Socket()
    writer = ClientWriter(sock.send, sock.send_now)
    sock.block = True
    with trio.CancelScope() as scope:
        scope.cancel()
        await writer.send({"type": "http.response.body", "body": b"x", "more_body": True})
        pytest.fail("a cancelled send must raise")
    assert writer.send_now("y") is Sent.ALL
