"""The two daemons' logs: same field names, RFC 3339 UTC timestamps, RUST_LOG, a calm start."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import TYPE_CHECKING

import httpx
import trio

from tests.integration.procs import SECRET, Proc, agent_process, relay_process, spawn

if TYPE_CHECKING:
    from tests.fake_backend import FakeBackend

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SHARED = ("request_id", "model", "path", "stream", "status", "duration_ms", "cancelled")


async def test_request_lines_share_field_names(backend: FakeBackend) -> None:
    async with (
        relay_process() as (relay, url),
        agent_process(relay, backend.url) as agent,
        httpx.AsyncClient(base_url=url, timeout=20) as client,
    ):
        answer = await client.post(
            "/v1/chat/completions",
            json={"model": "fake-model", "messages": [], "stream": True},
            headers={"x-request-id": "parity-1"},
        )
        assert answer.status_code == 200
        ours = await relay.wait_for(lambda line: line.get("event") == "request finished")
        theirs = await agent.wait_for(lambda line: line.get("event") == "request finished")
    for name in SHARED:
        assert name in ours, name
        assert name in theirs, name
        assert type(ours[name]) is type(theirs[name]), name
    assert ours["path"] == theirs["path"] == "/v1/chat/completions"
    assert ours["stream"] is theirs["stream"] is True
    assert ours["request_id"] == theirs["request_id"]
    for proc in (relay, agent):
        for line in proc.lines:
            assert RFC3339_UTC.match(line["timestamp"]), (proc.name, line["timestamp"])
    # Model lists are lists on both sides.
    registered = [line for line in relay.lines if line.get("event") == "worker registered"]
    assert isinstance(registered[0]["models"], list)
    acked = [line for line in agent.lines if line.get("event") == "registered"]
    assert isinstance(acked[0]["models"], list)
    # Registering before discovery is normal: no warning about it.
    loud = [
        line
        for line in agent.lines
        if line["level"] == "warning" and "routable" in str(line.get("event"))
    ]
    assert loud == []


async def test_text_lines_start_with_the_same_timestamp(backend: FakeBackend) -> None:
    relay_args = ["-m", "relay", "serve", "--listen", "127.0.0.1:0", "--worker-secret", SECRET]
    async with spawn("relay", [*relay_args, "--log-format", "text"]) as relay:
        with_url = await _first_raw(relay, "relay listening")
        url = re.search(r"url=(http://\S+)", with_url)
        assert url
        agent_args = ["-m", "agent", "run", "--proxy-url", url[1], "--backend-url", backend.url]
        async with spawn(
            "agent", [*agent_args, "--worker-secret", SECRET, "--log-format", "text"]
        ) as agent:
            await _first_raw(agent, "registered")
    for proc in (relay, agent):
        for raw in proc.raw:
            if raw and not raw.startswith((" ", "Traceback")):
                assert RFC3339_UTC.match(raw.split(" ", 1)[0]), (proc.name, raw)


async def _first_raw(proc: Proc, text: str) -> str:
    """The first raw (text-format) line holding `text`, waiting for it."""
    with trio.fail_after(20):
        while True:
            for raw in proc.raw:
                if text in raw:
                    return raw
            await proc._changed.wait()  # Proc's own "new output" event


async def test_rust_log_specs_on_both(backend: FakeBackend) -> None:
    # Upstream guides' crate names mean our daemons; the default for the rest is warn.
    env = {"RUST_LOG": "warn,modelrelay_server=info"}
    relay_args = ["-m", "relay", "serve", "--listen", "127.0.0.1:0", "--worker-secret", SECRET]
    async with spawn("relay", [*relay_args, "--log-format", "json"], env=env) as relay:
        listening = await relay.wait_for(lambda line: line.get("event") == "relay listening")
        agent_env = {"RUST_LOG": "warn,agent::session=info"}
        agent_args = [
            "-m",
            "agent",
            "run",
            "--proxy-url",
            listening["url"],
            "--backend-url",
            backend.url,
            "--worker-secret",
            SECRET,
            "--log-format",
            "json",
        ]
        async with spawn("agent", agent_args, env=agent_env) as agent:
            await agent.wait_for(lambda line: line.get("event") == "registered")


def test_rust_log_is_read_and_checked_by_both() -> None:
    for argv in (
        ["relay", "serve", "--worker-secret", "s"],
        ["agent", "run", "--worker-secret", "s"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", *argv],
            env={"RUST_LOG": "chatty", "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, (argv, done.stderr)
        assert "--log-level" in done.stderr
        assert "chatty" in done.stderr
