"""The console end to end in a real browser (Debian's chromium via Playwright),
against real relay and agent processes and the fake backend.

Each test runs one browser script in a worker thread (see browser.py); the
script starts and kills agents through the test's trio nursery. The relay's
JSON log says which worker served a request (`request finished` carries the
worker id, `worker registered` its name), so routing is checked from the
relay's own account, not guessed.
"""

from __future__ import annotations

import itertools
import json
import shlex
import signal
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import pytest
import trio

from tests.fake_backend import FakeBackend
from tests.integration.procs import Proc, agent_process, relay_process, spawn
from tests.relay.console.browser import AXE, BrowserRun, require_browser, run_in_browser

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

ADMIN = "browser-admin-token"
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
_ids = itertools.count()


@attrs.define(eq=False)
class Agent:
    proc: Proc
    scope: trio.CancelScope

    def kill(self) -> None:
        self.proc.signal(signal.SIGKILL)


@attrs.define(eq=False)
class Fleet:
    """The trio side of a browser test: the relay, agents on demand, an HTTP client."""

    nursery: trio.Nursery
    relay: Proc
    url: str
    backend_url: str
    client: httpx.AsyncClient

    async def start_agent(self, name: str) -> Agent:
        async def run(task_status: trio.TaskStatus[Agent]) -> None:
            with trio.CancelScope() as scope:
                async with agent_process(
                    self.relay, self.backend_url, "--worker-name", name, "--max-concurrency", "2"
                ) as proc:
                    task_status.started(Agent(proc, scope))
                    await trio.sleep_forever()

        agent: Agent = await self.nursery.start(run)
        return agent

    async def start_command(self, args: list[str]) -> Agent:
        """An agent from a command line the page showed (`agent run ...`)."""

        async def run(task_status: trio.TaskStatus[Agent]) -> None:
            with trio.CancelScope() as scope:
                async with spawn("agent", args, env={"LOG_FORMAT": "json"}) as proc:
                    task_status.started(Agent(proc, scope))
                    await trio.sleep_forever()

        agent: Agent = await self.nursery.start(run)
        return agent

    async def served_by(self, key: str | None = None) -> tuple[str, str]:
        """Send one chat completion; the (worker name, worker id) that served it."""
        request_id = f"browser-{next(_ids)}"
        headers = {"x-request-id": request_id}
        if key:
            headers["authorization"] = f"Bearer {key}"
        with trio.fail_after(20):
            response = await self.client.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert response.status_code == 200, response.text
        line = await self.relay.wait_for(
            lambda line: (
                line.get("event") == "request finished"
                and line.get("client_request_id") == request_id
            )
        )
        worker_id = line["worker_id"]
        names = {
            r["worker_id"]: r.get("worker_name")
            for r in self.relay.lines
            if r.get("event") == "worker registered"
        }
        return names[worker_id], worker_id

    async def status(self, key: str) -> int:
        with trio.fail_after(20):
            response = await self.client.post(
                "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"}
            )
        return response.status_code


@pytest.fixture
async def backend(nursery: trio.Nursery) -> FakeBackend:
    fake = FakeBackend(models=["fake-model"])
    await nursery.start(fake.run)
    return fake


async def open_fleet(nursery, backend, tmp_path: Path, *extra: str) -> AsyncIterator[Fleet]:  # type: ignore[no-untyped-def]
    async with (
        relay_process("--admin-token", ADMIN, "--data-dir", str(tmp_path / "data"), *extra) as (
            relay,
            url,
        ),
        httpx.AsyncClient(base_url=url, timeout=20) as client,
    ):
        relay.wait_limit = 30.0
        yield Fleet(nursery, relay, url, backend.url, client)


@pytest.fixture
async def fleet(nursery, backend, tmp_path: Path) -> AsyncIterator[Fleet]:  # type: ignore[no-untyped-def]
    require_browser()
    async for f in open_fleet(nursery, backend, tmp_path):
        yield f


@pytest.fixture
async def keyed_fleet(nursery, backend, tmp_path: Path) -> AsyncIterator[Fleet]:  # type: ignore[no-untyped-def]
    require_browser()
    async for f in open_fleet(nursery, backend, tmp_path, "--require-api-keys"):
        yield f


def expect_():  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    expect.set_options(timeout=20_000)
    return expect


def row(page: Page, name: str):  # type: ignore[no-untyped-def]
    return page.locator(f'#workers tr[data-worker="{name}"]')


def tab_to(page: Page, selector: str, limit: int = 60) -> None:
    """Move the keyboard focus with Tab until `selector` has it (keyboard navigation)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement?.matches(s) ?? false", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


# ---------------------------------------------------------------- tests


async def test_login_live_workers_cordon_drain_and_kill(fleet: Fleet) -> None:
    def script(b: BrowserRun) -> None:
        expect = expect_()
        page = b.page
        page.goto(fleet.url + "/console")
        assert "/console/login" in page.url
        page.fill("#token", "not-the-token")
        page.click("form.login button[type=submit]")
        expect(page.locator("#login-error")).to_contain_text("not this relay")
        # Chromium logs the 401 document itself as a failed resource: expected here.
        b.errors.clear()
        page.fill("#token", ADMIN)
        page.click("form.login button[type=submit]")
        page.wait_for_selector("#live.on")
        expect(page.locator("#no-workers")).to_be_visible()
        expect(page.locator("#no-workers a")).to_have_text("Add a machine")

        trio.from_thread.run(fleet.start_agent, "gpu-a")
        expect(row(page, "gpu-a")).to_be_visible()
        expect(page.locator("#no-workers")).to_be_hidden()
        agent_b = trio.from_thread.run(fleet.start_agent, "gpu-b")
        expect(row(page, "gpu-b")).to_be_visible()
        expect(page.locator("#t-workers")).to_have_text("2")

        # Cordon gpu-a from the keyboard: every request then goes to gpu-b.
        page.locator("h1").click()
        tab_to(page, '#workers tr[data-worker="gpu-a"] [data-action="cordon"]')
        page.keyboard.press("Enter")
        expect(row(page, "gpu-a").locator(".badge")).to_have_text("cordoned")
        for _ in range(4):
            assert trio.from_thread.run(fleet.served_by)[0] == "gpu-b"
        row(page, "gpu-a").locator('[data-action="uncordon"]').click()
        expect(row(page, "gpu-a").locator(".badge")).to_have_text("ready")
        served = {trio.from_thread.run(fleet.served_by)[0] for _ in range(6)}
        assert served == {"gpu-a", "gpu-b"}  # round-robin reaches gpu-a again

        # Drain gpu-a: that worker takes nothing more (its agent reconnects as a new one).
        drained_id = next(
            r["worker_id"]
            for r in reversed(fleet.relay.lines)
            if r.get("event") == "worker registered" and r.get("worker_name") == "gpu-a"
        )
        row(page, "gpu-a").locator('[data-action="drain"]').click()
        trio.from_thread.run(
            fleet.relay.wait_for,
            lambda line: (
                line.get("event") == "worker disconnected" and line.get("worker_id") == drained_id
            ),
        )
        for _ in range(3):
            assert trio.from_thread.run(fleet.served_by)[1] != drained_id

        # Kill gpu-b's agent: its row vanishes live.
        trio.from_thread.run_sync(agent_b.kill)
        expect(row(page, "gpu-b")).to_have_count(0)
        expect(row(page, "gpu-a")).to_be_visible()

    errors = await run_in_browser(fleet.url, script)
    assert errors == []


async def test_create_use_and_revoke_a_key(keyed_fleet: Fleet) -> None:
    fleet = keyed_fleet

    def script(b: BrowserRun) -> None:
        expect = expect_()
        page = b.page
        trio.from_thread.run(fleet.start_agent, "gpu-a")
        b.login(page, ADMIN)
        expect(page.locator("#no-keys")).to_be_visible()
        page.fill("#key-name", "ci client")
        page.click("#new-key button[type=submit]")
        expect(page.locator("#new-secret")).to_be_visible()
        secret = page.inner_text("#new-secret-value").strip()
        assert secret.startswith("mr-")
        key_row = page.locator("#keys tr", has_text="ci client")
        expect(key_row).to_be_visible()
        assert secret not in key_row.inner_text()  # the table shows the prefix only

        assert trio.from_thread.run(fleet.status, secret) == 200
        expect(key_row.locator("td").nth(3)).to_have_text("1")  # requests, live

        key_row.locator("button", has_text="Revoke").click()
        expect(page.locator("#confirm")).to_be_visible()
        expect(page.locator("#confirm-text")).to_contain_text("ci client")
        page.click("#confirm-ok")
        expect(key_row.locator(".badge")).to_have_text("revoked")
        assert trio.from_thread.run(fleet.status, secret) == 401

    errors = await run_in_browser(fleet.url, script)
    assert errors == []


async def test_the_wizard_connects_an_agent_started_from_its_command(fleet: Fleet) -> None:
    started: list[Agent] = []

    def script(b: BrowserRun) -> None:
        expect = expect_()
        page = b.page
        page.goto(fleet.url + "/console/setup")
        page.fill("#token", ADMIN)
        page.click("form.login button[type=submit]")
        page.wait_for_selector("#live.on")
        assert page.url.endswith("/console/setup")

        page.check('input[name="platform"][value="linux"]')
        page.click("#next")
        expect(page.locator("#h-backend")).to_be_visible()
        page.check('input[name="backend"][value="ollama"]')
        assert page.input_value("#backend-url") == "http://127.0.0.1:11434"
        page.check('input[name="backend"][value="llama"]')
        assert page.input_value("#backend-url") == "http://127.0.0.1:8080"
        page.fill("#backend-url", fleet.backend_url)
        page.click("#next")
        page.check('input[name="install"][value="pipx"]')
        expect(page.locator("#install-cmd")).to_contain_text("pipx install")
        page.click("#next")
        page.fill("#worker-name", "wizard-box")
        command = page.inner_text("#cfg-flags").strip()
        assert page.inner_text("#cfg-toml").count("worker_secret") == 1
        page.click("#next")
        expect(page.locator("#connect-status")).to_contain_text("Waiting for a worker named")

        # Run exactly what the page shows (`agent` is `python -m agent` here).
        words = shlex.split(command)
        assert words[:2] == ["agent", "run"]
        assert "--worker-secret" in words
        assert "--proxy-url" in words
        started.append(trio.from_thread.run(fleet.start_command, ["-m", "agent", *words[1:]]))
        expect(page.locator("#connect-status")).to_contain_text("Connected")
        expect(page.locator("#connect-models li")).to_have_text("fake-model")

        page.click("#next")
        page.click("#test-send")
        expect(page.locator("#test-status")).to_contain_text("It works")
        assert page.inner_text("#test-output").strip()
        page.click("#next")
        expect(page.locator("#persist-systemd")).to_contain_text("WORKER_NAME=wizard-box")
        page.click("#again")
        expect(page.locator("#h-install")).to_be_visible()
        assert page.input_value("#worker-name") == "wizard-box-2"

    errors = await run_in_browser(fleet.url, script)
    assert errors == []
    assert started


AXE_RUN = """async () => {
  const result = await axe.run(document, { resultTypes: ["violations"] });
  return result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" ")) }));
}"""


def serious(page: Page) -> list[dict[str, Any]]:
    page.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = page.evaluate(AXE_RUN)
    return [v for v in found if v["impact"] in ("serious", "critical")]


async def test_integrate_try_it_security_headers_and_accessibility(fleet: Fleet) -> None:
    def script(b: BrowserRun) -> None:
        expect = expect_()
        page = b.page
        trio.from_thread.run(fleet.start_agent, "gpu-a")
        # the login page, before any session
        page.goto(fleet.url + "/console/login")
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            assert serious(page) == [], ("login", scheme)
        b.login(page, ADMIN)

        cookie = next(c for c in b.context.cookies() if c["name"] == "modelrelay_console")
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert cookie["secure"] is False  # plain HTTP here
        assert ADMIN not in cookie["value"]

        response = page.goto(fleet.url + "/console/integrate")
        assert response is not None
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        page.wait_for_selector("#live.on")
        assert page.evaluate("() => Object.keys(localStorage)") == []  # no token, nothing

        page.click("#try-send")
        expect(page.locator("#try-status")).to_contain_text("Done")
        assert page.locator("#try-timings li").count() >= 3
        assert page.inner_text("#try-output").strip()
        expect(page.locator("#snippets pre").first).to_contain_text(fleet.url + "/v1")

        # CSRF: the session cookie alone does not make an action.
        refused = page.request.post(fleet.url + "/console/api/keys", data={"name": "x"})
        assert refused.status == 403
        csrf = page.get_attribute('meta[name="csrf-token"]', "content")
        assert csrf
        made = page.request.post(
            fleet.url + "/console/api/keys", data={"name": "x"}, headers={"x-csrf-token": csrf}
        )
        assert made.status == 201

        for path in ("/console", "/console/setup", "/console/integrate"):
            page.goto(fleet.url + path)
            page.wait_for_selector("#live.on")
            for scheme in ("light", "dark"):
                page.emulate_media(color_scheme=scheme)
                assert serious(page) == [], (path, scheme)
            # usable at 375 px: nothing wider than the screen
            page.set_viewport_size({"width": 375, "height": 800})
            assert page.evaluate("() => document.documentElement.scrollWidth") <= 375, path
            page.set_viewport_size({"width": 1280, "height": 800})
        # the theme button overrides the system's choice, and is remembered
        page.emulate_media(color_scheme="light")
        page.click("#theme")
        page.click("#theme")
        assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
        page.reload()
        assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
        assert serious(page) == [], "dashboard, dark by choice"
        assert json.loads(json.dumps(page.evaluate("() => Object.keys(localStorage)"))) == [
            "modelrelay-theme"
        ]

    errors = await run_in_browser(fleet.url, script)
    assert errors == []


@attrs.define(eq=False)
class Restartable:
    """A relay the browser script can restart on the same address and data directory."""

    nursery: trio.Nursery
    data: str
    url: str = ""
    proc: Proc | None = None
    _scope: trio.CancelScope | None = None

    async def start(self) -> None:
        listen = ["--listen", self.url.removeprefix("http://")] if self.url else []

        async def run(task_status: trio.TaskStatus[None]) -> None:
            with trio.CancelScope() as scope:
                async with relay_process(
                    "--admin-token", ADMIN, "--data-dir", self.data, *listen
                ) as (proc, url):
                    self.proc, self.url, self._scope = proc, url, scope
                    task_status.started()
                    await trio.sleep_forever()

        await self.nursery.start(run)

    async def stop(self) -> None:
        assert self._scope is not None
        assert self.proc is not None
        self._scope.cancel()  # relay_process's exit: SIGTERM, then wait for it
        with trio.fail_after(20):
            await self.proc.process.wait()


async def test_the_dashboard_reconnects_after_a_relay_restart(
    nursery: trio.Nursery, backend: FakeBackend, tmp_path: Path
) -> None:
    require_browser()
    relay = Restartable(nursery, str(tmp_path / "data"))
    await relay.start()

    async def start_agent() -> None:
        assert relay.proc is not None
        async with httpx.AsyncClient(base_url=relay.url) as client:
            fleet = Fleet(nursery, relay.proc, relay.url, backend.url, client)
            await fleet.start_agent("after-restart")

    def script(b: BrowserRun) -> None:
        expect = expect_()
        page = b.page
        b.login(page, ADMIN)
        expect(page.locator("#no-workers")).to_be_visible()
        trio.from_thread.run(relay.stop)
        expect(page.locator("#live")).to_have_text("reconnecting…")
        trio.from_thread.run(relay.start)  # same port, same data directory, same token
        # The same page, without a new login: the stream came back by itself.
        expect(page.locator("#live")).to_have_text("live")
        trio.from_thread.run(start_agent)
        expect(row(page, "after-restart")).to_be_visible()
        assert "/console/login" not in page.url
        # While the relay was down chromium logged the refused reconnects: expected.
        b.errors[:] = [e for e in b.errors if "ERR_CONNECTION_REFUSED" not in e]

    errors = await run_in_browser(relay.url, script)
    assert errors == []
