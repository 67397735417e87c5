"""contrib/systemd units pass `systemd-analyze verify` with the installed programs' path.

The units name /opt/modelrelay/bin (the venv their header tells operators to
make); here that directory is replaced by the directory of this test's venv,
so systemd also checks that `relay` and `agent` exist and are executable.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.syspkg import require_tool

ROOT = Path(__file__).resolve().parent.parent
UNITS = ("modelrelay-relay.service", "modelrelay-agent.service")


def test_units_verify(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze", "systemd")
    bindir = Path(sys.executable).parent
    for program in ("relay", "agent"):
        if shutil.which(program, path=str(bindir)) is None:
            pytest.skip(f"{program} is not installed in {bindir} (make venv installs it)")
    paths = []
    for unit in UNITS:
        text = (ROOT / "contrib" / "systemd" / unit).read_text()
        assert "/opt/modelrelay/bin/" in text
        path = tmp_path / unit
        path.write_text(text.replace("/opt/modelrelay/bin", str(bindir)))
        paths.append(str(path))
    done = subprocess.run(
        [analyze, "verify", "--man=no", *paths], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "modelrelay" not in done.stderr, done.stderr  # no warning about our units
