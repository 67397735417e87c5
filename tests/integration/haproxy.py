"""A real HAProxy (Debian's `haproxy`, `make deps-system`) in front of test relays.

The policy under test is the one we ship: the `defaults` and `backend relays`
sections are taken from contrib/haproxy/haproxy.cfg as they are (retries,
redispatch, the health check), with only the server addresses replaced. The
test's own `global` and `frontend` replace the parts that need root, a
certificate or fixed ports: the frontend listens on a Unix socket in a
temporary directory, so nothing collides with other tests.

Without HAProxy the tests skip with a loud reason, except under CI (`CI=true`),
where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import pytest
import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = [
    "CONTRIB",
    "Haproxy",
    "fleet_config",
    "haproxy_binary",
    "run_haproxy",
    "shipped_sections",
]

CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "haproxy" / "haproxy.cfg"


def haproxy_binary() -> str:
    """The haproxy executable; skips (or fails under CI) without one."""
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.path.exists(p)), None
    )
    if found is None:
        reason = "haproxy is not installed (apt-get install haproxy, or make deps-system)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"HAProxy fleet tests cannot run under CI: {reason}", pytrace=False)
        pytest.skip(f"HAProxy fleet tests SKIPPED: {reason}")
    return found


def shipped_sections(text: str) -> dict[str, list[str]]:
    """Each section of an HAProxy config ("defaults", "backend relays"...) → its lines."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not line[0].isspace():
            current = sections.setdefault(stripped, [])
        elif current is not None:
            current.append(stripped)
    return sections


def fleet_config(socket: Path, admin: Path, servers: list[tuple[str, int]]) -> str:
    """Our shipped defaults and relay backend, listening on `socket`, for `servers`.

    `admin` is HAProxy's stats socket, where the test reads what HAProxy
    thinks of each relay (`server_states`) instead of guessing from time.
    """
    sections = shipped_sections(CONTRIB.read_text())
    backend = [line for line in sections["backend relays"] if not line.startswith("server ")]
    backend += [
        f"server relay-{i} 127.0.0.1:{port} check" for i, (_host, port) in enumerate(servers)
    ]
    lines = ["global", "    maxconn 2000", f"    stats socket {admin} level admin", "defaults"]
    lines += [f"    {line}" for line in sections["defaults"]]
    lines += ["frontend clients", f"    bind unix@{socket}", "    default_backend relays"]
    lines += ["backend relays"] + [f"    {line}" for line in backend]
    return "\n".join(lines) + "\n"


@attrs.frozen
class Haproxy:
    """A running HAProxy: its clients' socket and its stats socket."""

    socket: Path
    admin: Path

    async def server_states(self) -> dict[str, int]:
        """Each relay server's operational state (2 = running, 0 = stopped)."""
        stream = await trio.open_unix_socket(str(self.admin))
        async with stream:
            await stream.send_all(b"show servers state relays\n")
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
        states: dict[str, int] = {}
        for line in data.decode().splitlines()[1:]:
            fields = line.split()
            if line.startswith("#") or len(fields) < 6:
                continue
            states[fields[3]] = int(fields[5])  # srv_name, srv_op_state
        return states

    async def wait_state(self, server: str, running: bool) -> None:
        """Poll the stats socket until `server` is (or is not) running (the caller bounds it)."""
        while True:
            if ((await self.server_states()).get(server) == 2) == running:
                return
            await trio.sleep(0.05)


@asynccontextmanager
async def run_haproxy(servers: list[tuple[str, int]]) -> AsyncIterator[Haproxy]:
    """HAProxy balancing `servers` (host, port) as relay-0, relay-1...; serving on a Unix socket."""
    binary = haproxy_binary()
    base = Path(tempfile.mkdtemp(prefix="modelrelay-haproxy-"))
    socket = base / "front.sock"
    admin = base / "admin.sock"
    config = base / "haproxy.cfg"
    config.write_text(fleet_config(socket, admin, servers))
    process = await trio.lowlevel.open_process(
        [binary, "-db", "-f", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    output: list[bytes] = []

    async def pump() -> None:
        assert process.stderr is not None
        async for data in process.stderr:  # read, so haproxy never blocks on it
            output.append(data)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            with trio.fail_after(20):
                while not (socket.exists() and admin.exists()):  # bound at start
                    if process.poll() is not None:
                        await trio.sleep(0.1)  # let the pump read its last words
                        detail = b"".join(output).decode(errors="replace")
                        raise AssertionError(f"haproxy exited {process.returncode}: {detail}")
                    await trio.sleep(0.02)
            try:
                yield Haproxy(socket, admin)
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()
                with trio.move_on_after(5):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
        shutil.rmtree(base, ignore_errors=True)
