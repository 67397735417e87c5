"""Fixtures for `agent llamafile`: a state directory, a file server, the CLI as a process.

Every command runs as ``python -m agent llamafile ...`` (a real process, as a
user runs it) with ``MODELRELAY_LLAMAFILE_HOME`` pointing at a temporary
directory; the catalog and model files come from `FileServer` on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from tests.agent.llamafile.fileserver import FileServer

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[3]
LLAMA_BACKEND = ROOT / "scripts" / "llama_backend.py"
# Variables a developer's shell may hold that would change what the CLI does.
_SCRUB = ("MODELRELAY_HARDWARE", "WORKER_SECRET", "PROXY_URL", "LOG_LEVEL", "LOG_FORMAT")


@attrs.frozen
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:  # noqa: ANN401 - a JSON document, any shape
        return json.loads(self.stdout)


@attrs.define
class Cli:
    """Runs ``agent llamafile`` as a process against one state directory."""

    home: Path
    env: dict[str, str] = attrs.field(factory=dict)

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        return {
            **env,
            "MODELRELAY_LLAMAFILE_HOME": str(self.home),
            "PYTHONUNBUFFERED": "1",
            **self.env,
            **(extra or {}),
        }

    def __call__(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 60
    ) -> Result:
        done = subprocess.run(
            [sys.executable, "-m", "agent", "llamafile", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.environment(env),
            cwd=ROOT,
            check=False,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    async def run(self, *args: str, env: dict[str, str] | None = None) -> Result:
        """The same, from a trio test (does not block the event loop)."""
        done = await trio.run_process(
            [sys.executable, "-m", "agent", "llamafile", *args],
            capture_stdout=True,
            capture_stderr=True,
            env=self.environment(env),
            cwd=ROOT,
            check=False,
        )
        return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def cli(home: Path) -> Cli:
    return Cli(home)


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer().start()
    try:
        yield server
    finally:
        server.stop()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def catalog_toml(
    entries: list[dict[str, Any]], *, version: int = 1, revision: str = "2099-01-01"
) -> str:
    """A catalog document (newer than the shipped one unless told otherwise)."""
    lines = [f"version = {version}", f'revision = "{revision}"']
    for entry in entries:
        lines += ["", "[[models]]"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in entry.items()]
    return "\n".join(lines) + "\n"


def entry(slug: str, url: str, data: bytes, **changes: object) -> dict[str, Any]:
    return {
        "slug": slug,
        "name": slug.title(),
        "file": f"{slug}.llamafile",
        "url": url,
        "size_bytes": len(data),
        "ram_gb": 0.2,
        "context": 2048,
        "licence": "apache-2.0",
        "tags": ["chat"],
        "sha256": sha256(data),
        **changes,
    }
