"""Start on login: the files the toggle writes and removes."""

import plistlib
import sys
from pathlib import Path

import pytest

from agent.desktop.autostart import (
    LAUNCH_AGENT_LABEL,
    desktop_entry,
    is_enabled,
    set_autostart,
    target_for,
)

COMMAND = ["/opt/My Apps/bin/modelrelay-desktop"]


def test_linux_xdg_autostart_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    target = target_for("linux", home=tmp_path)
    assert target.path == tmp_path / ".config/autostart/modelrelay-desktop.desktop"
    assert not is_enabled(target)
    set_autostart(True, target, COMMAND)
    assert is_enabled(target)
    assert target.path is not None
    lines = target.path.read_text().splitlines()
    assert lines[0] == "[Desktop Entry]"
    assert "Type=Application" in lines
    assert "Exec='/opt/My Apps/bin/modelrelay-desktop'" in lines  # quoted: the space
    set_autostart(False, target, COMMAND)
    assert not target.path.exists()
    set_autostart(False, target, COMMAND)  # removing twice is fine


def test_linux_honours_xdg_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    target = target_for("linux", home=tmp_path)
    assert target.path == tmp_path / "cfg/autostart/modelrelay-desktop.desktop"


def test_macos_launch_agent(tmp_path: Path) -> None:
    target = target_for("darwin", home=tmp_path)
    assert target.path == tmp_path / f"Library/LaunchAgents/{LAUNCH_AGENT_LABEL}.plist"
    set_autostart(True, target, [*COMMAND, "--flag"])
    assert target.path is not None
    plist = plistlib.loads(target.path.read_bytes())
    assert plist == {
        "Label": LAUNCH_AGENT_LABEL,
        "ProgramArguments": [*COMMAND, "--flag"],
        "RunAtLoad": True,
        "KeepAlive": False,
        "ProcessType": "Interactive",
    }
    set_autostart(False, target, COMMAND)
    assert not target.path.exists()


def test_windows_uses_the_registry() -> None:
    target = target_for("win32")
    assert target.path is None
    if sys.platform != "win32":
        with pytest.raises(OSError, match="Windows only"):
            set_autostart(True, target, COMMAND)


def test_desktop_entry_runs_the_command() -> None:
    assert "Exec=python -m agent desktop" in desktop_entry(["python", "-m", "agent", "desktop"])
