"""`agent desktop` / `modelrelay-desktop` on the command line (real processes)."""

import os
import subprocess
import sys

import pytest

from agent.desktop.command import main


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_agent_lists_the_desktop_command() -> None:
    result = _run("--help")
    assert result.returncode == 0
    assert "desktop" in result.stdout
    result = _run("desktop", "--help")
    assert result.returncode == 0
    assert "--config FILE" in result.stdout


def test_modelrelay_desktop_entry_point_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--config FILE" in capsys.readouterr().out


def test_a_missing_config_file_is_one_line_and_exit_2(tmp_path) -> None:
    pytest.importorskip("PySide6", reason="the [desktop] extra")
    result = _run("desktop", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("agent desktop: error: cannot read")
    assert "Traceback" not in result.stderr
