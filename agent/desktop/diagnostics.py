""" "Copy diagnostics": what a person pastes into a bug report, without the secret.

Versions (Python, the app, trio, Qt when loaded, the platform), the agent's
settings as `agent run --config` would read them minus every credential,
the tray's state, and the last warnings and errors. The secret is removed by
construction (credential keys are dropped) and then once more by value,
should it have reached a log line some other way.
"""

import platform
import sys
from collections.abc import Iterable
from importlib import metadata

import attrs

from agent.config import AgentConfig
from mrcommon.meta import DISTRIBUTION

__all__ = ["diagnostics_text"]

_HIDDEN = {"worker_secret", "backend_api_key"}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def diagnostics_text(
    config: AgentConfig | None, state: str, problems: Iterable[str], qt_version: str = ""
) -> str:
    """The diagnostics report.

    Args:
        config: The agent's configuration (its secrets are left out), if any.
        state: The tray's state line.
        problems: Recent warning and error log lines.
        qt_version: Qt's version, when the GUI runs.

    Returns:
        Plain text, safe to paste anywhere.
    """
    lines = [
        "ModelRelay Desktop diagnostics",
        f"{DISTRIBUTION}: {_version(DISTRIBUTION)}",
        f"python: {sys.version.split()[0]} ({sys.executable})",
        f"platform: {platform.platform()}",
        f"trio: {_version('trio')}",
        f"PySide6: {_version('PySide6-Essentials')}"
        + (f" (Qt {qt_version})" if qt_version else ""),
        f"keyring: {_version('keyring')}",
        f"state: {state}",
        "",
        "settings:",
    ]
    secrets: list[str] = []
    if config is None:
        lines.append("  (not configured)")
    else:
        for name, value in attrs.asdict(config, recurse=False).items():
            if name in _HIDDEN:
                if value:
                    secrets.append(str(value))
                    lines.append(f"  {name}: (set, not shown)")
                continue
            if attrs.has(type(value)):
                value = attrs.asdict(value)
            lines.append(f"  {name}: {value}")
    lines += ["", "recent warnings and errors:"]
    lines += [f"  {line}" for line in problems] or ["  (none)"]
    text = "\n".join(lines) + "\n"
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
