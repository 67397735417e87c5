"""A relay that cannot start says why in one plain line and exits non-zero.

Real failures, not mocks: a port another socket holds, a key store file that
is not a database, a data directory the process may not write to.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _relay(*args: str, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "relay", "serve", "--worker-secret", "s", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_plain_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("relay: error: ")
    assert "Traceback" not in done.stderr
    assert "sub-exception" not in done.stderr
    return lines[0]


def test_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _one_plain_line(_relay("--listen", f"127.0.0.1:{port}"))
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "another program is using that address" in line


def test_unreadable_key_database(tmp_path: Path) -> None:
    (tmp_path / "modelrelay.sqlite3").write_bytes(b"not a database" * 100)
    line = _one_plain_line(
        _relay("--listen", "127.0.0.1:0", "--admin-token", "t", "--data-dir", str(tmp_path))
    )
    assert "modelrelay.sqlite3" in line


def test_missing_permission_on_the_data_dir(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    prefix: list[str] = []
    if os.geteuid() == 0:
        # root ignores file modes; without CAP_DAC_OVERRIDE it obeys them.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv (util-linux): cannot drop privileges")
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    done = _relay(
        "--listen",
        "127.0.0.1:0",
        "--admin-token",
        "t",
        "--data-dir",
        str(locked / "data"),
        prefix=prefix,
    )
    line = _one_plain_line(done)
    assert "ermission denied" in line
    assert str(locked) in line


def test_agent_metrics_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "agent",
                "run",
                "--worker-secret",
                "s",
                "--proxy-url",
                "http://127.0.0.1:9",
                "--metrics-listen",
                f"127.0.0.1:{port}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"agent: error: cannot listen on 127.0.0.1:{port} (--metrics-listen): "
        "another program is using that address"
    ], done.stderr
