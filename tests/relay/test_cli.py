"""`relay` as a user runs it: flags, environment, config file, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from relay.cli import parse_size
from relay.config import parse_listen
from tests.integration.procs import spawn


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("WORKER_SECRET", "LISTEN_ADDR")}
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**clean, **(env or {})},
        check=False,
    )


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("relay (ModelRelay) ")


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["serve"], {}, "--worker-secret"),
        (["serve", "--worker-secret", "s", "--listen", "nowhere"], {}, "--listen"),
        (["serve", "--worker-secret", "s", "--max-body-bytes", "12XB"], {}, "--max-body-bytes"),
        (["serve", "--worker-secret", "s"], {"QUEUE_TIMEOUT_SECS": "-3"}, "--queue-timeout"),
        (
            ["serve", "--worker-secret", "s"],
            {"MODELRELAY_REQUIRE_API_KEYS": "maybe"},
            "--require-api-keys",
        ),
        (["serve", "--worker-secret", "s", "--log-level", "loud"], {}, "--log-level"),
        (["serve", "--worker-secret", "s"], {"HTTP_FRONT": "nginx"}, "--http-front"),
    ],
)
def test_bad_values_fail_fast_with_one_line(
    args: list[str], env: dict[str, str], names: str
) -> None:
    result = _run(*args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert names in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish", "powershell"])
def test_completions(shell: str) -> None:
    result = _run("--completions", shell)
    assert result.returncode == 0
    assert "relay" in result.stdout


def test_sizes_and_listen_parse() -> None:
    assert parse_size("32MiB") == 32 * 1024 * 1024
    assert parse_size("1GiB") == 1024**3
    assert parse_size("500kb") == 500_000
    assert parse_size("4096") == 4096
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    assert parse_listen("0.0.0.0:80") == ("0.0.0.0", 80)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen("8080x")


async def test_http_front_comes_from_the_flag_or_http_front_env(tmp_path: Path) -> None:
    base = ["-m", "relay", "serve", "--listen", "127.0.0.1:0", "--worker-secret", "s"]
    async with spawn("relay", [*base, "--log-format", "json"]) as proc:
        line = await proc.wait_for(lambda line: line.get("event") == "relay listening")
    assert line["http_front"] == "builtin"  # the default
    env = {"HTTP_FRONT": "hypercorn", "LOG_FORMAT": "json"}
    async with spawn("relay", base, env=env) as proc:
        line = await proc.wait_for(lambda line: line.get("event") == "relay listening")
    assert line["http_front"] == "hypercorn"


async def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(
        'listen = "127.0.0.1:0"\nworker-secret = "from-file"\nprovider = "from-file"\n'
        "max_queue_len = 7\n"
    )
    env = {"PROVIDER_NAME": "from-env"}
    async with spawn(
        "relay",
        ["-m", "relay", "serve", "--config", str(config), "--log-format", "json"],
        env=env,
    ) as proc:
        line = await proc.wait_for(lambda line: line.get("event") == "relay listening")
    assert line["provider"] == "from-env"  # env beats file
    async with spawn(
        "relay",
        [
            "-m",
            "relay",
            "serve",
            "--config",
            str(config),
            "--provider",
            "from-flag",
            "--log-format",
            "json",
        ],
        env=env,
    ) as proc:
        line = await proc.wait_for(lambda line: line.get("event") == "relay listening")
    assert line["provider"] == "from-flag"  # flag beats env
    assert json.dumps(proc.lines).count("from-file") == 0  # secrets never logged


def test_modelrelay_server_alias_is_relay_serve() -> None:
    result = subprocess.run(
        [Path(sys.executable).parent / "modelrelay-server", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0
    assert "--worker-secret" in result.stdout


async def test_port_in_use_is_one_clear_line() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = await trio.to_thread.run_sync(
            lambda: _run("serve", "--worker-secret", "s", "--listen", f"127.0.0.1:{port}")
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
