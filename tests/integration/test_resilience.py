"""Agents killed, frozen, drained; the relay drained: real processes, real signals.

Short heartbeat and drain timeouts keep each case to a few seconds.
"""

from __future__ import annotations

import json
import signal
import socket

import httpx
import pytest
import trio

from tests.fake_backend import FakeBackend
from tests.integration.procs import SECRET, agent_process, relay_process, spawn


def _posts(backend: FakeBackend) -> list:  # type: ignore[type-arg]
    return [r for r in backend.requests if r.method == "POST"]


async def _two_backends(nursery: trio.Nursery) -> tuple[FakeBackend, FakeBackend]:
    a, b = FakeBackend(models=["m"]), FakeBackend(models=["m"])
    await nursery.start(a.run)
    await nursery.start(b.run)
    return a, b


async def _first_post(*backends: FakeBackend) -> FakeBackend:
    """The backend that received the first client request."""
    while True:
        for backend in backends:
            if _posts(backend):
                return backend
        async with trio.open_nursery() as n:
            for backend in backends:

                async def wake(b: FakeBackend = backend) -> None:
                    await b.wait_requests(len(b.requests) + 1)
                    n.cancel_scope.cancel()

                n.start_soon(wake)


async def _hit_the_busy_agent(nursery: trio.Nursery, signum: int, *relay_flags: str):  # type: ignore[no-untyped-def]
    """Two agents, each with its own backend; one request; `signum` to the
    agent that took it, while it works. Returns the response, the backend
    that did not take it first, and the relay process."""
    a, b = await _two_backends(nursery)
    async with (
        relay_process(*relay_flags) as (relay, url),
        agent_process(relay, a.url) as agent_a,
        agent_process(relay, b.url) as agent_b,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        agents = {id(a): agent_a, id(b): agent_b}
        result = {}

        async def call() -> None:
            body = {"model": "m", "messages": [], "fake": {"chunks": 2, "delay": 0.5}}
            result["r"] = await client.post("/v1/chat/completions", json=body)

        with trio.fail_after(20):
            async with trio.open_nursery() as n:
                n.start_soon(call)
                victim = await _first_post(a, b)
                agents[id(victim)].signal(signum)
        agents[id(victim)].signal(signal.SIGCONT)  # a frozen one may go now
    return result["r"], (b if victim is a else a), relay


async def test_agent_killed_mid_request_completes_on_another(nursery) -> None:
    response, survivor, relay = await _hit_the_busy_agent(nursery, signal.SIGKILL)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"]
    assert len(_posts(survivor)) == 1
    assert relay.events("request requeued")


async def test_agent_killed_mid_stream_ends_with_error_event(backend) -> None:
    async with (
        relay_process() as (relay, url),
        agent_process(relay, backend.url) as agent,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        body = {"model": "fake-model", "stream": True, "messages": [], "fake": {"stall_after": 1}}
        with trio.fail_after(20):
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                parts = response.aiter_raw()
                first = await parts.__anext__()
                agent.signal(signal.SIGKILL)
                rest = b"".join([p async for p in parts])
    assert response.status_code == 200
    assert first.startswith(b"data: ")
    last = rest.strip().split(b"\n\n")[-1]
    assert json.loads(last.removeprefix(b"data: "))["error"]["code"] == "worker_lost"


async def test_frozen_agent_is_dropped_and_its_request_requeued(nursery) -> None:
    response, _, relay = await _hit_the_busy_agent(
        nursery, signal.SIGSTOP, "--heartbeat-interval", "0.2", "--heartbeat-timeout", "1"
    )
    assert response.status_code == 200
    # Dropped for its silence, then its request requeued.
    assert len(relay.events("worker silent past heartbeat timeout")) == 1
    assert relay.events("request requeued")


async def _slow_call(client: httpx.AsyncClient, result: dict[str, httpx.Response]) -> None:
    """A request the backend takes ~0.9 s to answer: in flight while a drain starts."""
    body = {"model": "fake-model", "messages": [], "fake": {"chunks": 3, "delay": 0.3}}
    result["r"] = await client.post("/v1/chat/completions", json=body)


async def test_agent_sigterm_drains_in_flight_and_exits_zero(backend) -> None:
    async with (
        relay_process() as (relay, url),
        agent_process(relay, backend.url, "--drain-timeout", "10") as agent,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        result: dict[str, httpx.Response] = {}
        with trio.fail_after(20):
            async with trio.open_nursery() as n:
                n.start_soon(_slow_call, client, result)
                await _first_post(backend)
                agent.signal(signal.SIGTERM)
                # The relay stops routing to it at once, while it stays connected.
                await relay.wait_for(lambda line: line.get("event") == "worker draining")
                assert (await client.get("/health")).json()["workers_connected"] == 1
            code = await agent.wait_exit()
    assert result["r"].status_code == 200
    assert code == 0


async def test_relay_sigterm_drains_and_exits_zero(backend) -> None:
    async with (
        relay_process("--drain-timeout", "10") as (relay, url),
        agent_process(relay, backend.url),
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        result: dict[str, httpx.Response] = {}
        with trio.fail_after(20):
            async with trio.open_nursery() as n:
                n.start_soon(_slow_call, client, result)
                await _first_post(backend)
                relay.signal(signal.SIGTERM)
                await relay.wait_for(lambda line: line.get("event") == "relay draining")
                refused = await client.post(
                    "/v1/chat/completions", json={"model": "fake-model", "messages": []}
                )
            code = await relay.wait_exit()
    assert refused.status_code == 503
    assert result["r"].status_code == 200
    assert code == 0


async def test_discovery_picks_up_a_model_added_at_run_time(backend) -> None:
    async with (
        relay_process() as (relay, url),
        agent_process(relay, backend.url, "--models-poll-interval", "0.2"),
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        backend.models.append("late-model")
        with trio.fail_after(10):
            await relay.wait_for(
                lambda line: (
                    line.get("event") == "worker models updated"
                    and "late-model" in str(line.get("models"))
                )
            )
        response = await client.post("/v1/chat/completions", json={"model": "late-model"})
    assert response.status_code == 200


def spawn_agent(relay_url: str, backend_url: str, *, secret: str = SECRET):  # type: ignore[no-untyped-def]
    return spawn(
        "agent",
        [
            "-m",
            "agent",
            "run",
            "--proxy-url",
            relay_url,
            "--backend-url",
            backend_url,
            "--worker-secret",
            secret,
            "--log-format",
            "json",
        ],
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.one_front
async def test_wrong_secret_then_right_recovers_without_restarting_agent(backend) -> None:
    port = _free_port()
    listen = ["--listen", f"127.0.0.1:{port}"]
    async with (
        relay_process(*listen) as (relay, url),
        spawn_agent(url, backend.url, secret="agent-secret") as agent,
    ):
        refusal = await agent.wait_for(lambda line: line.get("level") == "error")
        relay.signal(signal.SIGTERM)
        await relay.wait_exit()
        # Same agent, still running: the relay comes back with the agent's secret.
        async with relay_process(*listen, "--worker-secret", "agent-secret") as (relay2, _):
            relay2.wait_limit = 40  # the agent's auth cool-down is 10 s, jittered
            await relay2.wait_for(lambda line: line.get("event") == "worker registered")
            await agent.wait_for(lambda line: line.get("event") == "registered")
    assert "secret" in refusal["event"]


@pytest.fixture
async def backend(nursery: trio.Nursery) -> FakeBackend:
    fake = FakeBackend(models=["fake-model"])
    await nursery.start(fake.run)
    return fake
