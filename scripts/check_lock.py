#!/usr/bin/env python3
"""Check that requirements.lock pins every requirement pyproject.toml names.

`make` runs this before it installs anything: a dependency added to
pyproject.toml (or a pin changed there) without `make lock` would otherwise be
installed at whatever version is newest that day, or not at all.

Usage: check_lock.py EXTRA[,EXTRA...]   (the extras the lock covers)
Exit 0 when the lock is complete, 1 (with one line per problem) when not.
Standard library only: it runs before the venv has anything in it.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(?:==\s*([^\s;,]+))?")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(text: str) -> dict[str, str]:
    """`name==version` lines of a pip freeze file, by canonical name."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[_canonical(name)] = version.strip()
    return pins


def problems(pyproject: dict[str, object], lock_text: str, extras: list[str]) -> list[str]:
    """One message per requirement the lock lacks or pins differently."""
    project = pyproject["project"]
    assert isinstance(project, dict)
    wanted: list[str] = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            return [f"pyproject.toml has no [{extra}] extra (the Makefile's LOCK_EXTRAS)"]
        wanted += optional[extra]
    pins = lock_pins(lock_text)
    found = []
    for requirement in wanted:
        match = _NAME.match(requirement)
        if not match:
            found.append(f"cannot read the requirement {requirement!r}")
            continue
        name, _extras, version = match.groups()
        locked = pins.get(_canonical(name))
        if locked is None:
            found.append(f"{name} is not in requirements.lock")
        elif version is not None and locked != version:
            found.append(f"{name}: pyproject.toml pins {version}, requirements.lock {locked}")
    return found


def main(argv: list[str]) -> int:
    extras = [e for e in (argv[1] if len(argv) > 1 else "").split(",") if e]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lock_text = (ROOT / "requirements.lock").read_text()
    found = problems(pyproject, lock_text, extras)
    for message in found:
        print(f"check_lock: {message}", file=sys.stderr)
    if found:
        print("check_lock: requirements.lock is out of date: run 'make lock'", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
