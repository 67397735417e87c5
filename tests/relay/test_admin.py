"""The admin API and client API keys, against a real relay on real sockets."""

from __future__ import annotations

import datetime as dt
import json
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio

import wire
from tests.relay.fake_worker import FakeWorker, connect_worker

if TYPE_CHECKING:
    import httpx

ADMIN = "admin-token-for-tests"
AUTH = {"authorization": f"Bearer {ADMIN}"}
CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "m1", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}

# Every admin route (and an unknown one: the guard covers all of /admin).
ADMIN_CALLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/admin/workers", None),
    ("GET", "/admin/stats", None),
    ("GET", "/admin/keys", None),
    ("POST", "/admin/keys", {"name": "matrix"}),
    ("DELETE", "/admin/keys/key_0000000000000000", None),
    ("POST", "/admin/workers/worker-1/drain", None),
    ("POST", "/admin/models/refresh", None),
    ("GET", "/admin/no-such-route", None),
]
IDS = [f"{m} {p}" for m, p, _ in ADMIN_CALLS]


async def call(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    with trio.fail_after(10):
        return await client.request(method, path, json=body, headers=headers)


# ------------------------------------------------------------ auth matrix


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS, ids=IDS)
async def test_admin_disabled_without_token(start_relay, method, path, body) -> None:
    relay = await start_relay()
    for headers in (None, AUTH, {"authorization": "Bearer anything"}):
        response = await call(relay.client, method, path, body, headers)
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert error["type"] == "permission_error"
        assert "--admin-token" in error["message"]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS, ids=IDS)
async def test_admin_wrong_or_missing_token_is_401(start_relay, method, path, body) -> None:
    relay = await start_relay(admin_token=ADMIN)
    for headers in (
        None,
        {"authorization": "Bearer wrong"},
        {"authorization": f"Bearer {ADMIN}x"},
        {"authorization": f"Basic {ADMIN}"},
        {"authorization": ADMIN},
        {"x-api-key": ADMIN},
    ):
        response = await call(relay.client, method, path, body, headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["error"]["code"] == "invalid_admin_token"
        assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS, ids=IDS)
async def test_admin_right_token(start_relay, method, path, body) -> None:
    relay = await start_relay(admin_token=ADMIN)
    expected = {
        "/admin/keys/key_0000000000000000": 404,  # no such key
        "/admin/workers/worker-1/drain": 404,  # no such worker
        "/admin/no-such-route": 404,
    }.get(path, 201 if (method, path) == ("POST", "/admin/keys") else None)
    response = await call(relay.client, method, path, body, AUTH)
    assert response.status_code == (expected or response.status_code)
    assert response.status_code < 300 or expected == 404, response.text
    assert response.headers["content-type"].startswith("application/json")


# ----------------------------------------------------------- fleet views


def parse_time(text: str) -> dt.datetime:
    assert text.endswith("Z"), text
    return dt.datetime.fromisoformat(text)


async def test_workers_view(start_relay) -> None:
    relay = await start_relay(admin_token=ADMIN)
    async with connect_worker(relay.ws_url, models=["m1", "m2"], max_concurrent=4, name="gpu-1"):
        doc = (await call(relay.client, "GET", "/admin/workers", None, AUTH)).json()
        state = relay.server.relay
        (seen,) = state.hub.statistics().workers
    (worker,) = doc["workers"]
    assert set(worker) >= {
        "id", "name", "models", "max_concurrent", "in_flight", "load", "draining",
        "connected_since", "last_heartbeat", "requests_served",
    }  # fmt: skip
    assert worker["name"] == "gpu-1"
    assert worker["models"] == ["m1", "m2"]
    assert worker["max_concurrent"] == 4
    assert worker["in_flight"] == 0
    assert worker["load"] == 0
    assert worker["draining"] is False
    # The relay's clock turned into dates, exactly (no wall-clock window).
    assert worker["connected_since"] == state.rfc3339(seen.connected_since)
    assert worker["last_heartbeat"] == state.rfc3339(seen.last_seen)
    assert parse_time(worker["connected_since"]) <= parse_time(worker["last_heartbeat"])


async def test_admin_dates_come_from_the_relay_clock(memory_relay) -> None:
    state = memory_relay.relay
    state.wall_offset = 1_700_000_000 - 5.0  # injected: trio time 5.0 is this epoch second
    assert state.rfc3339(5.0) == "2023-11-14T22:13:20.000Z"
    assert state.rfc3339(5.25) == "2023-11-14T22:13:20.250Z"


async def test_drain_one_worker(start_relay) -> None:
    relay = await start_relay(admin_token=ADMIN)
    async with connect_worker(relay.ws_url, name="a") as a, connect_worker(relay.ws_url, name="b"):
        assert a.ack is not None
        worker_id = a.ack.worker_id
        response = await call(relay.client, "POST", f"/admin/workers/{worker_id}/drain", None, AUTH)
        assert response.status_code == 202
        with trio.fail_after(5):
            message = await a.recv()
        assert isinstance(message, wire.GracefulShutdown)
        workers = (await call(relay.client, "GET", "/admin/workers", None, AUTH)).json()["workers"]
        assert {w["name"]: w["draining"] for w in workers} == {"a": True, "b": False}
        missing = await call(relay.client, "POST", "/admin/workers/worker-999/drain", None, AUTH)
        assert missing.status_code == 404


async def test_refresh_models_reaches_every_worker(start_relay) -> None:
    relay = await start_relay(admin_token=ADMIN)
    async with connect_worker(relay.ws_url) as a, connect_worker(relay.ws_url) as b:
        response = await call(relay.client, "POST", "/admin/models/refresh", None, AUTH)
        assert response.status_code == 202
        assert response.json() == {"workers": 2}
        with trio.fail_after(5):
            for worker in (a, b):
                assert isinstance(await worker.recv(), wire.ModelsRefresh)


async def test_stats_move_with_traffic(start_relay, nursery) -> None:
    relay = await start_relay(admin_token=ADMIN)
    async with connect_worker(relay.ws_url) as worker:
        nursery.start_soon(serve, worker, 2)
        for _ in range(2):
            response = await relay.client.post("/v1/chat/completions", json=CHAT)
            assert response.status_code == 200
        await relay.client.post("/v1/chat/completions", content=b"{not json")
        doc = (await call(relay.client, "GET", "/admin/stats", None, AUTH)).json()
    assert doc["totals"]["requests"] == 3
    assert doc["totals"]["rejected"] == 1
    m1 = doc["models"]["m1"]
    assert m1["requests"] == 2
    assert m1["succeeded"] == 2
    assert m1["tokens"] == {"in": 2 * 3, "out": 2 * 5, "cache_read": 0, "cache_creation": 0}
    assert m1["latency_ms"]["count"] == 2
    assert m1["latency_ms"]["p50"] > 0
    assert m1["ttfb_ms"]["p99"] is not None
    assert m1["queue_depth"] == 0
    assert m1["in_flight"] == 0


async def serve(worker: FakeWorker, count: int, *, seen: list[wire.Request] | None = None) -> None:
    """Answer `count` requests with a small JSON body and token counts."""
    for _ in range(count):
        request = await worker.recv_request()
        if seen is not None:
            seen.append(request)
        await worker.send(
            wire.ResponseComplete(
                request_id=request.request_id,
                status_code=200,
                headers={"content-type": "application/json"},
                body='{"ok":true}',
                token_counts=wire.TokenCounts(prompt_tokens=3, completion_tokens=5),
            )
        )


# ------------------------------------------------------------------ keys


async def create_key(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    response = await call(client, "POST", "/admin/keys", {"name": name}, AUTH)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_key_create_validation(start_relay) -> None:
    relay = await start_relay(admin_token=ADMIN)
    for body in ({}, {"name": ""}, {"name": "   "}, {"name": 3}, {"name": "x" * 201}):
        response = await call(relay.client, "POST", "/admin/keys", body, AUTH)
        assert response.status_code == 400, body
        assert response.json()["error"]["type"] == "invalid_request_error"
    with trio.fail_after(10):
        response = await relay.client.post("/admin/keys", content=b"[", headers=AUTH)
    assert response.status_code == 400


async def test_key_lifecycle(start_relay, nursery) -> None:
    relay = await start_relay(admin_token=ADMIN, require_api_keys=True)
    created = await create_key(relay.client, "alice")
    assert set(created) == {"id", "name", "prefix", "created_at", "key"}
    assert created["key"].startswith("mr-")
    assert created["key"].startswith(created["prefix"])
    key = created["key"]

    listed = (await call(relay.client, "GET", "/admin/keys", None, AUTH)).json()["keys"]
    assert listed == [
        {
            "id": created["id"],
            "name": "alice",
            "prefix": created["prefix"],
            "created_at": created["created_at"],
            "last_used_at": None,
            "revoked": False,
        }
    ]
    assert key not in json.dumps(listed)

    async with connect_worker(relay.ws_url) as worker:
        seen: list[wire.Request] = []
        nursery.start_soon(partial(serve, worker, 2, seen=seen))
        with trio.fail_after(10):
            ok = await relay.client.post(
                "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"}
            )
            assert ok.status_code == 200, ok.text
            ok = await relay.client.post(
                "/v1/messages",
                json=MESSAGES,
                headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
            )
            assert ok.status_code == 200, ok.text
        # The relay consumed the credential: the worker (and its backend) never sees it.
        for request in seen:
            headers = {k.lower(): v for k, v in (request.headers or {}).items()}
            assert "authorization" not in headers
            assert "x-api-key" not in headers
            assert key not in request.body
        assert (seen[1].headers or {}).get("anthropic-version") == "2023-06-01"

        (entry,) = (await call(relay.client, "GET", "/admin/keys", None, AUTH)).json()["keys"]
        assert entry["last_used_at"] is not None
        assert parse_time(entry["last_used_at"]) >= parse_time(entry["created_at"])

        stats = (await call(relay.client, "GET", "/admin/stats", None, AUTH)).json()
        assert stats["keys"][created["id"]]["requests"] == 2

        revoked = await call(relay.client, "DELETE", f"/admin/keys/{created['id']}", None, AUTH)
        assert revoked.status_code == 204
        assert revoked.content == b""
        with trio.fail_after(10):
            refused = await relay.client.post(
                "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"}
            )
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
        assert "revoked" in refused.json()["error"]["message"]

    (entry,) = (await call(relay.client, "GET", "/admin/keys", None, AUTH)).json()["keys"]
    assert entry["revoked"] is True
    for bad in ("key_ffffffffffffffff", "nonsense", "key_%27%3B"):
        response = await call(relay.client, "DELETE", f"/admin/keys/{bad}", None, AUTH)
        assert response.status_code == 404, bad


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "requires an API key"),
        ({"authorization": "Bearer mr-not-a-real-key"}, "not valid"),
        ({"x-api-key": "mr-not-a-real-key"}, "not valid"),
        ({"authorization": "Bearer sk-openai-style"}, "not valid"),
        ({"authorization": "Basic Zm9vOmJhcg=="}, "requires an API key"),
    ],
)
async def test_missing_or_invalid_key_is_401_in_each_dialect(start_relay, headers, why) -> None:
    relay = await start_relay(admin_token=ADMIN, require_api_keys=True)
    with trio.fail_after(10):
        openai = await relay.client.post("/v1/chat/completions", json=CHAT, headers=headers)
        anthropic = await relay.client.post("/v1/messages", json=MESSAGES, headers=headers)
    assert openai.status_code == 401
    assert openai.json()["error"]["code"] == "invalid_api_key"
    assert why in openai.json()["error"]["message"]
    assert openai.headers["x-request-id"]
    assert anthropic.status_code == 401
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "authentication_error"


async def test_one_valid_credential_among_two_is_enough(start_relay, nursery) -> None:
    relay = await start_relay(admin_token=ADMIN, require_api_keys=True)
    key = (await create_key(relay.client, "claude"))["key"]
    async with connect_worker(relay.ws_url) as worker:
        nursery.start_soon(serve, worker, 1)
        with trio.fail_after(10):
            response = await relay.client.post(
                "/v1/messages",
                json=MESSAGES,
                headers={"authorization": "Bearer something-else", "x-api-key": key},
            )
    assert response.status_code == 200


async def test_keys_checked_before_the_body(start_relay) -> None:
    relay = await start_relay(admin_token=ADMIN, require_api_keys=True)
    with trio.fail_after(10):
        response = await relay.client.post("/v1/chat/completions", content=b"{not json")
    assert response.status_code == 401  # an unauthenticated client learns nothing more


async def test_models_list_needs_a_key_when_keys_are_required(start_relay) -> None:
    relay = await start_relay(admin_token=ADMIN, require_api_keys=True)
    key = (await create_key(relay.client, "lister"))["key"]
    async with connect_worker(relay.ws_url, models=["m1"]):
        with trio.fail_after(10):
            refused = await relay.client.get("/v1/models")
            allowed = await relay.client.get("/v1/models", headers={"x-api-key": key})
            health = await relay.client.get("/health")
            metrics = await relay.client.get("/metrics")
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "authentication_error"
    assert [m["id"] for m in allowed.json()["data"]] == ["m1"]
    assert health.status_code == 200
    assert metrics.status_code == 200


async def test_keys_not_required_passes_headers_through(start_relay, nursery) -> None:
    relay = await start_relay(admin_token=ADMIN)
    async with connect_worker(relay.ws_url) as worker:
        seen: list[wire.Request] = []
        nursery.start_soon(partial(serve, worker, 1, seen=seen))
        with trio.fail_after(10):
            response = await relay.client.post(
                "/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer backend-key"}
            )
    assert response.status_code == 200
    assert (seen[0].headers or {}).get("authorization") == "Bearer backend-key"


async def test_keys_survive_a_relay_restart(start_relay, nursery) -> None:
    first = await start_relay(admin_token=ADMIN, require_api_keys=True)
    created = await create_key(first.client, "durable")
    with trio.fail_after(10):
        await first.server.drain()

    # A second relay on the same data directory (make_config: tmp_path / "data").
    second = await start_relay(admin_token=ADMIN, require_api_keys=True)
    async with connect_worker(second.ws_url) as worker:
        nursery.start_soon(serve, worker, 1)
        with trio.fail_after(10):
            response = await second.client.post(
                "/v1/chat/completions",
                json=CHAT,
                headers={"authorization": f"Bearer {created['key']}"},
            )
    assert response.status_code == 200, response.text
    keys = (await call(second.client, "GET", "/admin/keys", None, AUTH)).json()["keys"]
    assert [k["id"] for k in keys] == [created["id"]]
