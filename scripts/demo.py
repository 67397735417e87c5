#!/usr/bin/env python3
"""`make run`: a real LLM behind a relay on this machine, in one command.

Starts three processes and supervises them:

1. the backend, ``scripts/llama_backend.py``: llama.cpp's server (xllamacpp)
   with SmolLM2-135M, on a free port; its chatty log goes to ``.run/backend.log``;
2. ``relay serve --listen 127.0.0.1:PORT`` (log on the terminal as ``[relay]``);
3. ``agent run`` pointed at both (log on the terminal as ``[agent]``);

waits until the relay's ``/v1/models`` lists the model, then prints the
commands to try. Ctrl-C (SIGINT), SIGTERM or SIGHUP stops the agent, the
relay and the backend in that order (SIGTERM, a bounded wait, then SIGKILL)
and exits 0. If a process dies by itself, the others are stopped and this
exits 1 with that process's last log lines.

The children run in process groups of their own, so that a Ctrl-C on the
terminal reaches only this supervisor and the shutdown keeps its order.
The relay and agent logs are also written to ``.run/relay.log`` and
``.run/agent.log``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import attrs
import httpx
import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

ROOT = Path(__file__).resolve().parent.parent
_STOP_SIGNALS = tuple(
    sig for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if sig
)
_TAIL = 20


class DemoError(Exception):
    """A failure to report in one clear message (and a log tail), then exit 1."""

    def __init__(self, message: str, child: Child | None = None) -> None:
        super().__init__(message)
        self.child = child


@attrs.define(eq=False)
class Child:
    """Owns one supervised process: its handle, its log file and its last lines."""

    name: str
    log_path: Path
    proc: trio.Process | None = None
    tail: collections.deque[str] = attrs.field(factory=lambda: collections.deque(maxlen=_TAIL))
    stopping: bool = False
    pumped: trio.Event | None = None  # set once its output is all copied (relay, agent)

    def last_lines(self) -> list[str]:
        """The last log lines: remembered ones, else the end of the log file."""
        if self.tail:
            return list(self.tail)
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return text.splitlines()[-_TAIL:]


@attrs.define(eq=False)
class Supervisor:
    """Owns the three children and the reason the demo is ending."""

    args: argparse.Namespace
    run_dir: Path
    relay_url: str
    stop: trio.Event = attrs.field(factory=trio.Event)
    exit_code: int = 0
    failed: Child | None = None
    children: dict[str, Child] = attrs.field(factory=dict)
    hurry: bool = False  # a second signal: no more grace periods
    waiting: trio.CancelScope | None = None  # the grace period running now

    def finish(self, code: int, failed: Child | None = None) -> None:
        """Ask for the end of the demo (the first reason given wins)."""
        if not self.stop.is_set():
            self.exit_code = code
            self.failed = failed
            self.stop.set()


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _bin(name: str) -> list[str]:
    """The console script from this interpreter's environment, else `python -m`."""
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", name]


def check_port_free(host: str, port: int) -> None:
    """Raises DemoError naming the fix when host:port cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DemoError(
                    f"port {port} on {host} is already in use. "
                    f"Stop what holds it, or pick another port: make run PORT={port + 10}"
                ) from None
            raise DemoError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


async def _spawn(child: Child, command: Sequence[str], **options: object) -> trio.Process:
    options.setdefault("cwd", ROOT)
    if os.name == "posix":
        # Own process group: the terminal's Ctrl-C reaches only the supervisor.
        options["process_group"] = 0
    child.proc = await trio.lowlevel.open_process(list(command), **options)  # type: ignore[call-overload]
    return child.proc


async def _pump(child: Child, stream: trio.abc.ReceiveStream, log: TextIO) -> None:
    """Copy a child's output to the terminal (prefixed), its log file and its tail."""
    buffer = b""
    async with stream:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                break
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").rstrip("\r")
                child.tail.append(line)
                log.write(line + "\n")
                print(f"[{child.name}] {line}", flush=True)
            log.flush()
    if buffer:
        line = buffer.decode(errors="replace")
        child.tail.append(line)
        log.write(line + "\n")
        print(f"[{child.name}] {line}", flush=True)


async def _watch(sup: Supervisor, child: Child) -> None:
    """Notice a child that exits while nobody asked it to."""
    assert child.proc is not None
    code = await child.proc.wait()
    if not child.stopping and not sup.stop.is_set():
        sup.finish(1, child)
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        say(f"the {child.name} exited unexpectedly ({how})")


async def start_backend(sup: Supervisor, nursery: trio.Nursery) -> str:
    """Start llama_backend.py; returns its URL once it answers /health."""
    child = sup.children["backend"]
    child.log_path.write_text("")
    command = [
        sys.executable,
        str(ROOT / "scripts" / "llama_backend.py"),
        "--port",
        "0",
        "--parallel",
        str(sup.args.parallel),
        "--ctx",
        # llama.cpp shares its context among the slots: each slot gets --ctx.
        str(sup.args.ctx * sup.args.parallel),
        "--alias",
        sup.args.model,
        "--log-file",
        str(child.log_path),
        "--startup-timeout",
        str(sup.args.ready_timeout),
        "--exit-on-stdin-eof",
    ]
    with child.log_path.open("ab") as log:
        proc = await _spawn(
            child, command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log
        )
    nursery.start_soon(_watch, sup, child)
    assert proc.stdout is not None
    data = b""
    while b"\n" not in data:
        chunk = await proc.stdout.receive_some(4096)
        if not chunk:
            await proc.wait()
            raise DemoError(
                f"the backend exited before it was ready (exit code {proc.returncode})", child
            )
        data += chunk
    first = data.split(b"\n", 1)[0].decode(errors="replace").strip()
    if not first.startswith("BACKEND_URL="):
        raise DemoError(f"the backend said {first!r} instead of BACKEND_URL=...", child)
    # The backend writes nothing more to stdout; its stdin stays open with us
    # (closing it would stop it: --exit-on-stdin-eof).
    await proc.stdout.aclose()
    return first.removeprefix("BACKEND_URL=")


async def start_daemon(
    sup: Supervisor, nursery: trio.Nursery, name: str, command: list[str], env: dict[str, str]
) -> None:
    """Start the relay or the agent with its output pumped to the terminal."""
    child = sup.children[name]
    log = child.log_path.open("w", encoding="utf-8")
    try:
        proc = await _spawn(
            child,
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
    except BaseException:
        log.close()
        raise
    assert proc.stdout is not None
    stdout = proc.stdout
    pumped = child.pumped = trio.Event()

    async def pump_then_close() -> None:
        try:
            await _pump(child, stdout, log)
        finally:
            log.close()
            pumped.set()

    nursery.start_soon(pump_then_close)
    nursery.start_soon(_watch, sup, child)


async def wait_http_ok(client: httpx.AsyncClient, url: str) -> None:
    """Poll `url` until it answers 200 (the caller bounds the wait)."""
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get(url)).status_code == 200:
                return
        await trio.sleep(0.1)


async def wait_model_listed(client: httpx.AsyncClient, relay_url: str, model: str) -> None:
    """Poll the relay's /v1/models until it lists `model` (the caller bounds the wait)."""
    while True:
        try:
            resp = await client.get(f"{relay_url}/v1/models")
            if resp.status_code == 200:
                ids = {item.get("id") for item in resp.json().get("data", [])}
                if model in ids:
                    return
        except (httpx.HTTPError, ValueError, AttributeError):
            pass  # not listening yet, or not the answer we wait for
        await trio.sleep(0.25)


def banner(relay_url: str, model: str, run_dir: Path) -> str:
    def body(stream: bool) -> str:
        return json.dumps(
            {
                "model": model,
                "stream": stream,
                "max_tokens": 64,
                "messages": [{"role": "user", "content": "Say hello"}],
            },
            separators=(",", ":"),
        )

    endpoint = f"{relay_url}/v1/chat/completions"
    json_type = "-H 'content-type: application/json'"
    rule = "─" * 78
    try:
        logs = run_dir.relative_to(Path.cwd())
    except ValueError:
        logs = run_dir
    lines = [
        "",
        rule,
        f"  ModelRelay is up: {relay_url}  (model {model!r}: SmolLM2-135M on llama.cpp)",
        "",
        "  Stream a chat completion:",
        "",
        f"    curl -N {endpoint} {json_type} -d '{body(True)}'",
        "",
        "  Without streaming:",
        "",
        f"    curl {endpoint} {json_type} -d '{body(False)}'",
        "",
        f'  OpenAI SDK:     OpenAI(base_url="{relay_url}/v1", api_key="unused")',
        f'  Anthropic SDK:  Anthropic(base_url="{relay_url}", api_key="unused")',
        f"  Claude Code:    ANTHROPIC_BASE_URL={relay_url} ANTHROPIC_AUTH_TOKEN=unused \\",
        f"                  CLAUDE_CODE_MAX_OUTPUT_TOKENS=200 claude -p 'say hi' --model {model}",
        f"  Health, models: {relay_url}/health   {relay_url}/v1/models",
        f"  Logs:           {logs}/backend.log (llama.cpp), {logs}/relay.log, {logs}/agent.log",
        "",
        "  Ctrl-C to stop.",
        rule,
        "",
    ]
    return "\n".join(lines)


async def stop_child(sup: Supervisor, child: Child) -> None:
    """SIGTERM, wait up to --stop-timeout (none once hurried), then SIGKILL its group."""
    child.stopping = True
    proc = child.proc
    if proc is None:
        return
    if proc.returncode is None:
        say(f"stopping the {child.name} (pid {proc.pid})")
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(0 if sup.hurry else sup.args.stop_timeout) as sup.waiting:
            await proc.wait()
        sup.waiting = None
        if proc.returncode is None:
            say(f"the {child.name} has not stopped: killing it")
            with contextlib.suppress(ProcessLookupError):
                if os.name == "posix":  # its group (pid = pgid until reaped): all it started
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
            await proc.wait()
    if proc.stdin is not None:
        await proc.stdin.aclose()


def _pids_file(run_dir: Path) -> Path:
    return run_dir / "demo.pids"


def stop_leftovers(run_dir: Path) -> None:
    """SIGTERM processes a previous, killed supervisor left running.

    Only a pid recorded in ``.run/demo.pids`` whose command line is still the
    one recorded is touched: a recycled pid is never someone else's process.
    (The backend follows a killed supervisor by itself, via stdin EOF; the
    relay and the agent cannot.)
    """
    path = _pids_file(run_dir)
    try:
        recorded = json.loads(path.read_text())
        entries = [(int(pid), str(cmdline)) for pid, cmdline in recorded.items()]
    except (OSError, ValueError, AttributeError):
        return

    def alive(pid: int, cmdline: str) -> bool:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace") == cmdline
        except OSError:
            return False  # gone (or no /proc here)

    left = [(pid, cmdline) for pid, cmdline in entries if alive(pid, cmdline)]
    for pid, _ in left:
        say(f"stopping pid {pid}, left over from a previous run that was killed")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [(pid, cmdline) for pid, cmdline in left if alive(pid, cmdline)]
    for pid, _ in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)


def _record_pids(sup: Supervisor) -> None:
    recorded = {}
    for child in sup.children.values():
        if child.proc is not None:
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{child.proc.pid}/cmdline").read_bytes()
                recorded[str(child.proc.pid)] = cmdline.decode(errors="replace")
    _pids_file(sup.run_dir).write_text(json.dumps(recorded) + "\n")


async def start_all(sup: Supervisor, nursery: trio.Nursery, env: dict[str, str]) -> None:
    """Backend, relay, agent, then wait for the model; print the banner once it is served."""
    args, run_dir, relay_url = sup.args, sup.run_dir, sup.relay_url
    try:
        check_port_free(args.host, args.port)
        with trio.fail_after(args.ready_timeout):
            say("starting the backend: llama.cpp with SmolLM2-135M …")
            backend_url = await start_backend(sup, nursery)
            _record_pids(sup)
            say(f"backend ready at {backend_url}")
            relay = [*_bin("relay"), "serve", "--listen", f"{args.host}:{args.port}"]
            relay += ["--data-dir", str(run_dir / "data"), "--drain-timeout", "5"]
            await start_daemon(sup, nursery, "relay", relay, env)
            _record_pids(sup)
            async with httpx.AsyncClient(timeout=2.0) as client:
                # The agent would connect anyway (it retries), one back-off later.
                await wait_http_ok(client, f"{relay_url}/health")
                agent = [*_bin("agent"), "run", "--proxy-url", relay_url]
                agent += ["--backend-url", backend_url, "--max-concurrency", str(args.parallel)]
                agent += ["--worker-name", "demo", "--drain-timeout", "5"]
                await start_daemon(sup, nursery, "agent", agent, env)
                _record_pids(sup)
                await wait_model_listed(client, relay_url, args.model)
    except trio.TooSlowError:
        say(
            f"error: not ready within {args.ready_timeout:g} s: "
            f"the relay's /v1/models does not list {args.model!r}"
        )
        sup.finish(1)
        return
    except DemoError as exc:
        say(f"error: {exc}")
        sup.finish(1, exc.child)
        return
    print(banner(relay_url, args.model, run_dir), flush=True)


async def on_signals(sup: Supervisor, signals: AsyncIterator[int]) -> None:
    """First signal: stop in order. Second: no more grace periods."""
    async for signum in signals:
        if not sup.stop.is_set():
            say(f"{signal.Signals(signum).name} received: stopping")
            sup.finish(0)
            continue
        say("second signal: killing what is left")
        sup.hurry = True
        if sup.waiting is not None:
            sup.waiting.cancel()


async def supervise(args: argparse.Namespace, run_dir: Path) -> int:
    """Run the demo until a signal or a child's death; returns the exit code."""
    sup = Supervisor(args=args, run_dir=run_dir, relay_url=f"http://{args.host}:{args.port}")
    for name in ("backend", "relay", "agent"):
        sup.children[name] = Child(name=name, log_path=run_dir / f"{name}.log")
    secret = os.environ.get("WORKER_SECRET") or secrets.token_urlsafe(24)
    # The secret travels in the environment, not argv: `ps` shows argv to everyone.
    env = {**os.environ, "WORKER_SECRET": secret, "PYTHONUNBUFFERED": "1"}

    with trio.open_signal_receiver(*_STOP_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(on_signals, sup, signals)
            async with trio.open_nursery() as startup:
                startup.start_soon(start_all, sup, nursery, env)
                await sup.stop.wait()
                startup.cancel_scope.cancel()  # a Ctrl-C during start-up
            for name in ("agent", "relay", "backend"):
                await stop_child(sup, sup.children[name])
            with trio.move_on_after(2):  # their last lines, still in the pipes
                for child in sup.children.values():
                    if child.pumped is not None:
                        await child.pumped.wait()
            nursery.cancel_scope.cancel()
    _pids_file(run_dir).unlink(missing_ok=True)

    if sup.exit_code:
        shown = [sup.failed] if sup.failed else list(sup.children.values())
        for child in shown:
            if child.proc is None:
                continue  # never started: its log file is an old run's
            say(f"last lines of the {child.name} log ({child.log_path}):")
            for line in child.last_lines():
                print(f"    {line}", flush=True)
    else:
        say("stopped")
    return sup.exit_code


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="demo.py",
        description="Run a real LLM (SmolLM2-135M on llama.cpp) behind a relay and an agent.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT") or 8080),
        help="the relay's port (env PORT, default 8080)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="the relay's address (default %(default)s)"
    )
    parser.add_argument(
        "--model", default="smollm2", help="model name to serve (default %(default)s)"
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=2,
        help="backend slots and agent --max-concurrency (default %(default)s)",
    )
    parser.add_argument(
        "--ctx",
        type=int,
        default=8192,
        help=(
            "context tokens per backend slot (default %(default)s, SmolLM2's most: Claude "
            "Code's first prompt alone is ~3,000 tokens)"
        ),
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=60.0,
        help="seconds until the model must be listed by the relay (default %(default)s)",
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=10.0,
        help="seconds each process gets after SIGTERM before SIGKILL (default %(default)s)",
    )
    parser.add_argument(
        "--run-dir", type=Path, default=ROOT / ".run", help="logs and relay data (default .run/)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error("--port must be 1..65535")
    if args.parallel < 1:
        parser.error("--parallel must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run_dir = args.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    stop_leftovers(run_dir)
    return trio.run(supervise, args, run_dir)


if __name__ == "__main__":
    sys.exit(main())
