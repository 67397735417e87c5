"""`--console/--no-console` (MODELRELAY_CONSOLE) as a user runs the relay."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import httpx
import trio

from tests.integration.procs import relay_process

if TYPE_CHECKING:
    from pathlib import Path


async def test_no_console_flag_turns_it_off(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    async with (
        relay_process("--admin-token", "t", "--no-console", "--data-dir", data) as (_, url),
        httpx.AsyncClient(base_url=url) as client,
    ):
        with trio.fail_after(10):
            response = await client.get("/console")
        assert response.status_code == 404
        assert "--no-console" in response.text
    async with (
        relay_process("--admin-token", "t", "--data-dir", data) as (_, url),
        httpx.AsyncClient(base_url=url) as client,
    ):
        with trio.fail_after(10):
            response = await client.get("/console")
        assert response.status_code == 303  # on by default with a token: to the login form


def test_a_bad_environment_value_names_the_flag() -> None:
    env = {k: v for k, v in os.environ.items() if k != "WORKER_SECRET"}
    result = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--worker-secret", "s"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**env, "MODELRELAY_CONSOLE": "maybe"},
        check=False,
    )
    assert result.returncode == 2
    assert "--console" in result.stderr
    assert "Traceback" not in result.stderr
