"""Shell completion for `relay` and `agent`, run in real bash, zsh and fish.

Each test prints the program's `--completions SHELL` script, loads it into
the shell, and asks that shell to complete a partial command line: the
answer must come from the program (a subcommand, then a flag), not an error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.syspkg import require_tool

ROOT = Path(__file__).resolve().parent.parent

# (program, partial line, the word that must be offered, the word before completion)
CASES = [
    ("relay", "se", "serve"),
    ("relay", "serve --lis", "--listen"),
    ("agent", "ru", "run"),
    ("agent", "run --backend-u", "--backend-url"),
]


@pytest.fixture
def bindir(tmp_path: Path) -> Path:
    """`relay` and `agent` on PATH, running this tree's code with this interpreter."""
    for prog in ("relay", "agent"):
        shim = tmp_path / prog
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {prog} "$@"\n')
        shim.chmod(0o755)
    return tmp_path


def _script(prog: str, shell: str, bindir: Path) -> Path:
    out = subprocess.run(
        [str(bindir / prog), "--completions", shell],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=_env(bindir),
    ).stdout
    path = bindir / f"{prog}.{shell}"
    path.write_text(out)
    return path


def _env(bindir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_COMPLETE")}
    env["PATH"] = f"{bindir}:{env.get('PATH', '/usr/bin:/bin')}"
    env["PYTHONPATH"] = str(ROOT)
    return env


def _complete(shell: str, prog: str, line: str, bindir: Path) -> str:
    script = _script(prog, shell, bindir)
    words = [prog, *line.split(" ")]
    if shell == "bash":
        cmd = [
            require_tool("bash", "bash"),
            "--norc",
            "--noprofile",
            "-c",
            f'source "{script}"; COMP_WORDS=({" ".join(words)}); '
            f"COMP_CWORD={len(words) - 1}; _{prog}_completion {prog}; "
            'printf "%s\\n" "${COMPREPLY[@]}"',
        ]
    elif shell == "zsh":
        # The widget calls compadd/_describe/_arguments, which exist only inside
        # the completion system: stand-ins print what the program asked to offer.
        cmd = [
            require_tool("zsh", "zsh"),
            "-f",
            "-c",
            "compdef() { :; }; _describe() { print -l -- ${(P)2}; }; "
            '_arguments() { print -l -- "$@"; }; compadd() { print -l -- "$@"; }; '
            f'source "{script}"; words=({" ".join(words)}); CURRENT={len(words)}; '
            f"_{prog}_completion",
        ]
    else:
        cmd = [
            require_tool("fish", "fish"),
            "--no-config",
            "-c",
            f'source "{script}"; complete -C "{" ".join(words)}"',
        ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, cwd=ROOT, env=_env(bindir), timeout=60
    )
    assert "not supported" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
@pytest.mark.parametrize(("prog", "line", "offered"), CASES)
def test_completion_in_a_real_shell(
    shell: str, prog: str, line: str, offered: str, bindir: Path
) -> None:
    assert offered in _complete(shell, prog, line, bindir)
