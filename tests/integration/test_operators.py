"""What an operator relies on, with real relay and agent processes and JSON logs.

Client keys end to end (the backend never sees one), keys that survive a
relay restart, `/metrics` from a real process, and one request followed
through both processes' logs by its id.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.procs import Proc, agent_process, relay_process

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

    from tests.fake_backend import FakeBackend

ADMIN = "operator-admin-token"
AUTH = {"authorization": f"Bearer {ADMIN}"}
# Fields the canonical per-request line carries (spec: timestamp, level, event,
# request id, model, worker, status, durations; plus the key's id).
RELAY_REQUEST_FIELDS = {
    "timestamp", "level", "event", "request_id", "model", "worker_id", "status",
    "duration_ms", "ttfb_ms", "key_id",
}  # fmt: skip


def keyed_relay(data_dir: Path) -> AbstractAsyncContextManager[tuple[Proc, str]]:
    return relay_process(
        "--admin-token", ADMIN, "--require-api-keys", "--data-dir", str(data_dir)
    )  # fmt: skip


async def create_key(client: httpx.AsyncClient, name: str) -> dict[str, str]:
    response = await client.post("/admin/keys", json={"name": name}, headers=AUTH)
    assert response.status_code == 201, response.text
    return dict(response.json())


def assert_all_json(proc: Proc) -> None:
    """Every line the process wrote is one JSON object (no stray text, no tracebacks)."""
    for raw in proc.raw:
        if raw.strip():
            doc = json.loads(raw)
            assert isinstance(doc, dict), raw
            assert {"timestamp", "level", "event"} <= set(doc), raw


async def test_keys_end_to_end_and_logs_follow_the_request(
    backend: FakeBackend, tmp_path: Path
) -> None:
    with trio.fail_after(60):
        async with (
            keyed_relay(tmp_path / "data") as (relay, url),
            agent_process(relay, backend.url) as agent,
            httpx.AsyncClient(base_url=url, timeout=20) as client,
        ):
            created = await create_key(client, "team-a")
            key = created["key"]

            refused = await client.post(
                "/v1/chat/completions", json={"model": "fake-model", "messages": []}
            )
            assert refused.status_code == 401
            chat = await client.post(
                "/v1/chat/completions",
                json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": f"Bearer {key}", "x-request-id": "op-trace-1"},
            )
            assert chat.status_code == 200, chat.text
            assert chat.headers["x-request-id"] == "op-trace-1"
            messages = await client.post(
                "/v1/messages",
                json={"model": "fake-model", "max_tokens": 8,
                      "messages": [{"role": "user", "content": "hi"}]},
                headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
            )  # fmt: skip
            assert messages.status_code == 200, messages.text

            # The backend got both requests, and neither relay credential.
            posts = [r for r in backend.requests if r.method == "POST"]
            assert [r.path for r in posts] == ["/v1/chat/completions", "/v1/messages"]
            for recorded in posts:
                assert "authorization" not in recorded.headers
                assert "x-api-key" not in recorded.headers
                assert key not in json.dumps(recorded.headers)
                assert key.encode() not in recorded.body
            assert posts[1].headers.get("anthropic-version") == "2023-06-01"

            relay_line = await relay.wait_for(
                lambda line: (
                    line.get("event") == "request finished"
                    and line.get("client_request_id") == "op-trace-1"
                )
            )
            agent_line = await agent.wait_for(
                lambda line: line.get("client_request_id") == "op-trace-1"
            )

            stats = (await client.get("/admin/stats", headers=AUTH)).json()
            (listed,) = (await client.get("/admin/keys", headers=AUTH)).json()["keys"]

    assert set(relay_line) >= RELAY_REQUEST_FIELDS, relay_line
    assert relay_line["key_id"] == created["id"]
    assert relay_line["status"] == 200
    assert relay_line["model"] == "fake-model"
    assert relay_line["worker_id"].startswith("worker-")
    assert relay_line["duration_ms"] >= relay_line["ttfb_ms"] >= 0
    assert agent_line["request_id"] == relay_line["request_id"]
    assert_all_json(relay)
    assert_all_json(agent)
    assert key not in "\n".join(relay.raw + agent.raw)  # never logged, anywhere

    assert stats["keys"][created["id"]]["requests"] == 2
    assert stats["models"]["fake-model"]["succeeded"] == 2
    assert stats["models"]["fake-model"]["tokens"]["out"] > 0
    assert listed["last_used_at"] is not None


async def test_keys_survive_a_relay_process_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with trio.fail_after(60):
        async with (
            keyed_relay(data_dir) as (_relay, url),
            httpx.AsyncClient(base_url=url, timeout=20) as client,
        ):
            kept = await create_key(client, "kept")
            gone = await create_key(client, "gone")
            assert (
                await client.delete(f"/admin/keys/{gone['id']}", headers=AUTH)
            ).status_code == 204
            # A use just before shutdown: written by the relay's final flush.
            used = await client.get("/v1/models", headers={"x-api-key": kept["key"]})
            assert used.status_code == 200

        async with (
            keyed_relay(data_dir) as (relay, url),
            httpx.AsyncClient(base_url=url, timeout=20) as client,
        ):
            ok = await client.get("/v1/models", headers={"authorization": f"Bearer {kept['key']}"})
            revoked = await client.get("/v1/models", headers={"x-api-key": gone["key"]})
            keys = (await client.get("/admin/keys", headers=AUTH)).json()["keys"]
            ready = await relay.wait_for(lambda line: line.get("event") == "key store ready")

    assert ok.status_code == 200
    assert revoked.status_code == 401
    assert {k["name"]: k["revoked"] for k in keys} == {"kept": False, "gone": True}
    assert next(k for k in keys if k["name"] == "kept")["last_used_at"] is not None
    assert ready["keys"] == 2
    assert (data_dir / "modelrelay.sqlite3").stat().st_mode & 0o077 == 0


async def test_metrics_from_a_real_relay(stack) -> None:
    with trio.fail_after(30):
        for _ in range(2):
            response = await stack.client.post(
                "/v1/chat/completions", json={"model": "fake-model", "messages": []}
            )
            assert response.status_code == 200
        text = (await stack.client.get("/metrics")).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    key = ("modelrelay_requests_total", (("model", "fake-model"), ("status_class", "2xx")))
    assert samples[key] == 2
    assert samples[("modelrelay_workers_connected", ())] == 1
    assert any(name == "modelrelay_worker_in_flight" for name, _ in samples)
