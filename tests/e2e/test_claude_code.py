"""Claude Code itself, through a real relay and agent, in front of llama.cpp.

The flagship client: ``claude -p`` (2.1.197, installed from npm) with
``ANTHROPIC_BASE_URL`` at the relay, once through llama.cpp's own
``/v1/messages`` and once translated to its ``/v1/chat/completions``; and a
run killed while tokens flow, after which llama.cpp's slot must be free
within a second. The test's own backend (tests/e2e/recording_proxy.py)
records what Claude Code sent and keeps SmolLM2's answer to one short line.

Each request is ~76 KB (24 tools, three system blocks, a mid-conversation
system message) and ~3,000 prompt tokens: llama.cpp gets one slot of 8,192
tokens. A cold prefill takes 45 s on this 2-core box, so the runs share one
working directory (Claude Code's system prompt names it) and the two that
speak /v1/messages run back to back: the second finds its prompt's prefix in
llama.cpp's slot cache. The budget per test is still generous.

Skips loudly (fails under CI=true) when the live backend, node/npm, or the
package cannot be had.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import trio

from tests.e2e.conftest import (
    LLAMA_MODEL,
    LlamaServer,
    LlamaServers,
    skip_or_fail,
    wait_slots_idle,
)
from tests.e2e.recording_proxy import RecordingProxy
from tests.integration.procs import agent_process, relay_process

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.integration.procs import Proc

pytestmark = pytest.mark.live

CLAUDE_CODE_VERSION = "2.1.197"
PACKAGE = f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}"
BUDGET = 600.0  # seconds per test: a cold 3,000-token prefill on a loaded box is slow
PROMPT = "Reply with one word: hello"


def _install_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "modelrelay" / f"claude-code-{CLAUDE_CODE_VERSION}"


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    """The pinned Claude Code CLI: $CLAUDE_CODE_BIN, or installed once with npm into a cache."""
    given = os.environ.get("CLAUDE_CODE_BIN")
    if given:
        return Path(given)
    prefix = _install_dir()
    binary = prefix / "bin" / "claude"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        skip_or_fail("node and npm are not installed (make deps-system)")
    result = subprocess.run(
        [npm or "npm", "install", "-g", "--prefix", str(prefix), PACKAGE],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0 or not binary.exists():
        skip_or_fail(f"npm could not install {PACKAGE}: {result.stderr[-500:]}")
    return binary


@pytest.fixture(scope="module")
def claude_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One HOME and working directory for every run, so their prompts share a prefix."""
    return tmp_path_factory.mktemp("claude-home")


@pytest.fixture(scope="module")
def big_llama(llama_servers: LlamaServers) -> LlamaServer:
    """llama.cpp with one slot of 8,192 tokens: Claude Code's prompt is ~3,000."""
    return llama_servers.start("--parallel", "1", "--ctx", "8192", "--threads", "1")


def _env(relay_url: str, home: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ANTHROPIC_", "CLAUDE_"))
    }
    env.update(
        {
            "ANTHROPIC_BASE_URL": relay_url,
            "ANTHROPIC_AUTH_TOKEN": "unused",
            "ANTHROPIC_MODEL": LLAMA_MODEL,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": LLAMA_MODEL,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_ATTRIBUTION_HEADER": "0",
            "HOME": str(home),
        }
    )
    return env


@asynccontextmanager
async def _stack(
    nursery: trio.Nursery, llama: LlamaServer, dialect: str, *, shorten: bool = True
) -> AsyncIterator[tuple[RecordingProxy, Proc, str]]:
    """The recording proxy, a relay and an agent in front of `llama`."""
    proxy = RecordingProxy(llama.url, shorten=shorten)
    await nursery.start(proxy.run)
    async with (
        relay_process() as (relay, url),
        agent_process(relay, proxy.url, "--backend-dialect", dialect, "--max-concurrency", "1"),
    ):
        relay.wait_limit = BUDGET
        yield proxy, relay, url


async def _run_claude(claude: Path, url: str, home: Path) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [str(claude), "-p", PROMPT, "--model", LLAMA_MODEL],
        env=_env(url, home),
        cwd=home,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_a_killed_claude_code_frees_llamas_slot_within_a_second(
    claude_bin: Path, big_llama: LlamaServer, nursery: trio.Nursery, claude_home: Path
) -> None:
    with trio.fail_after(BUDGET):
        # Not shortened: the answer must still be flowing when the client dies.
        async with _stack(nursery, big_llama, "anthropic", shorten=False) as (proxy, relay, url):
            process = await trio.lowlevel.open_process(
                [str(claude_bin), "-p", "Count from 1 to 500.", "--model", LLAMA_MODEL],
                env=_env(url, claude_home),
                cwd=claude_home,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                await proxy.first_token.wait()
                process.send_signal(signal.SIGKILL)
                await process.wait()
                async with httpx.AsyncClient(timeout=5) as client:
                    with trio.fail_after(1.0):  # the bound, from the kill
                        await wait_slots_idle(client, big_llama.url)
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            line = await relay.wait_for(lambda line: line.get("event") == "request finished")
            assert line["cancel_reason"] == "client_disconnect"


@pytest.mark.parametrize(
    ("dialect", "backend_path"),
    [("anthropic", "/v1/messages?beta=true"), ("openai", "/v1/chat/completions")],
    ids=["llamas-own-messages", "translated"],
)
async def test_claude_code_answers_through_the_relay(
    dialect: str,
    backend_path: str,
    claude_bin: Path,
    big_llama: LlamaServer,
    nursery: trio.Nursery,
    claude_home: Path,
) -> None:
    with trio.fail_after(BUDGET):
        async with _stack(nursery, big_llama, dialect) as (proxy, relay, url):
            result = await _run_claude(claude_bin, url, claude_home)
            # What the relay saw, should Claude Code have failed or retried.
            seen = [
                {key: line.get(key) for key in ("status", "duration_ms", "completion_tokens")}
                for line in relay.events("request finished")
            ]
            output = (result.stdout[-2000:], result.stderr[-2000:])
            assert result.returncode == 0, (output, seen)
            assert result.stdout.strip(), ("Claude Code printed no answer", seen)
            assert [path for path, _ in proxy.bodies] == [backend_path], seen
