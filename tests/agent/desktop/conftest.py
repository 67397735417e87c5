"""Fixtures for the desktop app's tests: optional packages, real processes, a test keyring.

The GUI tests are synchronous (pytest-qt drives Qt's loop), so the relay and
the fake backend run here as plain child processes whose stderr is read by a
thread; a test waits for a log line, never for a fixed time.
"""

import importlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import httpx
import pytest

# Before any QApplication exists: Qt renders widgets without a display.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

SECRET = "desk-secret"
WAIT = 30.0


def need(module: str, why: str) -> ModuleType:
    """Import `module`, or skip loudly (fail under CI=true, where it must be installed)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        message = f"{module} is not installed ({why}): pip install 'modelrelay-server[desktop]'"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)
        raise  # unreachable: skip raises


class Child:
    """A child process whose stderr JSON lines are collected by a thread."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        for key in ("WORKER_SECRET", "PROXY_URL", "BACKEND_URL", "MODELS"):
            if not env or key not in env:
                full_env.pop(key, None)
        self.process = subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
        )
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.stdout: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._pump, args=(self.process.stderr, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.process.stdout, False), daemon=True).start()

    def _pump(self, stream: IO[bytes], is_log: bool) -> None:
        for raw in stream:
            text = raw.decode("utf-8", "replace").rstrip("\n")
            with self._changed:
                if is_log:
                    self.raw.append(text)
                    try:
                        doc = json.loads(text)
                    except ValueError:
                        doc = None
                    if isinstance(doc, dict):
                        self.lines.append(doc)
                else:
                    self.stdout.append(text)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = WAIT
    ) -> dict[str, Any]:
        """The first log line `predicate` accepts, waiting for it (at most `timeout` s)."""
        with self._changed:
            found: list[dict[str, Any]] = []

            def ready() -> bool:
                found[:] = [line for line in self.lines if predicate(line)]
                return bool(found) or self.process.poll() is not None

            self._changed.wait_for(ready, timeout)
            if not found:
                raise AssertionError(
                    f"no such line (exit {self.process.poll()}):\n" + "\n".join(self.raw[-30:])
                )
            return found[0]

    def wait_stdout(self, prefix: str, timeout: float = WAIT) -> str:
        with self._changed:
            self._changed.wait_for(
                lambda: (
                    any(s.startswith(prefix) for s in self.stdout)
                    or self.process.poll() is not None
                ),
                timeout,
            )
            for line in self.stdout:
                if line.startswith(prefix):
                    return line[len(prefix) :]
        raise AssertionError(f"no {prefix!r} on stdout: {self.raw[-20:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


class ChatRequest(threading.Thread):
    """One streamed chat request to the relay, on its own thread (the GUI thread must run)."""

    def __init__(self, relay_url: str, fake: dict[str, object], model: str = "m1") -> None:
        super().__init__(daemon=True)
        self.url = relay_url
        self.model = model
        self.fake = fake
        self.status: int | None = None
        self.body = b""
        self.error: Exception | None = None

    def run(self) -> None:
        body = {
            "model": self.model,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
            "fake": self.fake,
        }
        try:
            with (
                httpx.Client(timeout=60) as client,
                client.stream("POST", f"{self.url}/v1/chat/completions", json=body) as response,
            ):
                self.status = response.status_code
                for chunk in response.iter_bytes():
                    self.body += chunk
        except httpx.HTTPError as exc:
            self.error = exc


def start_relay(listen: str = "127.0.0.1:0") -> tuple[Child, str]:
    relay = Child(
        [
            "-m",
            "relay",
            "serve",
            "--listen",
            listen,
            "--worker-secret",
            SECRET,
            "--log-format",
            "json",
        ]
    )
    line = relay.wait_for(lambda line: line.get("event") == "relay listening")
    return relay, str(line["url"])


@pytest.fixture
def relay() -> Iterator[tuple[Child, str]]:
    """A real relay process on an ephemeral port: (process, base URL)."""
    child, url = start_relay()
    try:
        yield child, url
    finally:
        child.stop()


@pytest.fixture
def backend_url() -> Iterator[str]:
    """The fake LLM backend as a process, serving models m1 and m2."""
    child = Child(["-m", "tests.fake_backend", "--models", "m1,m2"])
    try:
        yield child.wait_stdout("FAKE_BACKEND_URL=")
    finally:
        child.stop()


@pytest.fixture
def file_keyring(tmp_path: Path) -> Iterator[Path]:
    """The process's keyring is a JSON file for the test's duration."""
    keyring = need("keyring", "the OS keyring client")
    from tests.agent.desktop.file_keyring import FileKeyring

    path = tmp_path / "keyring.json"
    before = keyring.get_keyring()
    keyring.set_keyring(FileKeyring(path))
    try:
        yield path
    finally:
        keyring.set_keyring(before)
