"""``agent llamafile doctor``: every check that explains why a model would not run.

Each check answers ok / warn / fail with one line of detail; any fail makes
the command exit 1. The checks are plain functions of the state directory,
the catalog, the hardware facts and the settings, so a test can point them at
a real temporary directory and see each verdict.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import attrs

from agent.llamafile.catalog import Catalog, load_catalog
from agent.llamafile.errors import LlamafileError
from agent.llamafile.hardware import Hardware, detect
from agent.llamafile.paths import Home
from agent.llamafile.settings import Settings
from agent.llamafile.state import live_states
from agent.llamafile.units import human_bytes

__all__ = ["Check", "run_checks"]


@attrs.frozen
class Check:
    """One check's verdict.

    Attributes:
        name: Short and stable (scripts read ``--json``).
        status: ``ok``, ``warn`` or ``fail``.
        detail: One line.
    """

    name: str
    status: str
    detail: str


def _data_dir(home: Home) -> Check:
    try:
        home.ensure()
        with tempfile.NamedTemporaryFile(dir=home.root, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check("data_dir", "fail", f"{home.root} is not writable: {exc.strerror}")
    return Check("data_dir", "ok", f"{home.root} is writable")


def _disk(home: Home, catalog: Catalog | None) -> Check:
    try:
        free = shutil.disk_usage(home.models if home.models.exists() else home.root).free
    except OSError as exc:
        return Check("disk_space", "fail", f"cannot measure free space: {exc.strerror}")
    smallest = min((m.size_bytes for m in catalog.models), default=0) if catalog else 0
    if smallest and free < smallest:
        return Check(
            "disk_space",
            "fail",
            f"{human_bytes(free)} free: less than the smallest model ({human_bytes(smallest)})",
        )
    if free < 5 * 10**9:
        return Check("disk_space", "warn", f"{human_bytes(free)} free: room for small models only")
    return Check("disk_space", "ok", f"{human_bytes(free)} free in {home.root}")


def _catalog(home: Home) -> tuple[Check, Catalog | None]:
    try:
        catalog = load_catalog(home.fetched_catalog, home.user_catalog)
    except LlamafileError as exc:
        return Check("catalog", "fail", exc.message), None
    sources = sorted(set(catalog.sources.values()))
    return (
        Check(
            "catalog",
            "ok",
            f"{len(catalog.models)} models, revision {catalog.revision} ({', '.join(sources)})",
        ),
        catalog,
    )


def _hardware() -> tuple[Check, Hardware | None]:
    try:
        hardware = detect()
    except ValueError as exc:
        return Check("hardware", "fail", str(exc)), None
    if hardware.ram_gb <= 0:
        return Check("hardware", "warn", "could not read the RAM size"), hardware
    gpus = ", ".join(f"{g.name} ({g.vram_gb:.1f} GB)" for g in hardware.gpus) or "no GPU: CPU only"
    return Check(
        "hardware", "ok", f"{hardware.ram_gb:.1f} GB RAM; {gpus} [{hardware.source}]"
    ), hardware


def _gpu_tools(hardware: Hardware | None) -> Check:
    tools = [t for t in ("nvidia-smi", "rocm-smi") if shutil.which(t)]
    if hardware is not None and hardware.gpus:
        return Check(
            "gpu",
            "ok",
            f"{len(hardware.gpus)} GPU(s) usable ({', '.join(tools) or 'unified memory'})",
        )
    if tools:
        return Check(
            "gpu", "warn", f"{', '.join(tools)} found but reports no GPU: models run on the CPU"
        )
    return Check("gpu", "ok", "no GPU tools (nvidia-smi, rocm-smi): models run on the CPU")


def _exec(home: Home) -> Check:
    if sys.platform == "win32":  # pragma: no cover - Windows only
        return Check("exec", "ok", "Windows: llamafiles run once renamed to .exe")
    try:
        home.models.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=home.models, prefix=".doctor-", suffix=".sh")
        with os.fdopen(fd, "w") as handle:
            handle.write("#!/bin/sh\nexit 0\n")
        os.chmod(name, 0o755)
        try:
            code = subprocess.run([name], timeout=10, check=False).returncode
        finally:
            os.unlink(name)
    except PermissionError:
        return Check(
            "exec", "fail", f"{home.models} does not allow running programs (mounted noexec?)"
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return Check("exec", "fail", f"cannot run a program from {home.models}: {exc}")
    if code != 0:
        return Check("exec", "fail", f"a test program in {home.models} exited {code}")
    return Check("exec", "ok", f"programs run from {home.models}")


def _ape(binfmt: Path = Path("/proc/sys/fs/binfmt_misc")) -> Check:
    # WINE or WSL's interop registered for "MZ" files grab llamafiles (which
    # start with MZ) before the shell can run them.
    if not sys.platform.startswith("linux"):
        return Check("ape", "ok", "not Linux: llamafiles run directly")
    hijackers = [
        p.name
        for p in (binfmt.iterdir() if binfmt.is_dir() else ())
        if p.name.lower() in ("wine", "wsl", "wslinterop", "windows", "windowsexe")
    ]
    if hijackers:
        return Check(
            "ape",
            "warn",
            f"binfmt_misc entries {', '.join(hijackers)} may run llamafiles as Windows programs; "
            "see docs/llamafile.md (APE loader)",
        )
    return Check("ape", "ok", "no binfmt_misc entry claims llamafiles")


def _models(home: Home, catalog: Catalog | None) -> Check:
    if catalog is None or not home.models.is_dir():
        return Check("models", "ok", "none downloaded")
    have, bad, parts = [], [], []
    for model in catalog.models:
        path = home.models / model.file
        if path.exists():
            have.append(model.slug)
            if not os.access(path, os.X_OK):
                bad.append(f"{model.slug} is not executable")
        if path.with_name(path.name + ".part").exists():
            parts.append(model.slug)
    detail = f"{len(have)} downloaded" + (f" ({', '.join(have)})" if have else "")
    if parts:
        detail += f"; partial downloads (resume with download): {', '.join(parts)}"
    if bad:
        return Check("models", "warn", detail + "; " + "; ".join(bad))
    return Check("models", "ok", detail)


def _running(home: Home) -> Check:
    live, cleaned = live_states(home)
    detail = f"{len(live)} running" + (f" ({', '.join(s.slug for s in live)})" if live else "")
    if cleaned:
        detail += "; " + "; ".join(cleaned)
    return Check("running", "ok", detail)


def _relay(settings: Settings, connect: Callable[[str, int], None]) -> Check:
    url = settings.get("relay-url")
    if not isinstance(url, str):
        return Check(
            "relay", "warn", "no relay-url configured (agent llamafile config set relay-url URL)"
        )
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    try:
        connect(parts.hostname or "", port)
    except OSError as exc:
        return Check("relay", "fail", f"{url} is unreachable: {exc.strerror or exc}")
    secret = (
        "set" if settings.get("worker-secret") or os.environ.get("WORKER_SECRET") else "NOT set"
    )
    status = "ok" if secret == "set" else "warn"
    return Check("relay", status, f"{url} answers; worker secret {secret}")


def _port(settings: Settings) -> Check:
    port = settings.get("port", 0)
    if not isinstance(port, int) or port == 0:
        return Check("port", "ok", "a free port is picked at each start")
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return Check("port", "warn", f"configured port {port} is busy now")
    return Check("port", "ok", f"configured port {port} is free")


def _tcp(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=5):
        pass


def run_checks(
    home: Home, settings: Settings, connect: Callable[[str, int], None] = _tcp
) -> list[Check]:
    """Run every check, in order.

    Args:
        home: The state directory.
        settings: `config` values.
        connect: Opens a TCP connection (the relay check).

    Returns:
        The verdicts.
    """
    checks = [_data_dir(home)]
    catalog_check, catalog = _catalog(home)
    hardware_check, hardware = _hardware()
    checks += [
        catalog_check,
        _disk(home, catalog),
        hardware_check,
        _gpu_tools(hardware),
        _exec(home),
        _ape(),
        _models(home, catalog),
        _running(home),
        _relay(settings, connect),
        _port(settings),
    ]
    return checks
