"""`relay loadtest` against a real relay + agent + fake backend, over http and https."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
import trio

from tests.integration.nginx import run_nginx

if TYPE_CHECKING:
    from pathlib import Path

    from tests.integration.conftest import Stack


async def _loadtest(*args: str) -> tuple[int, dict[str, Any] | None, str]:
    done = await trio.run_process(
        [sys.executable, "-m", "relay", "loadtest", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    stdout = done.stdout.decode()
    try:
        report = json.loads(stdout) if "--json" in args else None
    except ValueError:
        report = None
    return done.returncode, report, done.stderr.decode()


@pytest.mark.parametrize("stream", [False, True])
async def test_report_in_json(stack: Stack, stream: bool) -> None:
    args = ["--url", stack.url, "--model", "fake-model", "-n", "12", "-c", "3", "--json"]
    code, report, stderr = await _loadtest(*args, *(["--stream"] if stream else []))
    assert code == 0, stderr
    assert report is not None
    assert (report["requests"], report["succeeded"], report["failed"]) == (12, 12, 0)
    assert report["stream"] is stream
    assert report["completion_tokens"] == 12 * 3  # the fake answers 3 tokens
    assert report["tokens_per_s"] > 0
    for name in ("latency_ms", "ttft_ms"):
        pcts = report[name]
        assert list(pcts) == ["p50", "p90", "p95", "p99", "max"]
        assert 0 < pcts["p50"] <= pcts["p90"] <= pcts["p99"] <= pcts["max"]
    if stream:  # the first token comes before the end of the stream
        assert report["ttft_ms"]["p50"] <= report["latency_ms"]["p50"]
    assert report["errors"] == {}
    assert "12/12 done, 0 failed" in stderr  # the progress line
    assert len(stack.backend.requests) >= 12


async def test_text_report(stack: Stack) -> None:
    code, _, stderr = await _loadtest(
        "--url", stack.url, "--model", "fake-model", "-n", "4", "-c", "2"
    )
    assert code == 0, stderr


async def test_refuses_percentiles_when_everything_failed(stack: Stack) -> None:
    code, report, stderr = await _loadtest(
        "--url", stack.url, "--model", "nobody-serves-this", "-n", "5", "-c", "2", "--json"
    )
    assert code == 1
    assert report is not None
    assert report["succeeded"] == 0
    assert report["latency_ms"] is None
    assert report["ttft_ms"] is None
    assert report["errors"] == {"http_404": 5}
    assert "every request failed (http_404 5): no percentiles" in stderr


async def test_duration_bounds_the_run(stack: Stack) -> None:
    code, report, stderr = await _loadtest(
        "--url", stack.url, "--model", "fake-model", "-c", "2", "--duration", "0.5", "--json"
    )
    assert code == 0, stderr
    assert report is not None
    assert report["succeeded"] > 0


async def test_over_https_through_nginx(stack: Stack, tmp_path: Path) -> None:
    port = int(stack.url.rsplit(":", 1)[1])
    async with run_nginx(port, tmp_path) as https_port:
        url = f"https://127.0.0.1:{https_port}"
        code, report, stderr = await _loadtest(
            "--url",
            url,
            "--model",
            "fake-model",
            "-n",
            "6",
            "-c",
            "2",
            "--stream",
            "--ca-file",
            str(tmp_path / "cert.pem"),
            "--json",
        )
        assert code == 0, stderr
        assert report is not None
        assert report["succeeded"] == 6
        # Without the private CA the certificate is refused, and said so.
        code, report, _ = await _loadtest(
            "--url", url, "--model", "fake-model", "-n", "2", "--json"
        )
        assert code == 1
        assert report is not None
        assert report["errors"] == {"tls_error": 2}


def test_bad_url_is_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "relay", "loadtest", "--url", "relay:8080", "--model", "m"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "--url" in done.stderr
