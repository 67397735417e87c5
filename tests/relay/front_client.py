"""A raw HTTP/1.1 client for the front's tests: bytes out as written, answers parsed by h11."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import h11
import trio

if TYPE_CHECKING:
    import wire
    from tests.relay.conftest import RunningRelay

__all__ = ["BODY", "CHAT", "RawClient", "post", "serve_requests"]


CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
BODY = json.dumps(CHAT).encode()


def post(path: str = "/v1/chat/completions", body: bytes = BODY, extra: bytes = b"") -> bytes:
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
    async def open(cls, relay: RunningRelay | str) -> RawClient:
        url = relay if isinstance(relay, str) else relay.url
        host, port = url.removeprefix("http://").rsplit(":", 1)
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


async def serve_requests(
    worker: object, count: int, seen: list[wire.Request] | None = None
) -> None:
    """Answer `count` requests with ``{"n": k}``, the k-th; record them in `seen`."""
    for n in range(1, count + 1):
        request = await worker.recv_request()  # type: ignore[attr-defined]
        if seen is not None:
            seen.append(request)
        await worker.reply(request, json.dumps({"n": n}))  # type: ignore[attr-defined]
