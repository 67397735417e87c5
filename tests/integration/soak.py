"""The chaos soak: many agents, bounded load, agents SIGKILLed and restarted at random,
and (with `backends` > 1) backends stopped and restarted behind live agents.

Every request must be accounted for: a complete response, or a clear error
(an HTTP error status with a JSON body, or a stream that ends with the
dialect's error event). Anything else — a transport error, a stream cut
without an error event, a hang past the client's timeout — counts as lost.

With several backends, one at a time is stopped (new connections refused,
answers in progress finish) and started again at the same address a moment
later, while the others stay up: every model always has a backend. Then
nothing may be lost, no response may name a backend's address, and at least
99 % of requests must succeed.

Used by `scripts/soak.py` (the full run behind docs/reliability.md) and by a
smaller run in the test suite.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import trio

from tests.fake_backend import FakeBackend
from tests.integration.procs import Proc, agent_process, relay_process

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from contextlib import AbstractAsyncContextManager

__all__ = ["SoakReport", "run_soak"]


@attrs.define
class SoakReport:
    requests: int
    concurrency: int
    agents: int
    kills: int
    seconds: float
    outcomes: Counter[str] = attrs.field(factory=Counter)
    lost: list[str] = attrs.field(factory=list)
    relay_rss_kib: list[int] = attrs.field(factory=list)
    relay_logged: int = 0
    relay_in_flight_after: int | None = None
    queue_depth_after: int | None = None
    backends: int = 1
    backend_stops: int = 0
    leaked_addresses: list[str] = attrs.field(factory=list)

    @property
    def success_rate(self) -> float:
        """Share of requests answered completely (200)."""
        ok = self.outcomes["200 complete"] + self.outcomes["200 stream complete"]
        return ok / self.requests if self.requests else 1.0

    def table(self) -> str:
        rows = [
            ("requests sent", self.requests),
            ("concurrency", self.concurrency),
            ("agents", self.agents),
            ("agents SIGKILLed (and restarted)", self.kills),
            ("backends", self.backends),
            ("backends stopped (and restarted)", self.backend_stops),
            ("wall time", f"{self.seconds:.1f} s"),
            *((f"outcome: {k}", v) for k, v in sorted(self.outcomes.items())),
            ("lost (no response, no clear error)", len(self.lost)),
            ("success rate", f"{self.success_rate:.2%}"),
            ("responses naming a backend address", len(self.leaked_addresses)),
            ("relay 'request finished' log lines", self.relay_logged),
            ("relay queue depth after", self.queue_depth_after),
            ("relay in flight after", self.relay_in_flight_after),
            (
                "relay RSS start → end (KiB)",
                " → ".join(map(str, self.relay_rss_kib[:1] + self.relay_rss_kib[-1:])),
            ),
            ("relay RSS every 200 requests (KiB)", " ".join(map(str, self.relay_rss_kib))),
        ]
        return "\n".join(["| figure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def _one(
    client: httpx.AsyncClient,
    i: int,
    rng: random.Random,
    report: SoakReport,
    addresses: list[bytes],
) -> None:
    stream = rng.random() < 0.5
    body: dict[str, Any] = {
        "model": "soak",
        "stream": stream,
        "messages": [{"role": "user", "content": f"request {i}"}],
        "fake": {"chunks": rng.randint(1, 8), "delay": rng.choice([0, 0.005, 0.02])},
    }
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            data = await response.aread()
        for address in addresses:
            if address in data:
                report.leaked_addresses.append(f"{i}: {data[-200:]!r}")
        if response.status_code == 200:
            if not stream:
                json.loads(data)
                report.outcomes["200 complete"] += 1
            elif data.endswith(b"data: [DONE]\n\n"):
                report.outcomes["200 stream complete"] += 1
            elif b'"error"' in data.rsplit(b"\n\n", 2)[-2]:
                report.outcomes["200 stream ended with error event"] += 1
            else:
                report.lost.append(f"{i}: stream cut without error event: {data[-120:]!r}")
        else:
            doc = json.loads(data)
            assert "error" in doc
            report.outcomes[f"{response.status_code} {doc['error'].get('code')}"] += 1
    except (httpx.HTTPError, ValueError, AssertionError, IndexError) as exc:
        report.lost.append(f"{i}: {type(exc).__name__}: {exc}")


async def run_soak(
    *,
    agents: int = 5,
    requests: int = 2000,
    concurrency: int = 64,
    seed: int = 1,
    kill_every: tuple[float, float] | None = (0.3, 1.0),
    backends: int = 1,
    stop_every: tuple[float, float] = (0.3, 1.0),
    min_kills: int = 0,
    min_stops: int = 0,
) -> SoakReport:
    """Run the soak; return what happened to every request.

    Bound it at the call site (`trio.fail_after`): a hung soak is a failure.

    Args:
        kill_every: Seconds (times the agent count) between SIGKILLs of each
            agent; None: agents are never killed.
        backends: 1: one backend process that stays up. More: in-process
            backends, each stopped and restarted in turn (agent `i` sits in
            front of backend ``i % backends``).
        stop_every: Seconds between backend stops (and each stop's length).
        min_kills, min_stops: The load goes on past `requests` until this many
            agents were killed and backends stopped, so that a fast machine
            cannot finish the load before the chaos it is meant to meet
            (`report.requests` then says how many were sent).
    """
    rng = random.Random(seed)
    report = SoakReport(requests, concurrency, agents, 0, 0.0, backends=backends)
    if backends > 1:
        async with trio.open_nursery() as nursery:
            pool = await _BackendPool.start(nursery, backends)
            async with _relay() as (relay, url):
                await _soak(
                    relay,
                    url,
                    pool.urls,
                    rng,
                    report,
                    kill_every,
                    pool.chaos(rng, report, stop_every),
                    (min_kills, min_stops),
                )
            nursery.cancel_scope.cancel()
        return report
    backend_proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.fake_backend", "--models", "soak"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert backend_proc.stdout is not None
        first = await backend_proc.stdout.receive_some(200)
        backend_url = first.decode().split("=", 1)[1].strip()
        async with _relay() as (relay, url):
            await _soak(relay, url, [backend_url], rng, report, kill_every, None, (min_kills, 0))
    finally:
        backend_proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(5):
            await backend_proc.wait()
        if backend_proc.returncode is None:
            backend_proc.kill()
    return report


def _relay() -> AbstractAsyncContextManager[tuple[Proc, str]]:
    return relay_process(
        "--heartbeat-interval",
        "1",
        "--heartbeat-timeout",
        "3",
        "--log-level",
        "info",
        "--max-queue-len",
        "0",
    )


@attrs.define(eq=False)
class _BackendPool:
    """In-process fake backends that the chaos stops and restarts at their own ports."""

    nursery: trio.Nursery
    backends: list[FakeBackend]
    ports: list[int]
    stops: list[trio.Event]

    @classmethod
    async def start(cls, nursery: trio.Nursery, count: int) -> _BackendPool:
        pool = cls(nursery, [], [], [])
        for _ in range(count):
            backend = FakeBackend(models=["soak"])
            stop = trio.Event()
            url = await nursery.start(backend.run, 0, stop)
            pool.backends.append(backend)
            pool.ports.append(int(url.rsplit(":", 1)[1]))
            pool.stops.append(stop)
        return pool

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def chaos(
        self, rng: random.Random, report: SoakReport, every: tuple[float, float]
    ) -> Callable[[trio.Event, httpx.AsyncClient], Awaitable[None]]:
        async def run(load_done: trio.Event, client: httpx.AsyncClient) -> None:
            """One backend down at a time: stop it in order, restart it at the same port.

            The next stop waits until the relay sees every worker healthy again
            (the restarted backend's agents probed it and offer its model), so
            that some backend for the model is always up as the relay sees it.
            """
            while not load_done.is_set():
                with trio.move_on_after(10):
                    while (await client.get("/health")).json()["status"] != "ok":  # noqa: ASYNC110 - polling another process
                        await trio.sleep(0.05)
                with trio.move_on_after(rng.uniform(*every)):
                    await load_done.wait()
                if load_done.is_set():
                    return
                index = rng.randrange(len(self.backends))
                self.stops[index].set()
                report.backend_stops += 1
                await trio.sleep(rng.uniform(*every))
                self.stops[index] = trio.Event()
                await self._restart(index)

        return run

    async def _restart(self, index: int) -> None:
        # The old server may hold the port for its graceful 0.5 s: retry.
        with trio.fail_after(10):
            while True:
                try:
                    await self.nursery.start(
                        self.backends[index].run, self.ports[index], self.stops[index]
                    )
                    return
                except OSError:
                    await trio.sleep(0.1)


async def _soak(
    relay: Proc,
    url: str,
    backend_urls: list[str],
    rng: random.Random,
    report: SoakReport,
    kill_every: tuple[float, float] | None,
    backend_chaos: Callable[[trio.Event, httpx.AsyncClient], Awaitable[None]] | None,
    chaos_wanted: tuple[int, int] = (0, 0),
) -> None:
    flags = ("--models", "soak", "--max-concurrency", "16")
    start = trio.current_time()
    report.relay_rss_kib.append(_rss_kib(relay.process.pid))
    limits = httpx.Limits(
        max_connections=report.concurrency, max_keepalive_connections=report.concurrency
    )
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        load_done = trio.Event()

        async def agent_slot(index: int) -> None:
            """Keep agent `index` running; SIGKILL it at random until the load is done."""
            backend_url = backend_urls[index % len(backend_urls)]
            while not load_done.is_set():
                async with agent_process(
                    relay, backend_url, *flags, "--worker-name", f"soak-{index}"
                ) as agent:
                    if kill_every is None:
                        await load_done.wait()
                        return
                    with trio.move_on_after(rng.uniform(*kill_every) * report.agents):
                        await load_done.wait()
                    if load_done.is_set():
                        return
                    agent.signal(signal.SIGKILL)
                    report.kills += 1
                    await agent.wait_exit()

        async def load() -> None:
            limiter = trio.Semaphore(report.concurrency)

            addresses = [u.split("//", 1)[1].encode() for u in backend_urls]

            async def bounded(i: int) -> None:
                async with limiter:
                    await _one(client, i, rng, report, addresses)

            min_kills, min_stops = chaos_wanted

            def more() -> bool:
                return report.kills < min_kills or report.backend_stops < min_stops

            async with trio.open_nursery() as n:
                i = 0
                while i < report.requests or more():
                    await limiter.acquire()
                    limiter.release()
                    n.start_soon(bounded, i)
                    if i % 200 == 0:
                        report.relay_rss_kib.append(_rss_kib(relay.process.pid))
                    i += 1
                report.requests = i
            load_done.set()

        async with trio.open_nursery() as nursery:
            for index in range(report.agents):
                nursery.start_soon(agent_slot, index)
            # Start the load once the first agents are in.
            await relay.wait_for(
                lambda line: (
                    line.get("event") in ("worker registered", "worker models updated")
                    and bool(line.get("models"))
                )
            )
            if backend_chaos is not None:
                nursery.start_soon(backend_chaos, load_done, client)
            await load()
        health = (await client.get("/health")).json()
        report.queue_depth_after = health["queue_depth"]
        metrics = await client.get("/metrics")
        if metrics.status_code == 200:
            report.relay_in_flight_after = sum(
                int(float(line.rsplit(" ", 1)[1]))
                for line in metrics.text.splitlines()
                if line.startswith(("modelrelay_in_flight{", "modelrelay_in_flight "))
            )
    report.relay_rss_kib.append(_rss_kib(relay.process.pid))
    report.seconds = trio.current_time() - start
    # Every request was logged once by the relay.
    with trio.move_on_after(5):
        await relay.wait_count(("request finished", "request rejected"), report.requests)
    report.relay_logged = len(relay.events("request finished")) + len(
        relay.events("request rejected")
    )
