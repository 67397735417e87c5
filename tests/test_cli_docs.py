"""docs/cli.md is what the programs say, and no user-facing text points outside the repo."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cli_docs():  # scripts/ is not a package: load the generator by path
    spec = importlib.util.spec_from_file_location("cli_docs", ROOT / "scripts" / "cli_docs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_matches_the_programs() -> None:
    expected = _cli_docs().render()
    assert (ROOT / "docs" / "cli.md").read_text() == expected, (
        "docs/cli.md is out of date: run `make cli-docs`"
    )


def test_every_flag_in_help_is_in_the_reference() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text()
    for argv in (["relay", "serve", "--help"], ["agent", "run", "--help"]):
        out = subprocess.run(
            [sys.executable, "-m", argv[0], *argv[1:]],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for flag in set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", out)) - {"--help"}:
            assert f"`{flag}`" in doc, f"{flag} ({' '.join(argv[:2])}) missing from docs/cli.md"


def test_contract_docs_exist_and_nothing_points_outside_the_repo() -> None:
    for name in ("protocol.md", "behavior.md", "cli.md"):
        assert (ROOT / "docs" / name).stat().st_size > 1000
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "contrib").rglob("*")]
    offenders = [
        str(path.relative_to(ROOT))
        for path in files
        if path.is_file()
        and re.search(r"\.\./shared|(?<![\w/])spec/\w+\.md", path.read_text(errors="replace"))
    ]
    assert offenders == []
