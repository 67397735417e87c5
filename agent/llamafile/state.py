"""Running models: one JSON state file each, and the checks that keep them honest.

``run/SLUG.json`` is written by whoever started the model (``run`` for a bare
model server, the ``serve`` process for model server + agent) and removed
when it stops. A file whose process is gone (killed, machine rebooted) is
*stale*: `live_states` removes it, stopping an orphaned model server first if
its PID still runs the same program.
"""

import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import attrs
import cattrs

from agent.llamafile.paths import Home

__all__ = ["RunState", "live_states", "pid_alive", "read_state", "remove_state", "write_state"]


@attrs.frozen
class RunState:
    """What one running model is.

    Attributes:
        slug: The model.
        kind: ``run`` (model server only) or ``serve`` (model server + agent).
        pid: The process to signal: the model server for ``run``, the serve
            process (which drains the agent, then stops the server) for ``serve``.
        backend_pid: The model server's PID.
        port: Its port on 127.0.0.1.
        started_at: Unix time it started.
        program: The model server's program (checked before killing an orphan).
        args: The ``agent llamafile`` arguments that started it (for ``restart``).
        relay_url: The relay the agent connects to (``serve``).
        relay_connected: Whether the agent is registered with the relay now.
        worker_id: The relay's id for the agent, once registered.
    """

    slug: str
    kind: str
    pid: int
    backend_pid: int
    port: int
    started_at: float
    program: str
    args: tuple[str, ...] = ()
    relay_url: str | None = None
    relay_connected: bool = False
    worker_id: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def uptime(self, now: float | None = None) -> float:
        return max(0.0, (now if now is not None else time.time()) - self.started_at)


def write_state(home: Home, state: RunState) -> None:
    """Write `state` atomically (readers never see half a file)."""
    home.run.mkdir(parents=True, exist_ok=True)
    data = json.dumps(cattrs.unstructure(state), indent=1)
    fd, tmp = tempfile.mkstemp(dir=home.run, prefix=f".{state.slug}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
        os.replace(tmp, home.state_file(state.slug))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_state(home: Home, slug: str) -> RunState | None:
    """The state file of `slug`, or None (missing or unreadable)."""
    try:
        data = json.loads(home.state_file(slug).read_text(encoding="utf-8"))
        return cattrs.structure(data, RunState)
    except (OSError, ValueError, TypeError, cattrs.BaseValidationError):
        return None


def remove_state(home: Home, slug: str, pid: int | None = None) -> None:
    """Remove `slug`'s state file (only if it still names `pid`, when given)."""
    if pid is not None:
        current = read_state(home, slug)
        if current is not None and current.pid != pid:
            return
    home.state_file(slug).unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (a zombie counts as gone)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":  # pragma: no cover - Windows only
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # type: ignore[attr-defined]
        if not handle:
            return False
        ctypes.windll.kernel32.CloseHandle(handle)  # type: ignore[attr-defined]
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return fields[0] != "Z"
    except (OSError, IndexError):
        return True


def _runs(pid: int, program: str) -> bool:
    """Whether `pid` is alive and (where we can tell) runs `program`."""
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the PID
    name = os.path.basename(program).encode()
    return any(os.path.basename(arg) == name for arg in cmdline)


def live_states(home: Home) -> tuple[list[RunState], list[str]]:
    """Every running model, after removing stale state files.

    Returns:
        The live states, and one message per stale file cleaned.
    """
    live: list[RunState] = []
    cleaned: list[str] = []
    if not home.run.is_dir():
        return live, cleaned
    for path in sorted(home.run.glob("*.json")):
        state = read_state(home, path.stem)
        if state is None:
            path.unlink(missing_ok=True)
            cleaned.append(f"removed unreadable state file {path.name}")
            continue
        if pid_alive(state.pid):
            live.append(state)
            continue
        note = f"{state.slug}: process {state.pid} is gone; removed its stale state file"
        if state.backend_pid != state.pid and _runs(state.backend_pid, state.program):
            with contextlib.suppress(OSError):
                os.kill(state.backend_pid, signal.SIGTERM)
            note += f" and stopped its orphaned model server (PID {state.backend_pid})"
        path.unlink(missing_ok=True)
        cleaned.append(note)
    return live, cleaned
