#!/usr/bin/env python3
"""What the agent's backend client costs, and what the alternatives would cost.

Runs in one trio process against the bench backend (started here), and
measures CPU per request (sequential and 64 at once) and CPU per streamed
event for:

- ``httpx-client``: ``AsyncClient.stream`` (what `agent/backend.py` did for
  every backend before the h11 pool, and still does for ``https://`` ones);
- ``httpx-transport``: ``AsyncHTTPTransport.handle_async_request`` with a
  prebuilt ``httpx.URL`` (no auth/redirect/cookie/URL-merge layers);
- ``h11-pool``: a minimal pool of h11 connections on ``trio.SocketStream``
  that yields everything one socket read brings as one piece (the
  prototype in `H11Pool` below; the agent itself now runs `agent/httppool.py`,
  hand-written heads and httptools/llhttp parsing).

    .venv/bin/python scripts/bench/clientbench.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path

import h11
import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from typing import TYPE_CHECKING

import procutil
import setups

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

BODY = b'{"model":"m","messages":[{"role":"user","content":"Say hello."}]}'
HEADERS = {"content-type": "application/json"}


class H11Pool:
    """Prototype: keep-alive HTTP/1.1 connections to one backend, LIFO, O(1) per request.

    A connection whose exchange did not finish cleanly (cancelled, error,
    ``connection: close``) is closed, never reused: cancelling a request
    closes its socket, so the backend sees the client leave.
    """

    def __init__(self, host: str, port: int, max_idle: int = 256) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[trio.SocketStream, h11.Connection]] = []
        self.max_idle = max_idle

    @asynccontextmanager
    async def post(
        self, target: bytes, body: bytes, headers: list[tuple[bytes, bytes]]
    ) -> AsyncIterator[tuple[int, list[tuple[bytes, bytes]], Callable[[], AsyncIterator[bytes]]]]:
        if self.idle:
            stream, conn = self.idle.pop()
        else:
            stream = await trio.open_tcp_stream(self.host, self.port)
            conn = h11.Connection(h11.CLIENT)
        reusable = False
        try:
            head = [
                (b"host", b"%s:%d" % (self.host.encode(), self.port)),
                (b"content-length", b"%d" % len(body)),
                *headers,
            ]
            data = conn.send(h11.Request(method=b"POST", target=target, headers=head))
            data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
            await stream.send_all(data)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                    continue
                if isinstance(event, h11.Response):
                    break
                if isinstance(event, h11.ConnectionClosed):
                    raise ConnectionError("backend closed the connection")

            async def body_pieces() -> AsyncIterator[bytes]:
                nonlocal reusable
                while True:
                    parts = []
                    while True:
                        ev = conn.next_event()
                        if isinstance(ev, h11.Data):
                            parts.append(ev.data)
                        elif ev is h11.NEED_DATA:
                            break
                        elif isinstance(ev, h11.EndOfMessage):
                            if parts:
                                yield b"".join(parts)
                            reusable = conn.our_state is h11.DONE and conn.their_state is h11.DONE
                            return
                        elif isinstance(ev, h11.ConnectionClosed):
                            raise ConnectionError("backend closed mid-body")
                    if parts:  # everything this read brought, as one piece
                        yield b"".join(parts) if len(parts) > 1 else parts[0]
                    conn.receive_data(await stream.receive_some(65536))

            yield event.status_code, event.headers, body_pieces
        finally:
            if reusable and len(self.idle) < self.max_idle:
                conn.start_next_cycle()
                self.idle.append((stream, conn))
            else:
                await trio.aclose_forcefully(stream)


async def measure(
    name: str, n: int, conc: int, one: Callable[[], Awaitable[int]]
) -> dict[str, float]:
    for _ in range(20):
        await one()
    counter = {"events": 0, "left": n}

    async def worker() -> None:
        while counter["left"] > 0:
            counter["left"] -= 1
            got = await one()
            counter["events"] += got

    cpu0, wall0 = time.process_time(), time.monotonic()
    async with trio.open_nursery() as nursery:
        for _ in range(conc):
            nursery.start_soon(worker)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    return {
        "name": name,
        "cpu_per_req_ms": cpu / n * 1000,
        "cpu_per_event_us": cpu / max(1, counter["events"]) * 1e6,
        "wall_s": wall,
        "events": counter["events"],
    }


async def main(quick: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="clientbench-"))
    backend = setups.Backend(work)
    try:
        url = backend.url
        host, port = url.split("://")[1].split(":")
        n = 300 if quick else 2000
        pool = H11Pool(host, int(port))
        client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=80, max_keepalive_connections=80),
            timeout=httpx.Timeout(None, connect=10),
            trust_env=False,
        )
        transport = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=80, max_keepalive_connections=80)
        )
        full_url = httpx.URL(url + "/v1/chat/completions")

        async def via_client() -> int:
            pieces = 0
            async with client.stream(
                "POST", url + "/v1/chat/completions", content=BODY, headers=HEADERS
            ) as r:
                async for _ in r.aiter_bytes():
                    pieces += 1
            return pieces

        async def via_transport() -> int:
            request = httpx.Request("POST", full_url, content=BODY, headers=HEADERS)
            response = await transport.handle_async_request(request)
            pieces = 0
            try:
                async for _ in response.stream:  # type: ignore[union-attr]
                    pieces += 1
            finally:
                await response.aclose()
            return pieces

        async def via_h11() -> int:
            pieces = 0
            async with pool.post(
                b"/v1/chat/completions", BODY, [(b"content-type", b"application/json")]
            ) as (_status, _headers, body):
                async for _ in body():
                    pieces += 1
            return pieces

        clients = [
            ("httpx-client", via_client),
            ("httpx-transport", via_transport),
            ("h11-pool", via_h11),
        ]
        rows = []
        for kind, profile, conc, count in (
            ("small JSON, sequential", {"kind": "json"}, 1, n),
            ("small JSON, 64 at once", {"kind": "json"}, 64, n),
            (
                "stream of 200 events, 8 at once",
                {"kind": "sse", "events": 200, "interval": 0},
                8,
                max(100, n // 10),
            ),
        ):
            backend.profile(**profile)
            for name, fn in clients:
                r = await measure(name, count, conc, fn)
                rows.append((kind, r))
        print(
            "| load | client | CPU per request (ms) | CPU per 150-byte event (µs) "
            "| pieces yielded |"
        )
        print("|---|---|---|---|---|")
        for kind, r in rows:
            per_event = f"{r['cpu_per_req_ms'] * 1000 / 203:.1f}" if "stream" in kind else ""
            print(
                f"| {kind} | {r['name']} | {r['cpu_per_req_ms']:.3f} | {per_event} "
                f"| {r['events']} |"
            )
        await client.aclose()
        await transport.aclose()
    finally:
        procutil.stop_all()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    trio.run(main, parser.parse_args().quick)
