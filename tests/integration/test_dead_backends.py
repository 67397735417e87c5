"""Dead backends behind live agents: requeued, withdrawn, ejected, and 503 when none is left.

Real relay and agent processes; the backends are in-process `FakeBackend`s
and a port nobody listens on (a backend that is down).
"""

from __future__ import annotations

import httpx
import trio

from tests.fake_backend import FakeBackend
from tests.integration.procs import agent_process, relay_process


async def _closed_port() -> int:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_dead_backend_costs_no_request_and_is_offered_again(nursery: trio.Nursery) -> None:
    """Two agents, one in front of a closed port: every request gets a 200, the
    dead one withdraws its model, /health and /admin/workers and /metrics say
    why, and once the backend listens again its agent offers the model again."""
    live = FakeBackend(models=["m"])
    await nursery.start(live.run)
    port = await _closed_port()
    async with (
        relay_process("--admin-token", "adm") as (relay, url),
        agent_process(relay, live.url, "--models", "m"),
        agent_process(relay, f"http://127.0.0.1:{port}", "--models", "m") as dead_agent,
        httpx.AsyncClient(base_url=url, timeout=20) as client,
    ):
        statuses = []
        for _ in range(20):
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            response = await client.post("/v1/chat/completions", json=body)
            statuses.append(response.status_code)
        assert statuses == [200] * 20
        assert relay.events("request requeued")
        await dead_agent.wait_for(
            lambda line: line.get("event", "").startswith("backend unreachable")
        )
        health = (await client.get("/health")).json()
        assert health["status"] == "degraded"
        assert health["workers_unhealthy"]
        assert "127.0.0.1" not in str(health["workers_unhealthy"])
        workers = (
            await client.get("/admin/workers", headers={"authorization": "Bearer adm"})
        ).json()["workers"]
        assert any(w["unhealthy"] for w in workers)
        metrics = (await client.get("/metrics")).text
        assert "modelrelay_backend_failures_total 1.0" in metrics
        assert "modelrelay_worker_backend_unhealthy{" in metrics
        # The backend comes back at the same address: probed, offered again.
        revived = FakeBackend(models=["m"])
        await nursery.start(revived.run, port)
        await dead_agent.wait_for(lambda line: line.get("event", "").startswith("backend answers"))
        await relay.wait_for(lambda line: line.get("event") == "worker healthy again")
        assert (await client.get("/health")).json()["status"] == "ok"
        # Both serve again: ten requests reach both backends.
        before = len(revived.requests)
        for _ in range(10):
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
        assert len(revived.requests) > before


async def test_no_healthy_worker_left_is_503_with_retry_after_and_no_address() -> None:
    port = await _closed_port()
    async with (
        relay_process() as (relay, url),
        agent_process(relay, f"http://127.0.0.1:{port}", "--models", "m"),
        httpx.AsyncClient(base_url=url, timeout=20) as client,
    ):
        for stream in (False, True, False):
            body = {"model": "m", "stream": stream, "messages": []}
            response = await client.post("/v1/chat/completions", json=body)
            assert response.status_code == 503, response.text
            assert int(response.headers["retry-after"]) >= 1
            assert "127.0.0.1" not in response.text
            assert str(port) not in response.text
        anthropic = await client.post(
            "/v1/messages", json={"model": "m", "max_tokens": 5, "messages": []}
        )
        assert anthropic.status_code == 503
        assert anthropic.json()["type"] == "error"
        metrics = (await client.get("/metrics")).text
        assert "modelrelay_backend_failures_total 1.0" in metrics
