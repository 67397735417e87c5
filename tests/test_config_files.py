"""`--config FILE` on both programs: unknown keys are refused, bad values name the file key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Without the fix the relay would start, so every run has a bound and an ephemeral port.
RELAY = ["relay", "serve", "--listen", "127.0.0.1:0"]
AGENT = ["agent", "run", "--proxy-url", "http://127.0.0.1:9"]


def _run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


@pytest.mark.parametrize(("argv", "section"), [(RELAY, "relay"), (AGENT, "agent")])
@pytest.mark.parametrize("nested", [False, True])
def test_unknown_key_is_refused_naming_key_and_file(
    tmp_path: Path, argv: list[str], section: str, nested: bool
) -> None:
    path = tmp_path / "settings.toml"
    body = 'worker-secret = "s"\nlistne = "0.0.0.0:8080"\n'
    path.write_text(f"[{section}]\n{body}" if nested else body)
    done = _run([*argv, "--config", str(path)])
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "'listne'" in lines[0]
    assert str(path) in lines[0]


@pytest.mark.parametrize(
    ("argv", "key", "value", "env_name"),
    [
        (RELAY, "max-queue-len", '"many"', "MAX_QUEUE_LEN"),
        (RELAY, "max-body-bytes", '"lots"', "MAX_BODY_BYTES"),
        (RELAY, "database-url", '"mysql://x"', "DATABASE_URL"),
        (AGENT, "max-concurrency", '"many"', "MAX_CONCURRENCY"),
        (AGENT, "backend-url", '"ftp://x"', "BACKEND_URL"),
    ],
)
def test_bad_value_from_the_file_names_the_file_key(
    tmp_path: Path, argv: list[str], key: str, value: str, env_name: str
) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(f'worker-secret = "s"\n{key} = {value}\n')
    done = _run([*argv, "--config", str(path)])
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert "\n" not in line
    assert f"'{key}' in '{path}'" in line
    assert env_name not in line


def test_bad_value_from_a_flag_still_names_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('worker-secret = "s"\nmax-queue-len = 5\n')
    done = _run([*RELAY, "--config", str(path), "--max-queue-len", "many"])
    assert done.returncode == 2
    assert "'--max-queue-len'" in done.stderr
    assert str(path) not in done.stderr
