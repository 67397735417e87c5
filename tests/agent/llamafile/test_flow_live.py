"""The whole flow for real: update-catalog → download → serve → test → status → logs → stop.

The "llamafile" is a small executable script served by a local HTTP server:
it takes llamafile's server flags and starts llama.cpp's server (xllamacpp,
SmolLM2-135M, via scripts/llama_backend.py). `serve --detach` runs it and the
agent in one process tree, against a real relay process; a real completion
goes through the relay.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import httpx
import pytest
import trio

from agent.llamafile.state import pid_alive
from scripts.llama_backend import find_model
from tests.agent.llamafile.conftest import LLAMA_BACKEND, catalog_toml, entry
from tests.e2e.conftest import live_missing, skip_or_fail
from tests.integration.procs import SECRET, relay_process

if TYPE_CHECKING:
    from pathlib import Path

    from tests.agent.llamafile.conftest import Cli
    from tests.agent.llamafile.fileserver import FileServer

pytestmark = pytest.mark.live

FLOW_TIMEOUT = 240.0


def fake_llamafile() -> bytes:
    """An executable that answers to a llamafile's server flags with llama.cpp's server."""
    return f"""#!{sys.executable}
# A stand-in llamafile: llamafile's server flags in, llama.cpp's server (xllamacpp) out.
import argparse, os, sys
parser = argparse.ArgumentParser()
parser.add_argument("--server", action="store_true")
parser.add_argument("--nobrowser", action="store_true")
parser.add_argument("--host")
parser.add_argument("--port")
parser.add_argument("-c")
parser.add_argument("-ngl")
parser.add_argument("--alias")
parser.add_argument("-np")
args, extra = parser.parse_known_args()
assert args.server and args.nobrowser, "not started as a llamafile server"
backend = {str(LLAMA_BACKEND)!r}
os.execv(sys.executable, [sys.executable, backend, "--host", args.host, "--port", args.port,
         "--ctx", args.c, "--alias", args.alias, "--parallel", args.np, "--threads", "1", *extra])
""".encode()


@pytest.fixture
def live() -> None:
    reason = live_missing()
    if reason is not None:
        skip_or_fail(reason)


async def test_download_serve_test_status_logs_stop(
    live: None, cli: Cli, files: FileServer, home: Path
) -> None:
    program = fake_llamafile()
    files.files["/smollm2.llamafile"] = program
    files.files["/catalog.toml"] = catalog_toml(
        [entry("smollm2", f"{files.url}/smollm2.llamafile", program, context=2048)]
    ).encode()
    with trio.fail_after(FLOW_TIMEOUT):
        assert (await cli.run("update-catalog", "--url", f"{files.url}/catalog.toml")).code == 0
        got = await cli.run("download", "smollm2", "--json")
        assert got.code == 0, got.stderr
        assert got.json()["verified"] is True
        async with relay_process() as (relay, relay_url):
            relay.wait_limit = FLOW_TIMEOUT
            try:
                await _flow(cli, home, relay, relay_url)
            finally:
                await cli.run("stop", "all")


async def _flow(cli: Cli, home: Path, relay: object, relay_url: str) -> None:
    served = await cli.run(
        "serve",
        "smollm2",
        "--detach",
        "--relay-url",
        relay_url,
        "--json",
        "--",
        "--startup-timeout",
        "90",
        env={"WORKER_SECRET": SECRET},
    )
    assert served.code == 0, served.stderr + served.stdout
    info = served.json()
    assert info["relay_connected"] is True, info
    serve_pid, backend_pid = info["pid"], info["backend_pid"]
    assert pid_alive(serve_pid)
    assert pid_alive(backend_pid)
    # The secret never lands on a command line or in the state file.
    assert SECRET.encode() not in await trio.Path(f"/proc/{serve_pid}/cmdline").read_bytes()
    assert SECRET not in (home / "run" / "smollm2.json").read_text()

    direct = await cli.run("test", "smollm2", "--max-tokens", "8", "--json")
    assert direct.code == 0, direct.stderr
    assert direct.json()["via"] == "direct"
    assert direct.json()["completion_tokens"] > 0

    relayed = await cli.run("test", "smollm2", "--via-relay", "--max-tokens", "8", "--json")
    assert relayed.code == 0, relayed.stderr
    assert relayed.json()["via"] == "relay"
    assert relayed.json()["url"] == relay_url
    # The relay itself says it routed a request for the model to our worker.
    finished = await relay.wait_for(  # type: ignore[attr-defined]
        lambda line: line.get("event") == "request finished" and line.get("model") == "smollm2"
    )
    assert finished.get("status", 200) == 200
    async with httpx.AsyncClient(timeout=60) as client:
        models = (await client.get(f"{relay_url}/v1/models")).json()
    assert [m["id"] for m in models["data"]] == ["smollm2"]

    # restart: same options and port, a new process tree, connected again.
    restarted = await cli.run("restart", "smollm2", "--json", env={"WORKER_SECRET": SECRET})
    assert restarted.code == 0, restarted.stderr + restarted.stdout
    again = restarted.json()
    assert again["url"] == info["url"]
    assert again["relay_connected"] is True
    assert not pid_alive(serve_pid)
    assert not pid_alive(backend_pid)
    serve_pid, backend_pid = again["pid"], again["backend_pid"]

    status = await cli.run("status", "--json")
    (row,) = status.json()["running"]
    assert (row["slug"], row["kind"], row["pid"], row["health"]) == (
        "smollm2",
        "serve",
        serve_pid,
        "ok",
    )
    assert row["port"] == int(info["url"].rsplit(":", 1)[1])
    assert row["relay_connected"] is True
    assert row["worker_id"]
    assert row["uptime_secs"] >= 0
    text = await cli.run("status")
    assert "smollm2" in text.stdout
    assert "connected" in text.stdout

    logs = await cli.run("logs", "smollm2", "--lines", "400", "--json")
    lines = "\n".join(logs.json()["lines"])
    assert "llama_backend: serving" in lines  # the model server's output
    assert "registered" in lines  # the agent's

    stopped = await cli.run("stop", "smollm2", "--json")
    assert stopped.code == 0, stopped.stderr
    assert stopped.json()["stopped"][0]["clean"] is True
    assert not pid_alive(serve_pid)
    assert not pid_alive(backend_pid)
    assert not (home / "run" / "smollm2.json").exists()
    after = (home / "logs" / "smollm2.log").read_text()
    assert "draining the agent, then stopping the model" in after
    assert "agent stopped" in after
    assert (await cli.run("status", "--json")).json()["running"] == []
    gone = await cli.run("test", "smollm2")
    assert gone.code == 1
    assert "smollm2 is not running" in gone.stderr


async def test_run_restart_stop(live: None, cli: Cli, files: FileServer, home: Path) -> None:
    """`run` (no agent) in the background, `restart` with the same options, `stop`."""
    program = fake_llamafile()
    files.files["/smollm2.llamafile"] = program
    files.files["/catalog.toml"] = catalog_toml(
        [entry("smollm2", f"{files.url}/smollm2.llamafile", program, context=2048)]
    ).encode()
    with trio.fail_after(FLOW_TIMEOUT):
        assert (await cli.run("update-catalog", "--url", f"{files.url}/catalog.toml")).code == 0
        try:
            # No separate download: run fetches what is missing.
            ran = await cli.run("run", "smollm2", "--json", "--", "--startup-timeout", "90")
            assert ran.code == 0, ran.stderr
            first = ran.json()
            twice = await cli.run("run", "smollm2")
            assert twice.code == 1
            assert "smollm2 is already running" in twice.stderr
            (row,) = (await cli.run("status", "--json")).json()["running"]
            assert (row["kind"], row["pid"], row["relay_url"]) == ("run", first["pid"], None)
            answer = await cli.run("test", "smollm2", "--max-tokens", "4", "--json")
            assert answer.code == 0, answer.stderr
            no_relay = await cli.run("test", "smollm2", "--via-relay")
            assert no_relay.code == 1
            assert "no relay to ask through" in no_relay.stderr

            again = await cli.run("restart", "smollm2", "--json")
            assert again.code == 0, again.stderr + again.stdout
            second = again.json()
            assert second["port"] == first["port"]
            assert second["pid"] != first["pid"]
            assert not pid_alive(first["pid"])
            assert (await cli.run("test", "smollm2", "--max-tokens", "4")).code == 0
            log = await trio.Path(home / "logs" / "smollm2.log").read_text()
            assert log.count("llama_backend: serving") == 2
            # The extra arguments after `--` reached the server again.
            cmdline = await trio.Path(f"/proc/{second['pid']}/cmdline").read_bytes()
            assert b"--startup-timeout\x0090" in cmdline
        finally:
            stopped = await cli.run("stop", "all", "--json")
        assert stopped.code == 0
        assert [s["model"] for s in stopped.json()["stopped"]] == ["smollm2"]
        assert (await cli.run("status", "--json")).json()["running"] == []


async def test_stop_drains_a_request_in_flight(
    live: None, cli: Cli, files: FileServer, home: Path
) -> None:
    """`stop` during a streamed completion: the stream still ends whole, then all stops."""
    program = fake_llamafile()
    files.files["/smollm2.llamafile"] = program
    files.files["/catalog.toml"] = catalog_toml(
        [entry("smollm2", f"{files.url}/smollm2.llamafile", program, context=2048)]
    ).encode()
    tokens = 160
    with trio.fail_after(FLOW_TIMEOUT):
        assert (await cli.run("update-catalog", "--url", f"{files.url}/catalog.toml")).code == 0
        async with relay_process() as (relay, relay_url):
            relay.wait_limit = FLOW_TIMEOUT
            try:
                served = await cli.run(
                    "serve", "smollm2", "--detach", "--json", "--relay-url", relay_url,
                    env={"WORKER_SECRET": SECRET},
                )  # fmt: skip
                assert served.code == 0, served.stderr + served.stdout
                serve_pid = served.json()["pid"]
                body = {
                    "model": "smollm2",
                    "stream": True,
                    "max_tokens": tokens,
                    "ignore_eos": True,
                    "temperature": 0,
                    "messages": [{"role": "user", "content": "Count to one hundred."}],
                }
                pieces, finish = 0, None
                stopped: list[object] = []
                async with (
                    httpx.AsyncClient(timeout=FLOW_TIMEOUT) as client,
                    client.stream("POST", f"{relay_url}/v1/chat/completions", json=body) as reply,
                    trio.open_nursery() as nursery,
                ):
                    assert reply.status_code == 200
                    async for line in reply.aiter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        choice = json.loads(line[6:])["choices"][0]
                        pieces += bool(choice.get("delta", {}).get("content"))
                        finish = choice.get("finish_reason") or finish
                        if pieces == 1:  # the request is in flight: stop the model now
                            nursery.start_soon(_stop, cli, stopped)
                assert finish == "length"
                assert pieces >= tokens - 2  # every token arrived (a few may share an event)
                (done,) = stopped
                assert done.code == 0, done.stderr  # type: ignore[attr-defined]
                assert done.json()["stopped"][0]["clean"] is True  # type: ignore[attr-defined]
                assert not pid_alive(serve_pid)
                log = await trio.Path(home / "logs" / "smollm2.log").read_text()
                # One process wrote both lines, in order: the drain began while the
                # request was still running, and the request then finished whole.
                began = log.index("SIGTERM received: draining the agent")
                finished = log.index("request finished model=smollm2")
                assert began < finished
                assert "status=200" in log[finished:].splitlines()[0]
                assert "drained: every in-flight request finished" in log[finished:]
            finally:
                await cli.run("stop", "all")


async def _stop(cli: Cli, out: list[object]) -> None:
    out.append(await cli.run("stop", "smollm2", "--json"))


def fake_llama_server(path: Path) -> Path:
    """A llama-server stand-in: llama-server's flags in (``-m FILE``), llama.cpp's server out."""
    path.write_text(f"""#!{sys.executable}
import argparse, os, sys
parser = argparse.ArgumentParser()
for flag in ("-m", "--host", "--port", "-c", "-ngl", "--alias", "-np"):
    parser.add_argument(flag)
args = parser.parse_args()
os.execv(sys.executable, [sys.executable, {str(LLAMA_BACKEND)!r}, "--model", args.m,
         "--host", args.host, "--port", args.port, "--ctx", args.c, "--alias", args.alias,
         "--parallel", args.np, "--threads", "1"])
""")
    path.chmod(0o755)
    return path


async def test_a_gguf_runs_under_a_binary(live: None, cli: Cli, tmp_path: Path) -> None:
    """`import` a plain GGUF with `--binary`: `run` starts it under that program."""
    gguf = find_model()
    server = fake_llama_server(tmp_path / "llama-server")
    with trio.fail_after(FLOW_TIMEOUT):
        imported = await cli.run(
            "import", str(gguf), "--slug", "smol-gguf", "--binary", str(server)
        )
        assert imported.code == 0, imported.stderr
        try:
            ran = await cli.run("run", "smol-gguf", "--json")
            assert ran.code == 0, ran.stderr
            cmdline = await trio.Path(f"/proc/{ran.json()['pid']}/cmdline").read_bytes()
            assert b"--model" in cmdline  # llama_backend.py, exec'd by our stand-in
            answer = await cli.run("test", "smol-gguf", "--max-tokens", "4", "--json")
            assert answer.code == 0, answer.stderr
            assert answer.json()["completion_tokens"] > 0
        finally:
            await cli.run("stop", "all")
