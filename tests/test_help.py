"""`--help` on both programs: options in panels, one metavar style, nothing that does not exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    ("relay", "serve"): [
        "Listening",
        "Workers",
        "Limits and timeouts",
        "Keys and admin",
        "Logging",
    ],
    ("agent", "run"): ["Relay connection", "Backend", "Limits and timeouts", "Metrics", "Logging"],
    ("relay", "loadtest"): ["Target", "Requests", "Output"],
}
# UPPER words (HOST:PORT, SECONDS, CIDR,...), or a choice list like text|json.
METAVAR = re.compile(r"^(?:[A-Z][A-Z0-9_:,.]*(?:\.\.\.)?|[a-z]+(?:\|[a-z]+)+)$")


def _help(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *argv, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "100"},
    )
    return done.stdout


def _sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if re.match(r"^[A-Z][A-Za-z ]+:$", line):
            current = line[:-1]
            sections[current] = []
        elif current is not None and line.startswith("  -"):
            sections[current].append(line.strip())
    return sections


@pytest.mark.parametrize(("argv", "panels"), list(COMMANDS.items()))
def test_options_are_grouped_in_panels(argv: tuple[str, str], panels: list[str]) -> None:
    sections = _sections(_help(*argv))
    names = [name for name in sections if name != "Usage"]
    assert names[: len(panels)] == panels, names
    # Nothing but --help (and --version/--completions) is left outside a panel.
    for line in sections.get("Other options", []):
        assert line.split()[0] in {"--help", "--version", "--completions"}, line


@pytest.mark.parametrize("argv", [("relay",), ("agent",), *COMMANDS], ids=lambda a: " ".join(a))
def test_one_metavar_style(argv: tuple[str, ...]) -> None:
    text = _help(*argv)
    assert not re.search(r"<[a-z ]+>", text), "Typer's <str>/<int> metavars are not our style"
    for line in text.splitlines():
        match = re.match(
            r"^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)(?: / --[a-z-]+)? ([^ ]+)(?:\s|$)", line
        )
        if match and not match[2].startswith("[") and match[2] != "/":
            assert METAVAR.match(match[2]), f"{match[1]}: metavar {match[2]!r}"


def test_agent_help_mentions_only_what_exists() -> None:
    text = _help("agent", "run")
    assert "dashboard" not in text.lower()
    flags = set(re.findall(r"^\s+(--[a-z][a-z0-9-]*)", text, re.M))
    for mentioned in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text):
        assert mentioned in flags or mentioned.startswith("--no-"), mentioned
    # Every path of the relay the help mentions is a route the relay has.
    for path in re.findall(r"(/(?:admin|v1)/[a-z/]+)", text):
        assert path.rstrip("/") in {"/admin/workers", "/v1/messages", "/v1/models"}, path
