"""Several relays, one fleet: real relays, agents, PostgreSQL and HAProxy.

Two relay processes, two agent processes each serving both relays
(`--proxy-url a,b`), one fake backend per agent recording how many requests
it answers at once, HAProxy (contrib/haproxy/haproxy.cfg's policy) in front,
and for the keys a throwaway PostgreSQL cluster the relays share.

The rolling restart runs for `MODELRELAY_FLEET_SECS` seconds of steady load
(default 15 so that `make test` stays quick; the issue's figure is 60:
`MODELRELAY_FLEET_SECS=60 pytest tests/integration/test_fleet.py`), and at
least as long as restarting both relays takes.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import httpx
import pytest
import trio

from tests.fake_backend import FakeBackend
from tests.integration.haproxy import Haproxy, run_haproxy
from tests.integration.procs import SECRET, Proc, relay_process, spawn
from tests.relay.pg_cluster import PgCluster, pg_cluster_or_skip

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

FLEET_SECS = float(os.environ.get("MODELRELAY_FLEET_SECS", "15"))
RATE = 20.0  # requests per second through HAProxy during the restarts
ADMIN = "fleet-admin-token"
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


@attrs.define(eq=False)
class RelaySlot:
    """One relay of the fleet: restartable on the same port (HAProxy names it).

    Each incarnation's process lives in a task of its own in `nursery`, so a
    restart ends one task and starts another without unwinding anything
    opened after it (the agents).
    """

    nursery: trio.Nursery
    extra: tuple[str, ...]
    port: int = 0
    proc: Proc | None = None
    _stop: trio.Event | None = None
    _done: trio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _run(
        self, stop: trio.Event, done: trio.Event, *, task_status: trio.TaskStatus[None]
    ) -> None:
        try:
            listen = ("--listen", f"127.0.0.1:{self.port}") if self.port else ()
            async with relay_process(*self.extra, *listen) as (proc, url):
                self.port = int(url.rsplit(":", 1)[1])
                self.proc = proc
                task_status.started()
                await stop.wait()
        finally:
            done.set()

    async def start(self) -> Proc:
        self._stop, self._done = trio.Event(), trio.Event()
        await self.nursery.start(self._run, self._stop, self._done)
        assert self.proc is not None
        return self.proc

    async def stop(self) -> None:
        if self._stop is not None and self._done is not None:
            self._stop.set()
            await self._done.wait()
            self._stop = self._done = None

    async def restart(self) -> Proc:
        """SIGTERM (drain), wait for the exit, start again on the same port."""
        assert self.proc is not None
        self.proc.signal(signal.SIGTERM)
        assert await self.proc.wait_exit() == 0
        await self.stop()
        return await self.start()


@attrs.define(eq=False)
class Fleet:
    relays: list[RelaySlot]
    backends: list[FakeBackend]
    agents: list[Proc]
    names: list[str]

    async def wait_agents(self, relay: RelaySlot) -> None:
        """Until every agent is registered at `relay` (its current process)."""
        assert relay.proc is not None
        for name in self.names:
            await relay.proc.wait_for(
                lambda line, name=name: (
                    line.get("event") == "worker registered" and line.get("worker_name") == name
                )
            )


@asynccontextmanager
async def open_fleet(
    nursery: trio.Nursery, *relay_extra: str, max_concurrency: int = 2
) -> AsyncIterator[Fleet]:
    async with AsyncExitStack() as stack:
        extra = ("--drain-timeout", "20", "--drain-grace", "2", *relay_extra)
        relays = [RelaySlot(nursery, extra) for _ in (0, 1)]
        for relay in relays:
            stack.push_async_callback(relay.stop)
            await relay.start()
        proxy_urls = ",".join(relay.url for relay in relays)
        backends, agents, names = [], [], []
        for i in (0, 1):
            backend = FakeBackend(models=["fake-model"])
            await nursery.start(backend.run)
            name = f"fleet-agent-{i}"
            args = ["-m", "agent", "run", "--proxy-url", proxy_urls, "--backend-url", backend.url]
            args += ["--worker-secret", SECRET, "--models", "fake-model", "--worker-name", name]
            args += ["--max-concurrency", str(max_concurrency), "--log-format", "json"]
            agent = await stack.enter_async_context(spawn(name, args))
            backends.append(backend)
            agents.append(agent)
            names.append(name)
        fleet = Fleet(relays, backends, agents, names)
        for relay in relays:
            await fleet.wait_agents(relay)
        yield fleet


def _fake(stream: bool, chunks: int = 3, delay: float = 0.05) -> dict[str, object]:
    return {**CHAT, "stream": stream, "fake": {"chunks": chunks, "delay": delay}}


async def _complete(client: httpx.AsyncClient, stream: bool, **fake: float) -> str | None:
    """One request; None if it fully succeeded, else what went wrong."""
    try:
        if not stream:
            response = await client.post("/v1/chat/completions", json=_fake(False, **fake))  # type: ignore[arg-type]
            if response.status_code != 200:
                return f"status {response.status_code}: {response.text[:200]}"
            if not response.json()["choices"][0]["message"]["content"]:
                return "empty answer"
            return None
        async with client.stream(
            "POST",
            "/v1/chat/completions",
            json=_fake(True, **fake),  # type: ignore[arg-type]
        ) as response:
            body = (await response.aread()).decode()
        if response.status_code != 200:
            return f"stream status {response.status_code}: {body[:200]}"
        if '"error"' in body or not body.endswith("data: [DONE]\n\n"):
            return f"lost stream: {body[-200:]!r}"
        return None
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    yield from pg_cluster_or_skip()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    import psycopg

    name = "fleet_" + secrets.token_hex(6)
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield pg_cluster.url(name)
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@asynccontextmanager
async def _behind_haproxy(
    nursery: trio.Nursery,
) -> AsyncIterator[tuple[Fleet, Haproxy, httpx.AsyncClient]]:
    """The fleet (8 slots per agent) behind HAProxy, once HAProxy sees both relays up,
    and a client of HAProxy's socket."""
    async with (
        open_fleet(nursery, max_concurrency=8) as fleet,
        run_haproxy([("127.0.0.1", relay.port) for relay in fleet.relays]) as haproxy,
        httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(haproxy.socket)),
            base_url="http://fleet",
            timeout=30,
        ) as client,
    ):
        for i in (0, 1):
            with trio.fail_after(20):
                await haproxy.wait_state(f"relay-{i}", running=True)
        yield fleet, haproxy, client


# --------------------------------------------------------------------- tests


async def test_one_budget_per_agent_while_both_relays_send_work(nursery: trio.Nursery) -> None:
    """Each relay believes each agent has 2 free slots; the agents never run more than 2."""
    async with open_fleet(nursery, max_concurrency=2) as fleet:
        failures: list[str | None] = []
        async with (
            httpx.AsyncClient(base_url=fleet.relays[0].url, timeout=30) as a,
            httpx.AsyncClient(base_url=fleet.relays[1].url, timeout=30) as b,
        ):

            async def one(client: httpx.AsyncClient, stream: bool) -> None:
                failures.append(await _complete(client, stream, chunks=4, delay=0.05))

            with trio.fail_after(60):
                async with trio.open_nursery() as requests:
                    for i in range(16):  # 32 at once against 4 real slots
                        requests.start_soon(one, a, i % 2 == 0)
                        requests.start_soon(one, b, i % 2 == 1)
        assert failures == [None] * 32
        assert [backend.max_running for backend in fleet.backends] == [2, 2]
        bounced = [
            line
            for agent in fleet.agents
            for line in agent.events("request refused")
            if line.get("why") == "fleet_busy"
        ]
        assert bounced, "both relays should have competed for the agents' slots"
        for relay in fleet.relays:
            assert relay.proc is not None
            # A budget refusal is not a capacity lie: nothing was lowered.
            assert relay.proc.events("worker refused a request: capacity lowered") == []


async def test_a_key_made_at_one_relay_works_and_dies_at_the_other(
    nursery: trio.Nursery, pg_url: str
) -> None:
    extra = ("--database-url", pg_url, "--require-api-keys", "--admin-token", ADMIN)
    async with open_fleet(nursery, *extra) as fleet:
        admin = {"authorization": f"Bearer {ADMIN}"}
        async with (
            httpx.AsyncClient(base_url=fleet.relays[0].url, timeout=10) as a,
            httpx.AsyncClient(base_url=fleet.relays[1].url, timeout=10) as b,
        ):
            created = await a.post("/admin/keys", json={"name": "fleet"}, headers=admin)
            assert created.status_code == 201, created.text
            key = created.json()
            auth = {"authorization": f"Bearer {key['key']}"}

            async def models_status(client: httpx.AsyncClient) -> int:
                return (await client.get("/v1/models", headers=auth)).status_code

            async def until_status(client: httpx.AsyncClient, wanted: int) -> None:
                while True:  # polled; the caller bounds it
                    if await models_status(client) == wanted:
                        return
                    await trio.sleep(0.02)

            with trio.fail_after(2):
                await until_status(b, 200)
            answer = await b.post("/v1/chat/completions", json=_fake(False), headers=auth)
            assert answer.status_code == 200
            assert (await models_status(a)) == 200

            revoked = await b.delete(f"/admin/keys/{key['id']}", headers=admin)
            assert revoked.status_code == 204
            with trio.fail_after(2):  # the bound: refused at A within 2 s
                await until_status(a, 401)
            refused = await a.post("/v1/chat/completions", json=_fake(False), headers=auth)
            assert refused.status_code == 401
            assert "revoked" in refused.text


async def test_rolling_restart_under_load_through_haproxy_fails_nothing(
    nursery: trio.Nursery,
) -> None:
    async with _behind_haproxy(nursery) as (fleet, haproxy, client):
        outcomes: list[str | None] = []
        restarted = trio.Event()

        async def one(stream: bool) -> None:
            with trio.move_on_after(30) as hung:
                outcomes.append(await _complete(client, stream))
            if hung.cancelled_caught:
                outcomes.append("hung for 30 s")

        async def load() -> None:
            deadline = trio.current_time() + FLEET_SECS
            async with trio.open_nursery() as requests:
                i = 0
                while not (restarted.is_set() and trio.current_time() >= deadline):
                    requests.start_soon(one, i % 2 == 0)
                    i += 1
                    await trio.sleep(1 / RATE)

        with trio.fail_after(FLEET_SECS + 120):
            async with trio.open_nursery() as running:
                running.start_soon(load)
                for i, relay in enumerate(fleet.relays):
                    await trio.sleep(1)  # some steady load before each restart
                    await relay.restart()
                    await fleet.wait_agents(relay)
                    with trio.fail_after(20):
                        await haproxy.wait_state(f"relay-{i}", running=True)
                await trio.sleep(2)  # and after the last restart, so both serve again
                restarted.set()
        failed = [outcome for outcome in outcomes if outcome is not None]
        assert len(outcomes) >= FLEET_SECS * RATE * 0.5  # the load did run
        assert failed == [], f"{len(failed)} of {len(outcomes)} failed: {failed[:5]}"
        for relay in fleet.relays:
            assert relay.proc is not None
            # Each restarted relay served part of the load.
            assert relay.proc.events("request finished"), "a relay took no traffic"


async def test_a_killed_relay_fails_its_streams_cleanly_and_the_other_takes_over(
    nursery: trio.Nursery,
) -> None:
    async with _behind_haproxy(nursery) as (fleet, haproxy, client):
        started: list[trio.Event] = [trio.Event() for _ in range(6)]
        ends: list[str] = []
        meanwhile: list[str | None] = []

        async def long_stream(ready: trio.Event) -> None:
            body = _fake(True, chunks=40, delay=0.1)  # about 4 s
            try:
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    async for _ in response.aiter_raw():
                        ready.set()
                ends.append("completed")
            except httpx.HTTPError as exc:
                ends.append(f"error: {type(exc).__name__}")
            finally:
                ready.set()

        with trio.fail_after(60):
            async with trio.open_nursery() as streams:
                for ready in started:
                    streams.start_soon(long_stream, ready)
                for ready in started:
                    await ready.wait()
                victim = fleet.relays[0]
                assert victim.proc is not None
                in_flight_there = len(victim.proc.events("request finished"))
                victim.proc.signal(signal.SIGKILL)
                # Until the check marks it down (within its interval), a request
                # may still meet the dead relay: HAProxy retries it elsewhere,
                # and at worst it fails cleanly; it never hangs.
                with trio.fail_after(20):
                    while (await haproxy.server_states()).get("relay-0") == 2:
                        meanwhile.append(await _complete(client, stream=True))
                # From then on every new request succeeds on the other relay.
                after = [await _complete(client, stream=i % 2 == 0) for i in range(20)]
        assert in_flight_there == 0  # all six were still streaming when it died
        assert len(ends) == 6  # every stream ended: none hung
        assert any(end.startswith("error") for end in ends), ends  # the dead relay's
        assert "completed" in ends  # the other relay's
        assert after == [None] * 20
        # Those within the check's interval mostly succeed too (HAProxy retries them).
        assert meanwhile.count(None) >= len(meanwhile) // 2, meanwhile


def test_the_shipped_haproxy_config_is_valid(tmp_path: Path) -> None:
    """contrib/haproxy/haproxy.cfg passes `haproxy -c` (with a throwaway certificate)."""
    import subprocess

    from tests.integration.haproxy import CONTRIB, haproxy_binary

    binary = haproxy_binary()
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=relay.example.com"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    pem = tmp_path / "modelrelay.pem"
    pem.write_text(cert.read_text() + key.read_text())
    config = tmp_path / "haproxy.cfg"
    config.write_text(CONTRIB.read_text().replace("/etc/haproxy/certs/modelrelay.pem", str(pem)))
    checked = subprocess.run(
        [binary, "-c", "-f", str(config)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_fleet_json_is_what_the_check_matches() -> None:
    """The shipped health check's pattern matches /health's body as the relay writes it."""
    import re

    from tests.integration.haproxy import CONTRIB, shipped_sections

    (rule,) = [
        line
        for line in shipped_sections(CONTRIB.read_text())["backend relays"]
        if line.startswith("http-check expect rstring")
    ]
    pattern = rule.split("rstring", 1)[1].strip().strip("'")
    healthy = {"status": "ok", "version": "1", "workers_connected": 2, "queue_depth": 0}
    assert re.search(pattern, json.dumps(healthy))
    assert not re.search(pattern, json.dumps({**healthy, "status": "draining"}))
    assert not re.search(pattern, json.dumps({**healthy, "workers_connected": 0}))


def test_the_shipped_nginx_fleet_recipe_is_valid(tmp_path: Path) -> None:
    """contrib/nginx/modelrelay-fleet.conf passes `nginx -t` (throwaway certificate)."""
    import shutil
    import subprocess

    from tests.integration.haproxy import CONTRIB

    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(binary):
        reason = "nginx is not installed (apt-get install nginx-light, or make deps-system)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(f"nginx recipe check SKIPPED: {reason}")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=relay.example.com"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    recipe = CONTRIB.parents[1] / "nginx" / "modelrelay-fleet.conf"
    live = "/etc/letsencrypt/live/relay.example.com/"
    text = recipe.read_text().replace(live + "fullchain.pem", str(cert))
    (tmp_path / "fleet.conf").write_text(text.replace(live + "privkey.pem", str(key)))
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{ include {tmp_path}/fleet.conf; }}\n"
    )
    checked = subprocess.run(
        [binary, "-t", "-p", str(tmp_path), "-c", str(main), "-e", str(tmp_path / "error.log")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
