#!/usr/bin/env python3
"""The benchmark's backend: a minimal, fast OpenAI-shaped HTTP/1.1 server.

Plain asyncio protocols, no framework: it must be the floor of every figure,
never the bottleneck (`run.py` measures its own capacity as the "direct"
column and prints its CPU use next to every other figure).

It answers every ``POST`` at once, the same way, according to one *profile*
that the harness sets between scenarios (``PUT /_control/profile``):

- ``{"kind": "json", "resp_bytes": N}``: a chat.completion JSON of about N
  bytes (default ~300), with content-length;
- ``{"kind": "sse", "events": N, "interval": S}``: a chunked event stream of
  N ``chat.completion.chunk`` events (~150 bytes each), then a final chunk
  and ``data: [DONE]``. With ``interval`` 0 it writes them as fast as it
  can (yielding to its loop between events, respecting flow control); else
  the first event goes out at once and one more every ``interval`` s.
  ``end_at`` (a ``time.monotonic()`` value) ends every running and future
  stream at that moment instead of after N events (the "held" scenario);
- ``{"kind": "json", "hold_first": true}``: failover. A request whose id was
  never seen before is held (no answer) until ``POST /_control/release``;
  an id seen before (a request re-sent after its agent died) is answered at
  once.

``"record": true`` keeps a record per request: its id (``bench-id:<id>`` in
the message text), the tag of the path it came by (``/t/<tag>/v1/...``: each
agent gets its own backend URL prefix), its arrival, when its stream
finished, and when its connection closed before the answer was complete
(the cancellation figure). ``GET /_control/log`` returns and clears them.
Times are ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process
on the machine).

Run: ``python fastbackend.py --port P`` (0 = ephemeral); it prints
``BACKEND_URL=http://127.0.0.1:P`` once listening and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import resource
import signal
import socket
import sys
import time
from typing import Any

MODEL = "m"
_ID = re.compile(rb"bench-id:([A-Za-z0-9_-]{1,64})")
_CREATED = 1_700_000_000


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _completion(resp_bytes: int) -> bytes:
    doc: dict[str, Any] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": _CREATED,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the bench backend."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }
    body = json.dumps(doc, separators=(",", ":")).encode()
    if resp_bytes > len(body):
        doc["choices"][0]["message"]["content"] = "x" * (resp_bytes - len(body) + 29)
        body = json.dumps(doc, separators=(",", ":")).encode()
    return body


def _event(content: str | None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    doc = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    data = b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


# A few different tokens in turn: LiteLLM ends a stream that repeats one chunk 100 times.
_EVENTS = [_event(f" tok{i}") for i in range(8)]
_FINAL = (
    _event(None, "stop")
    + b"%x\r\n%s\r\n" % (len(b"data: [DONE]\n\n"), b"data: [DONE]\n\n")
    + b"0\r\n\r\n"
)
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def _json_response(body: bytes, status: str = "200 OK", close: bool = False) -> bytes:
    extra = b"connection: close\r\n" if close else b""
    return (
        b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n"
        % (status.encode(), len(body), extra)
    ) + body


class State:
    def __init__(self) -> None:
        self.profile: dict[str, Any] = {}
        self.json_bytes = b""
        self.records: list[dict[str, Any]] = []
        self.seen: set[str] = set()
        self.held: list[asyncio.Future[None]] = []
        self.requests = 0
        self.open_streams = 0
        self.connections = 0
        self.generation = 0
        self.set_profile({"kind": "json"})

    def set_profile(self, profile: dict[str, Any]) -> None:
        # A new profile also ends every stream still running under the old one.
        self.generation += 1
        self.profile = profile
        self.json_bytes = _json_response(_completion(int(profile.get("resp_bytes", 0))))
        if not profile.get("hold_first"):
            self.release()
        self.seen.clear()

    def release(self) -> None:
        held, self.held = self.held, []
        for fut in held:
            if not fut.done():
                fut.set_result(None)


STATE = State()


class Conn(asyncio.Protocol):
    __slots__ = (
        "buf",
        "busy",
        "closed",
        "closed_at",
        "head",
        "need",
        "on_close",
        "paused",
        "resume",
        "t",
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.head: tuple[str, str, dict[bytes, bytes], int] | None = None
        self.need = -1
        self.busy = False
        self.closed = False
        self.closed_at = 0.0
        self.paused = False
        self.resume: asyncio.Future[None] | None = None
        self.on_close: list[asyncio.Future[None]] = []
        STATE.connections += 1

    # -- connection events --

    def _gone(self) -> None:
        if not self.closed:
            self.closed = True
            self.closed_at = time.monotonic()
            for fut in self.on_close:
                if not fut.done():
                    fut.set_result(None)
            if self.resume is not None and not self.resume.done():
                self.resume.set_result(None)

    def eof_received(self) -> bool:
        self._gone()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone()
        STATE.connections -= 1

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.resume is not None and not self.resume.done():
            self.resume.set_result(None)

    async def drain(self) -> None:
        while self.paused and not self.closed:
            self.resume = asyncio.get_running_loop().create_future()
            await self.resume

    # -- parsing --

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._parse()

    def _parse(self) -> None:
        while not self.busy and not self.closed:
            if self.head is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > 65536:
                        self.t.write(
                            _json_response(b'{"error":"head too large"}', "431 Too Large", True)
                        )
                        self.t.close()
                    return
                lines = bytes(self.buf[:end]).split(b"\r\n")
                del self.buf[: end + 4]
                method, target, _ = lines[0].decode("latin-1").split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
                length = -2 if chunked else int(headers.get(b"content-length", b"0"))
                self.head = (method, target, headers, length)
            method, target, headers, length = self.head
            if length >= 0:
                if len(self.buf) < length:
                    return
                body = bytes(self.buf[:length])
                del self.buf[:length]
            else:
                body_or_none = self._dechunk()
                if body_or_none is None:
                    return
                body = body_or_none
            self.head = None
            close = headers.get(b"connection", b"").lower() == b"close"
            self._handle(method, target, body, close)

    def _dechunk(self) -> bytes | None:
        """The whole chunked body if it has all arrived (consumed from buf), else None."""
        pos = 0
        parts = []
        buf = self.buf
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            if size == 0:
                end = buf.find(b"\r\n\r\n", eol)
                if end < 0:
                    if buf[eol : eol + 4] == b"\r\n\r\n":
                        end = eol
                    else:
                        return None
                del buf[: end + 4]
                return b"".join(parts)
            start = eol + 2
            if len(buf) < start + size + 2:
                return None
            parts.append(bytes(buf[start : start + size]))
            pos = start + size + 2

    # -- answering --

    def _handle(self, method: str, target: str, body: bytes, close: bool) -> None:
        path = target.split("?", 1)[0]
        tag = ""
        if path.startswith("/t/"):
            _, _, tag, rest = path.split("/", 3)
            path = "/" + rest
        if path.startswith("/_control/"):
            self._control(method, path, body)
        elif method == "GET" and path in ("/v1/models", "/models"):
            doc = {
                "object": "list",
                "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}],
            }
            self.t.write(_json_response(json.dumps(doc).encode()))
        elif method == "GET" and path == "/health":
            self.t.write(_json_response(b'{"status":"ok"}'))
        elif method == "POST":
            STATE.requests += 1
            profile = STATE.profile
            record = None
            if profile.get("record") or profile.get("hold_first"):
                found = _ID.search(body, 0, 4096) if len(body) > 4096 else _ID.search(body)
                record = {
                    "id": found.group(1).decode() if found else None,
                    "tag": tag,
                    "arrived": time.monotonic(),
                    "finished": None,
                    "closed_early": None,
                }
                STATE.records.append(record)
            if profile.get("kind") == "sse":
                self.busy = True
                asyncio.get_running_loop().create_task(self._stream(profile, record))
                return
            if profile.get("hold_first") and record is not None and record["id"] not in STATE.seen:
                STATE.seen.add(record["id"])
                self.busy = True
                asyncio.get_running_loop().create_task(self._held(record))
                return
            self.t.write(STATE.json_bytes)
            if record is not None:
                record["finished"] = time.monotonic()
        else:
            self.t.write(_json_response(b'{"error":"not found"}', "404 Not Found"))
        if close:
            self.t.close()

    async def _held(self, record: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        release = loop.create_future()
        gone = loop.create_future()
        STATE.held.append(release)
        self.on_close.append(gone)
        await asyncio.wait([release, gone], timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if self.closed:
            record["closed_early"] = self.closed_at
            return
        self.t.write(STATE.json_bytes)
        record["finished"] = time.monotonic()
        self.on_close.clear()
        self.busy = False
        self._parse()

    async def _stream(self, profile: dict[str, Any], record: dict[str, Any] | None) -> None:
        STATE.open_streams += 1
        try:
            events = int(profile.get("events", 10))
            interval = float(profile.get("interval", 0))
            t = self.t
            t.write(_SSE_HEAD)
            loop = asyncio.get_running_loop()
            gone = loop.create_future()
            self.on_close.append(gone)
            start = time.monotonic()
            sent = 0
            generation = STATE.generation
            while not self.closed and STATE.generation == generation:
                end_at = STATE.profile.get("end_at")
                now = time.monotonic()
                if end_at is not None:
                    if now >= end_at:
                        break
                elif sent >= events:
                    break
                if interval > 0 and sent > 0:
                    wake = start + sent * interval
                    if end_at is not None:
                        wake = min(wake, end_at)
                    if wake > now:
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(asyncio.shield(gone), wake - now)
                        if self.closed:
                            break
                        if end_at is not None and time.monotonic() >= end_at:
                            break
                elif interval == 0:
                    await asyncio.sleep(0)
                    if self.paused:
                        await self.drain()
                if self.closed:
                    break
                t.write(_EVENTS[sent & 7])
                sent += 1
            if self.closed:
                if record is not None:
                    record["closed_early"] = self.closed_at
                return
            t.write(_FINAL)
            if record is not None:
                record["finished"] = time.monotonic()
                record["events"] = sent
            self.on_close.clear()
            self.busy = False
            self._parse()
        finally:
            STATE.open_streams -= 1

    def _control(self, method: str, path: str, body: bytes) -> None:
        answer: Any = {"ok": True}
        if path == "/_control/profile" and method == "PUT":
            STATE.set_profile(json.loads(body))
        elif path == "/_control/end_at" and method == "PUT":
            STATE.profile["end_at"] = json.loads(body)["end_at"]
        elif path == "/_control/release":
            STATE.release()
        elif path == "/_control/log":
            answer, STATE.records = STATE.records, []
        elif path == "/_control/stats":
            answer = {
                "requests": STATE.requests,
                "open_streams": STATE.open_streams,
                "connections": STATE.connections,
                "held": sum(1 for f in STATE.held if not f.done()),
                "records": len(STATE.records),
            }
        else:
            answer = {"error": "unknown control"}
        self.t.write(_json_response(json.dumps(answer).encode()))


async def _main(port: int) -> None:
    _raise_nofile()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Conn, "127.0.0.1", port, backlog=4096, reuse_address=True)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    bound = server.sockets[0].getsockname()[1]
    print(f"BACKEND_URL=http://127.0.0.1:{bound}", flush=True)
    await stop
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_main(args.port))
    sys.exit(0)


if __name__ == "__main__":
    main()
