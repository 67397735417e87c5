"""The other commands as processes: doctor, config, import/rm, status cleanup, clear errors."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from typing import TYPE_CHECKING

import pytest

from agent.llamafile.paths import Home
from agent.llamafile.state import RunState, pid_alive, write_state

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.agent.llamafile.conftest import Cli

CHECKS = [
    "data_dir",
    "catalog",
    "disk_space",
    "hardware",
    "gpu",
    "exec",
    "ape",
    "models",
    "running",
    "relay",
    "port",
]


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port something listens on (a relay stand-in for reachability, a busy port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_doctor_reports_each_check(cli: Cli, home: Path, listener: int) -> None:
    fresh = cli("doctor", "--json")
    assert fresh.code == 0, fresh.stdout
    checks = {c["name"]: c for c in fresh.json()["checks"]}
    assert list(checks) == CHECKS
    assert checks["data_dir"]["status"] == "ok"
    assert str(home) in checks["data_dir"]["detail"]
    assert checks["exec"]["status"] == "ok"
    assert checks["relay"]["status"] == "warn"  # not configured yet
    assert checks["catalog"]["detail"].startswith("7 models")

    assert cli("config", "set", "relay-url", f"http://127.0.0.1:{closed_port()}").code == 0
    (home / "user-catalog.toml").write_text("version = 1\n[[models]]\nslug = 'x'\n")
    broken = cli("doctor", "--json")
    assert broken.code == 1
    verdicts = {c["name"]: c["status"] for c in broken.json()["checks"]}
    assert verdicts["relay"] == "fail"
    assert verdicts["catalog"] == "fail"
    text = cli("doctor")
    assert "FAIL  relay" in text.stdout
    assert "unreachable" in text.stdout

    (home / "user-catalog.toml").unlink()
    assert cli("config", "set", "relay-url", f"http://127.0.0.1:{listener}").code == 0
    assert cli("config", "set", "worker-secret", "s3cret-value").code == 0
    healthy = cli("doctor", "--json")
    assert healthy.code == 0
    relay = next(c for c in healthy.json()["checks"] if c["name"] == "relay")
    assert relay == {
        "name": "relay",
        "status": "ok",
        "detail": f"http://127.0.0.1:{listener} answers; worker secret set",
    }


def test_config_set_get_unset_list(cli: Cli, home: Path) -> None:
    assert cli("config", "set", "port", "8081").code == 0
    assert cli("config", "get", "port").stdout.strip() == "8081"
    assert cli("config", "set", "worker-secret", "hunter2hunter2").code == 0
    listed = cli("config", "list", "--json").json()
    assert listed["port"] == 8081
    assert listed["worker-secret"] == "(set, 14 chars)"
    assert "hunter2" not in cli("config", "list").stdout
    assert "hunter2" not in cli("config", "get", "worker-secret").stdout
    assert (home / "config.toml").stat().st_mode & 0o077 == 0  # the secret's file is private
    assert cli("config", "unset", "port").code == 0
    assert cli("config", "get", "port").code == 1
    bad = cli("config", "set", "port", "http")
    assert bad.code == 1
    assert "config port: 'http'" in bad.stderr
    unknown = cli("config", "set", "colour", "blue")
    assert unknown.code == 1
    assert "unknown config key 'colour'" in unknown.stderr


def test_import_list_rm(cli: Cli, home: Path, tmp_path: Path) -> None:
    mine = tmp_path / "My-Model.Q4.llamafile"
    mine.write_bytes(b"#!/bin/sh\nexit 0\n" * 100)
    imported = cli("import", str(mine), "--tag", "code", "--json")
    assert imported.code == 0, imported.stderr
    assert imported.json()["slug"] == "my-model.q4"
    listed = {m["slug"]: m for m in cli("list", "--tag", "code", "--json").json()["models"]}
    assert listed["my-model.q4"]["downloaded"] is True
    assert listed["my-model.q4"]["source"] == "user"
    again = cli("download", "my-model.q4", "--json")
    assert again.json()["already"] is True
    assert again.json()["verified"] is True
    removed = cli("rm", "my-model.q4", "--json")
    assert removed.code == 0
    assert removed.json()["removed"][0]["size"] == 1700
    assert not (home / "models" / mine.name).exists()
    assert mine.exists()  # copied, not moved
    missing = cli("rm", "my-model.q4")
    assert missing.code == 1
    assert "is not downloaded" in missing.stderr
    unknown = cli("download", "no-such-model")
    assert unknown.code == 1
    assert unknown.stderr.startswith("agent: error: no model 'no-such-model'")


def _dummy(cli: Cli, tmp_path: Path, body: str) -> None:
    path = tmp_path / "dummy.llamafile"
    path.write_text(body)
    assert cli("import", str(path), "--slug", "dummy").code == 0


def test_port_busy_is_a_clear_error(cli: Cli, tmp_path: Path, listener: int) -> None:
    _dummy(cli, tmp_path, "#!/bin/sh\nsleep 60\n")
    result = cli("run", "dummy", "--port", str(listener))
    assert result.code == 1
    assert result.stderr == (
        f"agent: error: port {listener} on 127.0.0.1 is busy: stop what uses it, "
        "or pass --port 0 for a free one\n"
    )
    assert cli("run", "dummy", "--port", str(listener), "--json").json()["error"] == "port_busy"


def test_relay_unreachable_is_a_clear_error(cli: Cli, home: Path, tmp_path: Path) -> None:
    _dummy(cli, tmp_path, "#!/bin/sh\nsleep 60\n")
    port = closed_port()
    result = cli(
        "serve", "dummy", "--relay-url", f"http://127.0.0.1:{port}", "--worker-secret", "s"
    )
    assert result.code == 1
    assert f"agent: error: the relay at http://127.0.0.1:{port} is unreachable" in result.stderr
    assert "Traceback" not in result.stderr
    assert list((home / "run").iterdir()) == []
    missing = cli("serve", "dummy", "--relay-url", f"http://127.0.0.1:{port}")
    assert missing.code == 1
    assert "no worker secret" in missing.stderr


def test_a_model_server_that_dies_while_starting(
    cli: Cli, home: Path, tmp_path: Path, listener: int
) -> None:
    _dummy(cli, tmp_path, "#!/bin/sh\necho 'cannot load the model' >&2\nexit 3\n")
    result = cli(
        "serve", "dummy", "--relay-url", f"http://127.0.0.1:{listener}", "--worker-secret", "s"
    )
    assert result.code == 1
    assert "the model server exited with code 3 while starting" in result.stderr
    assert "cannot load the model" in cli("logs", "dummy").stdout
    assert list((home / "run").iterdir()) == []
    detached = cli(
        "serve",
        "dummy",
        "--detach",
        "--json",
        "--relay-url",
        f"http://127.0.0.1:{listener}",
        "--worker-secret",
        "s",
    )
    assert detached.code == 1
    assert detached.json()["error"] == "serve"
    ran = cli("run", "dummy")
    assert ran.code == 1
    assert "dummy did not start" in ran.stderr


def test_status_cleans_stale_state_and_orphans(cli: Cli, home: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = subprocess.Popen(["sleep", "60"])
    try:
        layout = Home(home)
        write_state(layout, RunState("gone", "run", dead.pid, dead.pid, 1, time.time(), "x"))
        write_state(
            layout, RunState("orphaned", "serve", dead.pid, orphan.pid, 2, time.time(), "sleep")
        )
        result = cli("status", "--json")
        assert result.code == 0
        doc = result.json()
        assert doc["running"] == []
        assert any("gone: process" in note and "stale" in note for note in doc["cleaned"])
        assert any(
            f"stopped its orphaned model server (PID {orphan.pid})" in n for n in doc["cleaned"]
        )
        assert orphan.wait(10) is not None
        assert list((home / "run").iterdir()) == []
    finally:
        orphan.kill()
        orphan.wait()
    assert not pid_alive(orphan.pid)
    assert json.loads(cli("status", "--json").stdout) == {"running": [], "cleaned": []}
