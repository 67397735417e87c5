"""Starting, watching and stopping a model server process.

A llamafile runs itself: ``FILE --server --nobrowser --host 127.0.0.1 --port P
-c CTX -ngl N --alias SLUG``. A plain GGUF (or any model, with ``--binary``)
runs under a llama-server-compatible program: ``BINARY -m FILE --host ... ``
with the same flags minus the llamafile-only ones. Both serve ``/health``
(503 while loading, 200 when ready) and the OpenAI API.

A llamafile is an "actually portable executable": when the kernel refuses to
exec it (ENOEXEC: no binfmt entry for it) it still runs as a shell script,
``sh FILE ...`` (llamafile's own documented workaround).

The model server always runs in a session of its own: a Ctrl-C in the
terminal of ``serve`` must reach the agent (which drains) and not the model
server (which would drop the requests being drained).
"""

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import trio

from agent.llamafile.errors import NoPermission, PortBusy, ServeError
from agent.llamafile.state import pid_alive

__all__ = [
    "check_port",
    "free_port",
    "server_argv",
    "spawn_detached",
    "stop_pid",
    "wait_healthy",
]

HOST = "127.0.0.1"


def free_port() -> int:
    """A port the kernel calls free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def check_port(port: int) -> int:
    """`port` if it is free (0: pick a free one).

    Raises:
        PortBusy: Something already listens there.
    """
    if port == 0:
        return free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if sys.platform != "win32":
            # Like any server: connections left in TIME_WAIT by the last run
            # (restart) must not count as busy; a listener still does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortBusy(
                    f"port {port} on {HOST} is busy: stop what uses it, or pass --port 0 "
                    "for a free one"
                ) from None
            if exc.errno == errno.EACCES:
                raise NoPermission(f"not allowed to listen on port {port} (below 1024?)") from None
            raise
    return port


def gpu_layers(gpu: str, has_gpu: bool) -> str:
    """The ``-ngl`` value for ``--gpu auto|none|N``."""
    if gpu == "auto":
        return "999" if has_gpu else "0"
    if gpu == "none":
        return "0"
    return gpu


def server_argv(
    model: Path,
    *,
    binary: str | None,
    port: int,
    ctx: int,
    ngl: str,
    alias: str,
    parallel: int,
    extra: list[str],
) -> list[str]:
    """The model server's command line (see the module docstring)."""
    common = [
        "--host",
        HOST,
        "--port",
        str(port),
        "-c",
        str(ctx),
        "-ngl",
        ngl,
        "--alias",
        alias,
        "-np",
        str(parallel),
    ]
    if binary:
        return [binary, "-m", str(model), *common, *extra]
    return [str(model), "--server", "--nobrowser", *common, *extra]


def _popen(
    argv: list[str], log: Path, pass_fds: tuple[int, ...], env: dict[str, str] | None
) -> "subprocess.Popen[bytes]":
    with log.open("ab") as out:
        for attempt in (argv, ["sh", *argv]):
            try:
                return subprocess.Popen(
                    attempt,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                    pass_fds=pass_fds,
                    env=env,
                )
            except OSError as exc:
                # ENOEXEC: an APE the kernel cannot exec; it runs as a shell script.
                if exc.errno != errno.ENOEXEC or sys.platform == "win32" or attempt[0] == "sh":
                    raise
    raise AssertionError("unreachable")


def spawn_detached(
    argv: list[str],
    log: Path,
    *,
    pass_fds: tuple[int, ...] = (),
    env: dict[str, str] | None = None,
) -> "subprocess.Popen[bytes]":
    """Start `argv` in its own session, output appended to `log`.

    Raises:
        NoPermission: The program is not executable (noexec mount, mode).
        ServeError: It cannot be started at all.
    """
    try:
        return _popen(argv, log, pass_fds, env)
    except PermissionError as exc:
        raise NoPermission(
            f"not allowed to run {argv[0]}: {exc.strerror} (is its file system mounted noexec?)"
        ) from None
    except OSError as exc:
        raise ServeError(f"cannot start {argv[0]}: {exc.strerror}") from None


async def wait_healthy(url: str, exited: Callable[[], int | None]) -> None:
    """Poll ``GET url/health`` until 200; the caller bounds the wait.

    The model loads for seconds to minutes and says nothing when done: polling
    its health endpoint is the interface llama.cpp offers.

    Args:
        url: The server's base URL.
        exited: Returns the server's exit code once it has exited.

    Raises:
        ServeError: The server exited first.
    """
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            code = exited()
            if code is not None:
                raise ServeError(f"the model server exited with code {code} while starting")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/health")).status_code == 200:
                    return
            await trio.sleep(0.1)


def stop_pid(pid: int, timeout: float, *, extra: int | None = None) -> bool:
    """SIGTERM `pid`, wait up to `timeout` s, then SIGKILL it (and `extra`).

    Not our child (it was started by an earlier command), so there is no
    handle to wait on: we watch the PID.

    Returns:
        Whether it stopped on the SIGTERM (False: it had to be killed).
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    clean = not pid_alive(pid)
    for target in (pid, extra):
        if target and pid_alive(target):
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGKILL)
    return clean
