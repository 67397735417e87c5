"""Start on login: the XDG autostart file, the macOS LaunchAgent, the Windows Run key.

The Settings toggle calls `set_autostart`; it writes the entry when turned
on and removes it when turned off, and never touches anything else. The
file contents are built by pure functions so the tests can check them on
any platform; only the Windows registry write needs Windows.
"""

import contextlib
import os
import plistlib
import shlex
import shutil
import sys
from pathlib import Path

import attrs

__all__ = [
    "LAUNCH_AGENT_LABEL",
    "RUN_KEY",
    "AutostartTarget",
    "desktop_command",
    "desktop_entry",
    "is_enabled",
    "launch_agent_plist",
    "set_autostart",
    "target_for",
]

LAUNCH_AGENT_LABEL = "dev.modelrelay.desktop"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
_RUN_VALUE = "ModelRelay Desktop"


def desktop_command() -> list[str]:
    """How to start the app: the ``modelrelay-desktop`` script, else this Python."""
    script = shutil.which("modelrelay-desktop")
    if script:
        return [script]
    return [sys.executable, "-m", "agent", "desktop"]


def desktop_entry(command: list[str]) -> str:
    """An XDG autostart ``.desktop`` file that runs `command`."""
    return "\n".join(
        [
            "[Desktop Entry]",
            "Type=Application",
            "Name=ModelRelay Desktop",
            "Comment=Serve this computer's LLM through a ModelRelay relay",
            f"Exec={shlex.join(command)}",
            "Terminal=false",
            "X-GNOME-Autostart-enabled=true",
            "",
        ]
    )


def launch_agent_plist(command: list[str]) -> bytes:
    """A macOS LaunchAgent that runs `command` at login (and does not restart it)."""
    return plistlib.dumps(
        {
            "Label": LAUNCH_AGENT_LABEL,
            "ProgramArguments": command,
            "RunAtLoad": True,
            "KeepAlive": False,
            "ProcessType": "Interactive",
        }
    )


@attrs.frozen
class AutostartTarget:
    """Where the login entry lives on one platform.

    Attributes:
        platform: ``linux``, ``darwin`` or ``win32``.
        path: The file (Linux, macOS); None on Windows (the registry).
    """

    platform: str
    path: Path | None


def target_for(platform: str | None = None, home: Path | None = None) -> AutostartTarget:
    """The login entry's location for `platform` (default: this one).

    Args:
        platform: ``sys.platform``-style name.
        home: The home directory (default: the user's).
    """
    platform = platform or sys.platform
    home = home or Path.home()
    if platform == "darwin":
        return AutostartTarget(
            platform, home / "Library/LaunchAgents" / f"{LAUNCH_AGENT_LABEL}.plist"
        )
    if platform == "win32":
        return AutostartTarget(platform, None)
    config = os.environ.get("XDG_CONFIG_HOME") or str(home / ".config")
    return AutostartTarget("linux", Path(config) / "autostart" / "modelrelay-desktop.desktop")


def set_autostart(enabled: bool, target: AutostartTarget, command: list[str]) -> None:
    """Write (or remove) the login entry.

    Raises:
        OSError: The file or registry key cannot be written.
    """
    if target.path is None:
        _set_run_key(enabled, command)
        return
    if not enabled:
        target.path.unlink(missing_ok=True)
        return
    target.path.parent.mkdir(parents=True, exist_ok=True)
    if target.platform == "darwin":
        target.path.write_bytes(launch_agent_plist(command))
    else:
        target.path.write_text(desktop_entry(command), encoding="utf-8")


def is_enabled(target: AutostartTarget) -> bool:
    """Whether the login entry exists."""
    if target.path is not None:
        return target.path.exists()
    if sys.platform != "win32":  # pragma: no cover - Windows only
        return False
    import winreg

    try:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
            winreg.QueryValueEx(key, _RUN_VALUE)
    except OSError:
        return False
    return True  # pragma: no cover - Windows only


def _set_run_key(enabled: bool, command: list[str]) -> None:  # pragma: no cover - Windows only
    if sys.platform != "win32":
        raise OSError("the Run registry key exists on Windows only")
    import subprocess
    import winreg

    with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY, 0, winreg.KEY_SET_VALUE) as key:
        if enabled:
            winreg.SetValueEx(key, _RUN_VALUE, 0, winreg.REG_SZ, subprocess.list2cmdline(command))
        else:
            with contextlib.suppress(FileNotFoundError):
                winreg.DeleteValue(key, _RUN_VALUE)
