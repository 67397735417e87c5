"""The console's HTTP surface against a real relay on real sockets: login, cookie
flags, CSRF, CSP, the SSE stream, cordons (admin API and console), key usage."""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING

import httpx
import pytest
import trio

import wire
from relay.app import create_app
from relay.core import Relay
from relay.keys import SQLITE_FILE, KeyStore, SqliteDatabase, Usage
from tests.relay.conftest import make_config
from tests.relay.fake_worker import FakeWorker, connect_worker

if TYPE_CHECKING:
    from pathlib import Path

ADMIN = "console-admin-token"
AUTH = {"authorization": f"Bearer {ADMIN}"}
PAGES = ["/console", "/console/setup", "/console/integrate"]
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)


async def login(relay, token: str = ADMIN) -> httpx.Response:  # type: ignore[no-untyped-def]
    with trio.fail_after(10):
        return await relay.client.post(
            "/console/login",
            data={"token": token, "next": "/console/setup"},
            headers={"origin": relay.url},
        )


async def logged_in(relay) -> tuple[httpx.AsyncClient, str]:  # type: ignore[no-untyped-def]
    """A client holding a session cookie, and the CSRF token its pages embed."""
    response = await login(relay)
    assert response.status_code == 303, response.text
    page = await relay.client.get("/console")
    match = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert match, page.text[:500]
    return relay.client, match[1]


async def test_console_off_without_admin_token_or_with_no_console(start_relay) -> None:
    plain = await start_relay()
    response = await plain.client.get("/console")
    assert response.status_code == 404
    assert "--admin-token" in response.text
    off = await start_relay(admin_token=ADMIN, console=False)
    for path in ("/console", "/console/login", "/console/events"):
        response = await off.client.get(path)
        assert response.status_code == 404
        assert "--no-console" in response.text


async def test_login_wrong_token_then_right_one_sets_a_strict_cookie(start_relay, caplog) -> None:
    relay = await start_relay(admin_token=ADMIN)
    caplog.set_level(logging.DEBUG)
    page = await relay.client.get("/console/setup")
    assert page.status_code == 303
    assert page.headers["location"] == "/console/login?next=/console/setup"

    wrong = await login(relay, "not-the-token")
    assert wrong.status_code == 401
    assert "That is not this relay" in wrong.text
    assert "admin token" in wrong.text
    assert "set-cookie" not in wrong.headers

    right = await login(relay)
    assert right.status_code == 303
    assert right.headers["location"] == "/console/setup"
    cookie = right.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    assert ADMIN not in cookie
    assert (await relay.client.get("/console/setup")).status_code == 200
    # The token never reaches a log line.
    assert all(ADMIN not in record.getMessage() for record in caplog.records)
    assert all(ADMIN not in json.dumps(record.__dict__, default=str) for record in caplog.records)


async def test_cookie_is_secure_when_the_request_came_over_tls(tmp_path: Path) -> None:
    relay = Relay.from_config(make_config(tmp_path, admin_token=ADMIN))
    app = create_app(relay)
    async with app.quart.test_app() as test_app:
        client = test_app.test_client()
        response = await client.post(
            "/console/login",
            form={"token": ADMIN},
            scheme="https",
            headers={"origin": "https://localhost"},
        )
        assert response.status_code == 303
        cookie = response.headers["set-cookie"]
        assert "Secure" in cookie
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie


async def test_login_attempts_are_rate_limited(start_relay) -> None:
    relay = await start_relay(admin_token=ADMIN, auth_failure_limit=3)
    for _ in range(3):
        assert (await login(relay, "wrong")).status_code == 401
    limited = await login(relay, "wrong")
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert "Too many failed attempts" in limited.text
    assert (await login(relay)).status_code == 303  # the right token still works


async def test_login_from_another_site_is_refused(start_relay) -> None:
    relay = await start_relay(admin_token=ADMIN)
    response = await relay.client.post(
        "/console/login", data={"token": ADMIN}, headers={"origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


async def test_pages_carry_a_strict_csp_and_no_inline_script(start_relay) -> None:
    relay = await start_relay(admin_token=ADMIN)
    client, _ = await logged_in(relay)
    for path in [*PAGES, "/console/login"]:
        response = await client.get(path, follow_redirects=True)
        assert response.status_code == 200, path
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "default-src 'none'" in csp
        assert "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["cache-control"] == "no-store"
        assert not INLINE_SCRIPT.search(response.text), path
        assert " style=" not in response.text, path  # style-src 'self' would block it
    # every script and stylesheet is served from the package
    for asset in ("console.js", "dashboard.js", "setup.js", "integrate.js", "console.css"):
        response = await client.get(f"/console/static/{asset}")
        assert response.status_code == 200, asset


async def test_every_action_needs_the_csrf_token(start_relay) -> None:
    relay = await start_relay(admin_token=ADMIN)
    client, csrf = await logged_in(relay)
    actions = [
        ("POST", "/console/api/keys", {"name": "x"}),
        ("DELETE", "/console/api/keys/key_0000000000000000", None),
        ("POST", "/console/api/workers/worker-1/drain", None),
        ("POST", "/console/api/workers/gpu/cordon", None),
        ("DELETE", "/console/api/workers/gpu/cordon", None),
    ]
    for method, path, body in actions:
        for headers in ({}, {"x-csrf-token": "forged"}, {"x-csrf-token": csrf[:-2]}):
            response = await client.request(method, path, json=body, headers=headers)
            assert response.status_code == 403, (method, path, headers)
        cross = await client.request(
            method, path, json=body,
            headers={"x-csrf-token": csrf, "origin": "https://evil.example"},
        )  # fmt: skip
        assert cross.status_code == 403
    assert relay.server.relay.keys is not None
    assert len(relay.server.relay.keys) == 0
    assert relay.hub.cordons == frozenset()
    created = await client.post(
        "/console/api/keys", json={"name": "ok"}, headers={"x-csrf-token": csrf}
    )
    assert created.status_code == 201
    assert created.json()["key"].startswith("mr-")
    # no session at all: 401
    anonymous = httpx.AsyncClient(base_url=relay.url)
    async with anonymous:
        response = await anonymous.post("/console/api/keys", json={"name": "x"})
        assert response.status_code == 401


async def test_logout_ends_the_session(start_relay) -> None:
    relay = await start_relay(admin_token=ADMIN)
    client, csrf = await logged_in(relay)
    cookie = client.cookies.get("modelrelay_console")
    response = await client.post(
        "/console/logout", data={"csrf": csrf}, headers={"origin": relay.url}
    )
    assert response.status_code == 303
    async with httpx.AsyncClient(base_url=relay.url) as stale:
        stale.cookies.set("modelrelay_console", cookie or "", path="/console")
        assert (await stale.get("/console")).status_code == 303
        assert (await stale.get("/console/api/state")).status_code == 401


async def test_the_stream_shows_a_worker_arrive_and_leave(start_relay) -> None:
    relay = await start_relay(admin_token=ADMIN)
    client, _ = await logged_in(relay)
    with trio.fail_after(15):
        async with client.stream("GET", "/console/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.aiter_lines()
            names: list[list[str]] = []
            name = None
            async with connect_worker(relay.ws_url, name="gpu-a") as worker:
                assert worker.ack is not None
                async for line in lines:
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: ") and name == "state":
                        doc = json.loads(line[6:])
                        names.append([w["name"] for w in doc["workers"]])
                        if names[-1] == ["gpu-a"]:
                            break
            async for line in lines:
                if line.startswith("event: "):
                    name = line[7:]
                elif (
                    line.startswith("data: ")
                    and name == "state"
                    and json.loads(line[6:])["workers"] == []
                ):
                    break


async def serve_one(worker: FakeWorker) -> None:
    request = await worker.recv_request()
    await worker.reply(
        request, json.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5}})
    )


async def test_cordon_by_name_skips_the_worker_lasts_across_reconnects_and_restarts(
    start_relay, tmp_path: Path
) -> None:
    relay = await start_relay(admin_token=ADMIN)
    chat = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
    async with (
        connect_worker(relay.ws_url, name="a") as a,
        connect_worker(relay.ws_url, name="b") as b,
    ):
        response = await relay.client.post("/admin/workers/a/cordon", headers=AUTH)
        assert response.status_code == 200
        assert response.json() == {"name": "a", "cordoned": True, "connected": 1}
        workers = (await relay.client.get("/admin/workers", headers=AUTH)).json()["workers"]
        assert {w["name"]: w["cordoned"] for w in workers} == {"a": True, "b": False}
        for _ in range(3):  # every request goes to b, never to a
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve_one, b)
                with trio.fail_after(10):
                    assert (
                        await relay.client.post("/v1/chat/completions", json=chat)
                    ).status_code == 200
    # a reconnects under the same name: still cordoned; alone, requests wait in the queue
    async with connect_worker(relay.ws_url, name="a") as a:
        with trio.move_on_after(0.3) as waited:  # bounded: proves nothing reaches a meanwhile
            await relay.client.post("/v1/chat/completions", json=chat)
        assert waited.cancelled_caught
        lifted = await relay.client.delete("/admin/workers/a/cordon", headers=AUTH)
        assert lifted.status_code == 200
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_one, a)
            with trio.fail_after(10):
                assert (
                    await relay.client.post("/v1/chat/completions", json=chat)
                ).status_code == 200
    again = await relay.client.delete("/admin/workers/a/cordon", headers=AUTH)
    assert again.status_code == 404
    # persisted in the key store's database: a restarted relay still skips it
    assert (await relay.client.post("/admin/workers/gone/cordon", headers=AUTH)).status_code == 200
    restarted = await start_relay(admin_token=ADMIN)
    assert (await restarted.client.get("/admin/cordons", headers=AUTH)).json() == {
        "cordons": ["gone"]
    }
    assert restarted.hub.cordons == frozenset({"gone"})


async def test_console_cordon_and_drain_buttons(start_relay) -> None:
    relay = await start_relay(admin_token=ADMIN)
    client, csrf = await logged_in(relay)
    headers = {"x-csrf-token": csrf, "origin": relay.url}
    async with connect_worker(relay.ws_url, name="gpu-a") as worker:
        assert worker.ack is not None
        response = await client.post("/console/api/workers/gpu-a/cordon", headers=headers)
        assert response.status_code == 200
        state = (await client.get("/console/api/state")).json()
        assert state["workers"][0]["cordoned"] is True
        assert state["cordons"] == ["gpu-a"]
        assert (
            await client.delete("/console/api/workers/gpu-a/cordon", headers=headers)
        ).status_code == 200
        response = await client.post(
            f"/console/api/workers/{worker.ack.worker_id}/drain", headers=headers
        )
        assert response.status_code == 202
        with trio.fail_after(5):
            assert isinstance(await worker.recv(), wire.GracefulShutdown)
        missing = await client.post("/console/api/workers/worker-99/drain", headers=headers)
        assert missing.status_code == 404


async def test_key_usage_is_persisted_and_summed(tmp_path: Path, nursery) -> None:
    counts = {"key_0123456789abcdef": Usage(2, 30, 40)}
    store = KeyStore(SqliteDatabase(tmp_path / SQLITE_FILE), usage_source=lambda: dict(counts))
    with trio.fail_after(10):
        await nursery.start(store.run)
        await store.sync()
        assert store.usage("key_0123456789abcdef") == Usage(2, 30, 40)
        counts["key_0123456789abcdef"] = Usage(3, 31, 45)  # one more request, not yet written
        assert store.usage("key_0123456789abcdef") == Usage(3, 31, 45)
        await store.sync()
        # a restarted relay starts counting from zero; the database keeps the sum
        fresh: dict[str, Usage] = {"key_0123456789abcdef": Usage(1, 1, 1)}
        second = KeyStore(SqliteDatabase(tmp_path / SQLITE_FILE), usage_source=lambda: fresh)
        await nursery.start(second.run)
        assert second.usage("key_0123456789abcdef") == Usage(4, 32, 46)
        assert second.usage_all() == {"key_0123456789abcdef": Usage(4, 32, 46)}
        await second.sync()
        third = KeyStore(SqliteDatabase(tmp_path / SQLITE_FILE))
        await nursery.start(third.run)
        assert third.usage("key_0123456789abcdef") == Usage(4, 32, 46)


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example", "/console\\x"])
async def test_login_never_redirects_off_the_console(start_relay, target: str) -> None:
    relay = await start_relay(admin_token=ADMIN)
    response = await relay.client.post(
        "/console/login", data={"token": ADMIN, "next": target}, headers={"origin": relay.url}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/console"
