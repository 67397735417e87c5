"""A throwaway PostgreSQL cluster for the key-store tests.

Debian's `postgresql` package (`make deps-system`) ships `initdb` and
`pg_ctl` under /usr/lib/postgresql/<version>/bin. The cluster lives in a
fresh temporary directory and listens on a Unix socket there only (no TCP
port at all), so it never collides with anything else on the machine. As
root (CI runs as root, and initdb refuses root) the server runs as the
`postgres` user the package creates.

Without a server or the psycopg driver the tests are skipped with a loud
reason, except under CI (`CI=true`), where that is a failure: CI must test
PostgreSQL for real.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["PgCluster", "pg_cluster_or_skip"]

_PORT = 5432  # only names the socket file inside our private directory


@attrs.frozen
class PgCluster:
    """A running cluster; `url(db)` is a libpq URL for one of its databases."""

    socket_dir: Path

    def url(self, database: str = "postgres") -> str:
        host = urllib.parse.quote(str(self.socket_dir), safe="")
        return f"postgresql://postgres@{host}:{_PORT}/{database}"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL key-store tests SKIPPED: {reason}")


def _bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    return Path(candidates[-1]).parent if candidates else None


def pg_cluster_or_skip() -> Iterator[PgCluster]:
    """Start a cluster for the session; skip (or fail under CI) when impossible."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable(
            "the psycopg driver is not installed (pip install 'modelrelay-server[postgres]')"
        )
    bin_dir = _bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        _unavailable("no PostgreSQL server binaries (apt-get install postgresql)")
        raise AssertionError("unreachable")
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:
        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no 'postgres' user to run the server as")
            raise AssertionError("unreachable") from None
        run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    base = Path(tempfile.mkdtemp(prefix="modelrelay-pg-"))
    data = base / "data"
    if run_as:
        os.chown(base, run_as["user"], run_as["group"])
    try:
        subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, timeout=120, cwd=base, **run_as,
        )  # fmt: skip
        options = f"-k {base} -c listen_addresses='' -p {_PORT} -c fsync=off"
        subprocess.run(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-t", "60",
             "-l", str(base / "server.log"), "start"],
            check=True, capture_output=True, timeout=90, cwd=base, **run_as,
        )  # fmt: skip
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        output = getattr(exc, "stderr", b"") or b""
        log = base / "server.log"
        detail = output.decode(errors="replace")
        if log.exists():
            detail += log.read_text(errors="replace")[-2000:]
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"could not start a PostgreSQL cluster: {exc}\n{detail}", pytrace=False)
    try:
        yield PgCluster(base)
    finally:
        subprocess.run(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True, timeout=60, cwd=base, **run_as,
        )  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)
