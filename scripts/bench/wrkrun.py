"""`wrk` (Debian's) for the plain request figures: POST bodies from a Lua script.

The script reads the body from a file, stops each thread after a request
count (``wrk.thread:stop()``), and prints one ``BENCH_JSON {...}`` line
from ``done()`` with the count, the errors and latency percentiles in µs.
The run is also bounded in time (``-d``), and the process by a timeout.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

import procutil

if TYPE_CHECKING:
    from pathlib import Path

_LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
local max = tonumber(os.getenv("BENCH_MAX") or "0")
local count = 0

function response(status, headers, body)
  count = count + 1
  if max > 0 and count >= max then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"p50":%d,"p90":%d,"p99":%d,"min":%d,"max":%d,"mean":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.min, latency.max, latency.mean))
end
"""


def available() -> str | None:
    return shutil.which("wrk")


def run(
    url: str,
    work_dir: Path,
    *,
    body: bytes,
    key: str,
    connections: int,
    duration: float,
    max_requests: int,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """One bounded wrk run; returns its figures plus its own CPU seconds."""
    script = work_dir / "post.lua"
    if not script.exists():
        script.write_text(_LUA)
    body_file = work_dir / f"body-{len(body)}.json"
    if not body_file.exists():
        body_file.write_bytes(body)
    threads = 1 if connections < 8 else 2
    per_thread = max(1, max_requests // threads)
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={round(timeout_s)}s",
        "-s",
        str(script),
        url,
    ]
    env = {
        **os.environ,
        "BENCH_BODY": str(body_file),
        "BENCH_MAX": str(per_thread),
        "BENCH_KEY": key,
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=env,
        timeout=duration + timeout_s + 20,
        preexec_fn=procutil.child_setup,  # dies with the harness
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line[len("BENCH_JSON ") :])
            break
    else:
        raise RuntimeError(
            f"wrk gave no result (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    result["cpu_s_wrk"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    result["elapsed_s"] = result["duration_us"] / 1e6
    result["rps"] = result["requests"] / result["elapsed_s"] if result["elapsed_s"] else 0.0
    result["argv"] = " ".join(argv)
    return result
