#!/usr/bin/env python3
"""The benchmark's streaming / cancellation / failover client, in its own process.

Raw HTTP/1.1 over asyncio protocols (no client library): a stream costs
this process a few microseconds per read, so it is never what limits a
figure. `run.py` starts one process per scenario, reads progress lines
(``PROGRESS {...}``) from its stdout while it runs and its result
(``RESULT {...}``) at the end. Every loop is bounded in count and in time.
Times are ``time.monotonic()`` (CLOCK_MONOTONIC: the backend's clock too).

Scenarios (``--scenario``):

- ``ttfb``: N streaming requests one after another on one keep-alive
  connection: time to the first event, and to the end of the stream;
- ``burst``: C concurrent connections, each running streaming requests back
  to back until N streams in all or the time bound: events per second;
- ``hold``: S concurrent streams opened in waves; prints ``PROGRESS
  {"opened": S}`` once every one has its first event, then waits for them
  all to end: how many ended early (an error, a non-200, or a close before
  ``data: [DONE]``);
- ``cancel``: N streams, C at a time, each closed by the client after its
  first event plus a few ms; returns each request's id and close time;
- ``failover``: N non-streaming requests at once, each on its own connection;
  prints ``PROGRESS {"sent": N}``; returns each id's completion time and status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import sys
import time
from typing import Any


def _raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def _body(stream: bool, rid: str, pad: int = 0) -> bytes:
    # The id travels in the message text: every proxy forwards that untouched
    # (LiteLLM drops an unknown "user"); the backend finds it there.
    content = f"bench-id:{rid} " + ("x" * pad if pad else "Say hello.")
    doc = {"model": "m", "messages": [{"role": "user", "content": content}], "stream": stream}
    return json.dumps(doc, separators=(",", ":")).encode()


class Response:
    """Incremental HTTP/1.1 response parser: status, then a body by length or chunks."""

    __slots__ = (
        "_chunk_left",
        "_length_left",
        "_mode",
        "_state",
        "_tail",
        "body_bytes",
        "buf",
        "complete",
        "done_event",
        "events",
        "first_body_at",
        "headers",
        "keep_alive",
        "status",
    )

    def __init__(self) -> None:
        self.buf = b""
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self._state = "head"
        self._mode = ""
        self._chunk_left = 0
        self._length_left = 0
        self._tail = b""
        self.body_bytes = 0
        self.events = 0
        self.first_body_at = 0.0
        self.done_event = False  # saw "data: [DONE]"
        self.complete = False  # the body ended by its framing
        self.keep_alive = True

    def feed(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        self.buf = b""
        while buf and not self.complete:
            state = self._state
            if state == "head":
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    self.buf = buf
                    return
                lines = buf[:end].split(b"\r\n")
                buf = buf[end + 4 :]
                self.status = int(lines[0].split(b" ", 2)[1])
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    self.headers[name.strip().lower()] = value.strip()
                if self.headers.get(b"connection", b"").lower() == b"close":
                    self.keep_alive = False
                if b"chunked" in self.headers.get(b"transfer-encoding", b"").lower():
                    self._mode, self._state = "chunked", "size"
                elif b"content-length" in self.headers:
                    self._mode, self._state = "length", "body"
                    self._length_left = int(self.headers[b"content-length"])
                    if self._length_left == 0:
                        self.complete = True
                else:
                    self._mode, self._state = "close", "body"
                    self.keep_alive = False
            elif state == "size":
                eol = buf.find(b"\r\n")
                if eol < 0:
                    self.buf = buf
                    return
                size = int(buf[:eol].split(b";")[0], 16)
                buf = buf[eol + 2 :]
                if size == 0:
                    self._state = "trailer"
                else:
                    self._chunk_left = size
                    self._state = "body"
            elif state == "body":
                if self._mode == "chunked":
                    take = min(self._chunk_left, len(buf))
                    self._on_body(buf[:take])
                    buf = buf[take:]
                    self._chunk_left -= take
                    if self._chunk_left == 0:
                        self._state = "crlf"
                elif self._mode == "length":
                    take = min(self._length_left, len(buf))
                    self._on_body(buf[:take])
                    buf = buf[take:]
                    self._length_left -= take
                    if self._length_left == 0:
                        self.complete = True
                else:
                    self._on_body(buf)
                    buf = b""
            elif state == "crlf":
                if len(buf) < 2:
                    self.buf = buf
                    return
                buf = buf[2:]
                self._state = "size"
            elif state == "trailer":
                if buf.startswith(b"\r\n"):
                    self.complete = True
                    buf = buf[2:]
                else:
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        self.buf = buf
                        return
                    self.complete = True
                    buf = buf[end + 4 :]
        if buf:
            self.buf = buf

    def _on_body(self, data: bytes) -> None:
        if not data:
            return
        if not self.first_body_at:
            self.first_body_at = time.monotonic()
        self.body_bytes += len(data)
        joined = self._tail + data
        self.events += joined.count(b"data:") - self._tail.count(b"data:")
        if not self.done_event and b"[DONE]" in joined:
            self.done_event = True
        self._tail = joined[-8:]


class Client(asyncio.Protocol):
    """One keep-alive connection that runs one request at a time."""

    def __init__(self) -> None:
        self.t: asyncio.Transport | None = None
        self.resp: Response | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.first: asyncio.Future[None] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        resp = self.resp
        if resp is None:
            return
        resp.feed(data)
        if self.first is not None and resp.first_body_at and not self.first.done():
            self.first.set_result(None)
        if resp.complete and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(resp)

    def eof_received(self) -> bool:
        self._lost()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()

    def _lost(self) -> None:
        self.closed = True
        for fut in (self.first, self.waiter):
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionError("connection closed"))

    def start(
        self, request: bytes
    ) -> tuple[Response, asyncio.Future[Response], asyncio.Future[None]]:
        loop = asyncio.get_running_loop()
        self.resp = Response()
        self.waiter = loop.create_future()
        self.first = loop.create_future()
        assert self.t is not None
        self.t.write(request)
        return self.resp, self.waiter, self.first


class Target:
    def __init__(self, url: str, path: str, key: str) -> None:
        self.key = key.encode()
        hostport = url.split("://", 1)[1].rstrip("/")
        host, _, port = hostport.partition(":")
        self.host, self.port = host, int(port or 80)
        self.path = path

    def request(self, body: bytes) -> bytes:
        return (
            b"POST %s HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\n"
            b"authorization: Bearer %s\r\ncontent-length: %d\r\n\r\n"
            % (self.path.encode(), self.host.encode(), self.port, self.key, len(body))
        ) + body

    async def connect(self) -> Client:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(Client, self.host, self.port)
        return proto


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": _pct(values, 50),
        "p90": _pct(values, 90),
        "p99": _pct(values, 99),
        "max": max(values) if values else None,
        "mean": sum(values) / len(values) if values else None,
    }


def emit(kind: str, doc: dict[str, Any]) -> None:
    sys.stdout.write(f"{kind} {json.dumps(doc)}\n")
    sys.stdout.flush()


# --- scenarios ----------------------------------------------------------------


async def ttfb(target: Target, n: int, limit: float) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    ttfbs: list[float] = []
    totals: list[float] = []
    errors = 0
    client: Client | None = None
    for i in range(n):
        if time.monotonic() > deadline:
            break
        if client is None or client.closed:
            client = await target.connect()
        request = target.request(_body(True, f"ttfb-{i}"))
        start = time.monotonic()
        resp, done, _ = client.start(request)
        try:
            await asyncio.wait_for(done, 30)
        except (TimeoutError, ConnectionError):
            errors += 1
            client.t.close() if client.t else None
            client = None
            continue
        if resp.status != 200 or not resp.done_event:
            errors += 1
        ttfbs.append(resp.first_body_at - start)
        totals.append(time.monotonic() - start)
        if not resp.keep_alive:
            client.t.close() if client.t else None
            client = None
    return {"ttfb": _summary(ttfbs), "total": _summary(totals), "errors": errors}


async def burst(target: Target, conns: int, n: int, limit: float) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    counters = {"started": 0, "events": 0, "streams": 0, "errors": 0, "bytes": 0}

    async def worker(index: int) -> None:
        client: Client | None = None
        while counters["started"] < n and time.monotonic() < deadline:
            counters["started"] += 1
            if client is None or client.closed:
                client = await target.connect()
            resp, done, _ = client.start(
                target.request(_body(True, f"b{index}-{counters['started']}"))
            )
            try:
                await asyncio.wait_for(done, max(0.1, deadline - time.monotonic() + 5))
            except (TimeoutError, ConnectionError):
                counters["errors"] += 1
                counters["events"] += resp.events
                if client.t:
                    client.t.close()
                client = None
                continue
            counters["events"] += resp.events
            counters["bytes"] += resp.body_bytes
            counters["streams"] += 1
            if resp.status != 200 or not resp.done_event:
                counters["errors"] += 1
            if not resp.keep_alive:
                if client.t:
                    client.t.close()
                client = None

    start = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(conns)))
    elapsed = time.monotonic() - start
    return {**counters, "elapsed": elapsed, "events_per_s": counters["events"] / elapsed}


async def hold(target: Target, streams: int, wave: int, limit: float) -> dict[str, Any]:
    """Open `streams` streams (`wave` connecting at once), report, then wait for all to end."""
    deadline = time.monotonic() + limit
    results = {"ok": 0, "early": 0, "open_failed": 0, "non_200": 0}
    opened = 0
    all_open = asyncio.Event()
    sem = asyncio.Semaphore(wave)
    waits: list[float] = []
    early: list[tuple[str, float, int, int]] = []

    async def one(i: int) -> None:
        nonlocal opened
        client = None
        async with sem:
            try:
                client = await target.connect()
                start = time.monotonic()
                resp, done, first = client.start(target.request(_body(True, f"h{i}")))
                await asyncio.wait_for(first, max(0.1, deadline - time.monotonic()))
                waits.append(time.monotonic() - start)
            except (TimeoutError, OSError, ConnectionError):
                results["open_failed"] += 1
                if client is not None and client.t:
                    client.t.close()
                opened += 1
                if opened == streams:
                    all_open.set()
                return
        opened += 1
        if opened == streams:
            all_open.set()
        try:
            await asyncio.wait_for(done, max(0.1, deadline - time.monotonic()))
        except (TimeoutError, ConnectionError) as exc:
            results["early"] += 1
            why = "timeout" if isinstance(exc, TimeoutError) else "closed"
            early.append((why, time.monotonic() - start, resp.events, resp.body_bytes))
        else:
            if resp.status != 200:
                results["non_200"] += 1
            elif resp.done_event:
                results["ok"] += 1
            else:
                results["early"] += 1
                early.append(("no [DONE]", time.monotonic() - start, resp.events, resp.body_bytes))
        finally:
            if client.t:
                client.t.close()

    start = time.monotonic()
    tasks = [asyncio.ensure_future(one(i)) for i in range(streams)]
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(all_open.wait(), max(0.1, deadline - time.monotonic()))
    emit("PROGRESS", {"opened": opened, "open_s": time.monotonic() - start})
    await asyncio.gather(*tasks)
    results["not_opened"] = streams - opened
    if early:
        whys: dict[str, int] = {}
        for why, *_ in early:
            whys[why] = whys.get(why, 0) + 1
        results["early_detail"] = {
            "why": whys,
            "ended_after_s": _summary([e[1] for e in early]),
            "events_seen": _summary([float(e[2]) for e in early]),
            "sample": early[:5],
        }
    return {
        **results,
        "streams": streams,
        "open_wait": _summary(waits),
        "elapsed": time.monotonic() - start,
    }


async def cancel(target: Target, n: int, conc: int, limit: float) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    closes: list[dict[str, Any]] = []
    errors = 0
    counter = 0

    async def worker() -> None:
        nonlocal counter, errors
        while counter < n and time.monotonic() < deadline:
            counter += 1
            rid = f"c{counter}-{random.randrange(1 << 30):x}"
            client = await target.connect()
            _, _, first = client.start(target.request(_body(True, rid)))
            try:
                await asyncio.wait_for(first, 10)
            except (TimeoutError, ConnectionError):
                errors += 1
                if client.t:
                    client.t.close()
                continue
            await asyncio.sleep(random.uniform(0.005, 0.02))
            at = time.monotonic()
            assert client.t is not None
            client.t.close()
            closes.append({"id": rid, "closed_at": at})
            await asyncio.sleep(0.005)

    await asyncio.gather(*(worker() for _ in range(conc)))
    return {"closes": closes, "errors": errors}


async def failover(target: Target, n: int, limit: float) -> dict[str, Any]:
    """Failover with each completion stamped the moment it arrives (not when awaited)."""
    deadline = time.monotonic() + limit
    clients = [await target.connect() for _ in range(n)]
    stamps: dict[str, dict[str, Any]] = {}
    futures = []
    for i, client in enumerate(clients):
        rid = f"f{i}-{random.randrange(1 << 30):x}"
        _resp, done, _ = client.start(target.request(_body(False, rid)))

        def stamp(fut: asyncio.Future[Response], rid: str = rid) -> None:
            if fut.cancelled() or fut.exception() is not None:
                stamps[rid] = {"id": rid, "status": 0, "done_at": time.monotonic()}
            else:
                stamps[rid] = {
                    "id": rid,
                    "status": fut.result().status,
                    "done_at": time.monotonic(),
                }

        done.add_done_callback(stamp)
        futures.append(done)
    emit("PROGRESS", {"sent": n, "at": time.monotonic()})
    await asyncio.wait(futures, timeout=max(0.1, deadline - time.monotonic()))
    for client in clients:
        if client.t:
            client.t.close()
    return {"results": list(stamps.values()), "unfinished": n - len(stamps)}


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    target = Target(args.url, args.path, args.key)
    if args.scenario == "ttfb":
        return await ttfb(target, args.n, args.time)
    if args.scenario == "burst":
        return await burst(target, args.conns, args.n, args.time)
    if args.scenario == "hold":
        return await hold(target, args.n, args.conns, args.time)
    if args.scenario == "cancel":
        return await cancel(target, args.n, args.conns, args.time)
    if args.scenario == "failover":
        return await failover(target, args.n, args.time)
    raise SystemExit(f"unknown scenario {args.scenario}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--path", default="/v1/chat/completions")
    parser.add_argument("--key", default="sk-bench")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--conns", type=int, default=1)
    parser.add_argument("--time", type=float, default=30.0, help="hard time bound, seconds")
    args = parser.parse_args()
    nofile = _raise_nofile()
    result = asyncio.run(asyncio.wait_for(_main(args), args.time + 15))
    result["nofile"] = nofile
    emit("RESULT", result)


if __name__ == "__main__":
    main()
