"""Real `relay` and `agent` processes for end-to-end tests.

Each runs as `python -m relay serve` / `python -m agent run` with JSON logs on
stderr; a task reads them into `lines` so a test can wait for an event (the
relay's ephemeral port, an agent's registration) instead of sleeping.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

SECRET = "e2e-secret"
HTTP_FRONTS = ("builtin", "hypercorn")
HTTP_FRONT = "builtin"
"""The `--http-front` of every `relay_process` (the integration conftest sets it per test)."""
Line = dict[str, Any]


@attrs.define(eq=False)
class Proc:
    """A child process and the JSON log lines it has written so far."""

    name: str
    process: trio.Process
    # How long a wait on this process may take before the test fails: a
    # hung child must fail the test, not hang the suite.
    wait_limit: float = 20.0
    lines: list[Line] = attrs.field(factory=list)
    raw: list[str] = attrs.field(factory=list)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    async def pump(self, stream: trio.abc.ReceiveStream) -> None:
        buffer = b""
        async for data in stream:
            buffer += data
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                text = raw.decode("utf-8", "replace")
                self.raw.append(text)
                try:
                    doc = json.loads(text)
                except ValueError:
                    continue
                if isinstance(doc, dict):
                    self.lines.append(doc)
            self._changed.set()
            self._changed = trio.Event()
        self._changed.set()

    async def wait_for(self, predicate: Callable[[Line], bool]) -> Line:
        """The first log line `predicate` accepts, waiting for it if need be."""
        seen = 0
        with trio.fail_after(self.wait_limit):
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                if self.process.returncode is not None:
                    raise AssertionError(
                        f"{self.name} exited {self.process.returncode}:\n"
                        + "\n".join(self.raw[-30:])
                    )
                await self._changed.wait()

    async def wait_for_raw(self, predicate: Callable[[str], bool]) -> str:
        """The first raw stderr line `predicate` accepts (text logs), waiting if need be."""
        seen = 0
        with trio.fail_after(self.wait_limit):
            while True:
                for text in self.raw[seen:]:
                    if predicate(text):
                        return text
                seen = len(self.raw)
                if self.process.returncode is not None:
                    raise AssertionError(
                        f"{self.name} exited {self.process.returncode}:\n"
                        + "\n".join(self.raw[-30:])
                    )
                await self._changed.wait()

    def events(self, name: str) -> list[Line]:
        return [line for line in self.lines if line.get("event") == name]

    def signal(self, signum: int) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signum)

    async def wait_count(self, events: tuple[str, ...], count: int) -> None:
        """Wait until the process has logged `count` lines of these events."""
        with trio.fail_after(self.wait_limit):
            while sum(line.get("event") in events for line in self.lines) < count:
                await self._changed.wait()

    async def wait_exit(self) -> int:
        with trio.fail_after(self.wait_limit):
            return await self.process.wait()


@asynccontextmanager
async def spawn(
    name: str, args: list[str], env: dict[str, str] | None = None
) -> AsyncIterator[Proc]:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    for key in ("WORKER_SECRET", "PROXY_URL", "BACKEND_URL", "MODELS", "LOG_LEVEL", "LOG_FORMAT"):
        if env is None or key not in env:
            full_env.pop(key, None)
    process = await trio.lowlevel.open_process(
        [sys.executable, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=full_env,
    )
    proc = Proc(name, process)
    try:
        async with trio.open_nursery() as nursery:
            assert process.stderr is not None
            nursery.start_soon(proc.pump, process.stderr)
            try:
                yield proc
            finally:
                with trio.CancelScope(shield=True):
                    await _stop(process)
    finally:
        if process.returncode is None:
            process.kill()


async def _stop(process: trio.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.send_signal(signal.SIGINT)  # the second signal: exit at once
            with trio.move_on_after(2):
                await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


@asynccontextmanager
async def relay_process(*extra: str) -> AsyncIterator[tuple[Proc, str]]:
    """A relay on an ephemeral port, on `HTTP_FRONT`; yields the process and its base URL."""
    front = [] if "--http-front" in extra else ["--http-front", HTTP_FRONT]
    args = [
        "-m",
        "relay",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--worker-secret",
        SECRET,
        "--log-format",
        "json",
        *front,
        *extra,
    ]
    async with spawn("relay", args) as proc:
        line = await proc.wait_for(lambda line: line.get("event") == "relay listening")
        yield proc, line["url"]


@asynccontextmanager
async def agent_process(
    relay: Proc, backend_url: str, *extra: str, secret: str = SECRET, wait: bool = True
) -> AsyncIterator[Proc]:
    """An agent for `backend_url`.

    Unless told not to, waits until the relay has routed models to it: the
    agent registers at once and may learn its models a moment later.
    """
    listening = await relay.wait_for(lambda line: line.get("event") == "relay listening")
    args = [
        "-m",
        "agent",
        "run",
        "--proxy-url",
        listening["url"],
        "--backend-url",
        backend_url,
        "--worker-secret",
        secret,
        "--log-format",
        "json",
        *extra,
    ]
    async with spawn("agent", args) as proc:
        if wait:
            registered = await proc.wait_for(
                lambda line: "worker_id" in line and line.get("event") == "registered"
            )
            worker_id = registered["worker_id"]
            await relay.wait_for(
                lambda line: (
                    line.get("worker_id") == worker_id
                    and line.get("event") in ("worker registered", "worker models updated")
                    and bool(line.get("models"))
                )
            )
        yield proc
