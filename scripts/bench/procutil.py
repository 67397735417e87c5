"""Child processes for the benchmark: start, watch, measure, stop; never leave one behind.

Every child runs in a session (process group) of its own, so a Ctrl-C on the
terminal reaches only the harness, which then stops each child in order
(SIGTERM to its group, a bounded wait, SIGKILL). Each child also gets
``PR_SET_PDEATHSIG = SIGKILL``: if the harness itself is killed, the kernel
kills the children (nginx runs with ``master_process off`` so that the one
process it has is the one that gets the signal).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
_PR_SET_PDEATHSIG = 1

_LIVE: list[Child] = []


def child_setup() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Child:
    """One started process with its stdout/stderr in a log file (or a pipe)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_dir: Path,
        *,
        env: dict[str, str] | None = None,
        stdout_pipe: bool = False,
        cwd: str | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=child_setup,
        )
        self.pid = self.proc.pid
        _LIVE.append(self)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def kill(self) -> None:
        """SIGKILL this process alone (the failover scenario)."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(5)

    def stop(self, grace: float = 5.0) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        # Whatever else is left in its group (children of the child).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        if self in _LIVE:
            _LIVE.remove(self)


def stop_all() -> None:
    """Stop every child still running, newest first."""
    for child in reversed(list(_LIVE)):
        with contextlib.suppress(Exception):
            child.stop(grace=3.0)


# --- /proc ------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
                out.extend(int(p) for p in text.split())
    except OSError:
        pass
    return out


def tree(pid: int) -> list[int]:
    """`pid` and all of its descendants."""
    seen = [pid]
    i = 0
    while i < len(seen):
        seen.extend(_children(seen[i]))
        i += 1
    return seen


def cpu_seconds(pid: int, *, with_children: bool = True) -> float:
    """utime + stime of `pid` (all its threads), plus its live descendants."""
    total = 0
    for p in tree(pid) if with_children else [pid]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def rss_bytes(pid: int, *, with_children: bool = True) -> int:
    total = 0
    for p in tree(pid) if with_children else [pid]:
        try:
            pages = int(Path(f"/proc/{p}/statm").read_text().split()[1])
        except OSError:
            continue
        total += pages * PAGE
    return total


# --- HTTP helpers (control plane only, never on a measured path) -------------


def http(method: str, url: str, doc: object = None, timeout: float = 5.0) -> Any:  # noqa: ANN401
    data = None if doc is None else json.dumps(doc).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read()
    return json.loads(body) if body else None


def wait_until(
    check: Callable[[], object], timeout: float, what: str, child: Child | None = None
) -> object:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise RuntimeError(
                f"{child.name} exited ({child.proc.returncode}) while {what}:\n{child.tail()}"
            )
        try:
            value = check()
            if value:
                return value
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last = exc
        time.sleep(0.05)
    tail = f"\n{child.tail()}" if child is not None else ""
    raise RuntimeError(f"timed out after {timeout:g}s {what} (last error: {last}){tail}")
