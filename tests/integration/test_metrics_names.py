"""Metric names on a live relay and agent (parsed with prometheus-client's parser),
and every query of the shipped Grafana dashboard against them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.procs import agent_process, relay_process

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from tests.fake_backend import FakeBackend

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "contrib" / "grafana" / "modelrelay.json"


def _families(text: str) -> dict[str, Metric]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def _samples(families: dict[str, Metric]) -> set[str]:
    return {sample.name for family in families.values() for sample in family.samples}


@pytest.fixture
async def scraped(backend: FakeBackend) -> tuple[dict[str, Metric], dict[str, Metric]]:
    """Both daemons' /metrics after a few requests of every kind."""
    async with (
        relay_process() as (relay, url),
        agent_process(relay, backend.url, "--metrics-listen", "127.0.0.1:0") as agent,
    ):
        listening = await agent.wait_for(lambda line: line.get("event") == "metrics listening")
        async with httpx.AsyncClient(base_url=url, timeout=20) as client:
            for body in (
                {"model": "fake-model", "messages": []},
                {"model": "fake-model", "messages": [], "stream": True},
                {"model": "fake-model", "messages": [], "fake": {"status": 500}},
                {"model": "nobody-serves-this", "messages": []},
            ):
                await client.post("/v1/chat/completions", json=body)
            relay_text = (await client.get("/metrics")).text
            agent_text = (await client.get(listening["url"])).text
            missing = await client.get(listening["url"].replace("/metrics", "/nope"))
            assert missing.status_code == 404
    return _families(relay_text), _families(agent_text)


async def test_relay_and_agent_metric_names(
    scraped: tuple[dict[str, Metric], dict[str, Metric]],
) -> None:
    relay, agent = scraped
    for name in ("modelrelay_queue_wait_seconds", "modelrelay_client_time_to_first_byte_seconds"):
        assert relay[name].type == "histogram"
        counts = [s for s in relay[name].samples if s.name == f"{name}_count"]
        assert any(s.labels["model"] == "fake-model" and s.value >= 1 for s in counts), name
    responses = {
        (s.labels["endpoint"], s.labels["code"])
        for s in relay["modelrelay_responses"].samples
        if s.name == "modelrelay_responses_total"
    }
    assert {("/v1/chat/completions", "200"), ("/v1/chat/completions", "500")} <= responses
    assert ("/v1/chat/completions", "404") in responses
    errors = [
        s for s in relay["modelrelay_worker_backend_errors"].samples if s.name.endswith("_total")
    ]
    assert len(errors) == 1
    assert errors[0].value == 1
    assert errors[0].labels["worker"]
    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds"):
        assert name in relay, name
        assert name in agent, name

    assert agent["modelrelay_agent_backend_request_duration_seconds"].type == "histogram"
    in_flight = agent["modelrelay_agent_in_flight"].samples[0]
    assert in_flight.value == 0  # every request has ended
    agent_errors = agent["modelrelay_agent_backend_errors"].samples
    assert any(s.name.endswith("_total") and s.value == 1 for s in agent_errors)


async def test_every_dashboard_query_names_existing_metrics(
    scraped: tuple[dict[str, Metric], dict[str, Metric]],
) -> None:
    relay, agent = scraped
    known = _samples(relay) | _samples(agent)
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 10
    for expr in exprs:
        for name in re.findall(r"\b((?:modelrelay|process)_[a-z0-9_]+)\b", expr):
            assert name in known, f"{name} (in {expr!r}) is not exported"
