"""The chaos soak: many agents, bounded load, agents SIGKILLed and restarted at random.

Every request must be accounted for: a complete response, or a clear error
(an HTTP error status with a JSON body, or a stream that ends with the
dialect's error event). Anything else — a transport error, a stream cut
without an error event, a hang past the client's timeout — counts as lost.

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
from typing import Any

import attrs
import httpx
import trio

from tests.integration.procs import Proc, agent_process, relay_process

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

    def table(self) -> str:
        rows = [
            ("requests sent", self.requests),
            ("concurrency", self.concurrency),
            ("agents", self.agents),
            ("agents SIGKILLed (and restarted)", self.kills),
            ("wall time", f"{self.seconds:.1f} s"),
            *((f"outcome: {k}", v) for k, v in sorted(self.outcomes.items())),
            ("lost (no response, no clear error)", len(self.lost)),
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


async def _one(client: httpx.AsyncClient, i: int, rng: random.Random, report: SoakReport) -> None:
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
        if response.status_code == 200:
            if not stream:
                json.loads(data)
                report.outcomes["200 complete"] += 1
            elif data.endswith(b"data: [DONE]\n\n"):
                report.outcomes["200 stream complete"] += 1
            elif b'"worker_lost"' in data.rsplit(b"\n\n", 2)[-2]:
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
    kill_every: tuple[float, float] = (0.3, 1.0),
) -> SoakReport:
    """Run the soak; return what happened to every request.

    Bound it at the call site (`trio.fail_after`): a hung soak is a failure.
    """
    rng = random.Random(seed)
    report = SoakReport(requests, concurrency, agents, 0, 0.0)
    backend_proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.fake_backend", "--models", "soak"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert backend_proc.stdout is not None
        first = await backend_proc.stdout.receive_some(200)
        backend_url = first.decode().split("=", 1)[1].strip()
        async with relay_process(
            "--heartbeat-interval",
            "1",
            "--heartbeat-timeout",
            "3",
            "--log-level",
            "info",
            "--max-queue-len",
            "0",
        ) as (relay, url):
            await _soak(relay, url, backend_url, rng, report, kill_every)
    finally:
        backend_proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(5):
            await backend_proc.wait()
        if backend_proc.returncode is None:
            backend_proc.kill()
    return report


async def _soak(
    relay: Proc,
    url: str,
    backend_url: str,
    rng: random.Random,
    report: SoakReport,
    kill_every: tuple[float, float],
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
            while not load_done.is_set():
                async with agent_process(
                    relay, backend_url, *flags, "--worker-name", f"soak-{index}"
                ) as agent:
                    with trio.move_on_after(rng.uniform(*kill_every) * report.agents):
                        await load_done.wait()
                    if load_done.is_set():
                        return
                    agent.signal(signal.SIGKILL)
                    report.kills += 1
                    await agent.wait_exit()

        async def load() -> None:
            limiter = trio.Semaphore(report.concurrency)

            async def bounded(i: int) -> None:
                async with limiter:
                    await _one(client, i, rng, report)

            async with trio.open_nursery() as n:
                for i in range(report.requests):
                    await limiter.acquire()
                    limiter.release()
                    n.start_soon(bounded, i)
                    if i % 200 == 0:
                        report.relay_rss_kib.append(_rss_kib(relay.process.pid))
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
