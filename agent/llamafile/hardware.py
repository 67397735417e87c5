"""What memory this box has for a model: RAM, and VRAM per GPU.

Detection, in order: NVIDIA (``nvidia-smi``), AMD (``rocm-smi``), Apple
Silicon (unified memory: the GPU uses the RAM, ``sysctl hw.memsize``), then
plain RAM (``/proc/meminfo``, ``sysctl``, ``GlobalMemoryStatusEx``, or
``sysconf``). Each probe that fails is skipped, so a box without a GPU
driver is simply a CPU box.

The facts can be given instead of detected: ``$MODELRELAY_HARDWARE`` holds
JSON like ``{"ram_gb": 16, "gpus": [{"vendor": "nvidia", "name": "RTX 4060",
"vram_gb": 8}]}``, for tests and for boxes where detection guesses wrong.
`detect` also takes the command runner, so the parsers are tested on the
tools' real output formats without the tools.
"""

import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import cattrs

__all__ = ["GIB", "HARDWARE_ENV", "Gpu", "Hardware", "Runner", "detect", "from_json"]

GIB = 1024**3
HARDWARE_ENV = "MODELRELAY_HARDWARE"

# Runs a command and returns its stdout, or None when it is missing or fails.
Runner = Callable[[Sequence[str]], str | None]


@attrs.frozen
class Gpu:
    """One GPU.

    Attributes:
        vendor: ``nvidia``, ``amd`` or ``apple``.
        name: The product name the driver reports.
        vram_gb: Its memory in GiB (for Apple: the unified RAM).
    """

    vendor: str
    name: str
    vram_gb: float


@attrs.frozen
class Hardware:
    """The memory facts the fit rule uses.

    Attributes:
        ram_gb: Total RAM in GiB.
        gpus: The GPUs found (empty on a CPU box).
        unified: Whether the GPU shares the RAM (Apple Silicon).
        source: How the facts were found (``detected`` or ``$MODELRELAY_HARDWARE``).
    """

    ram_gb: float
    gpus: tuple[Gpu, ...] = ()
    unified: bool = False
    source: str = "detected"

    @property
    def vram_gb(self) -> float:
        """VRAM across the GPUs (llama.cpp splits a model over several)."""
        return sum(gpu.vram_gb for gpu in self.gpus)


def _run(argv: Sequence[str]) -> str | None:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _nvidia(run: Runner) -> list[Gpu]:
    out = run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"])
    gpus = []
    for line in (out or "").splitlines():
        name, _, mib = line.rpartition(",")
        try:
            gpus.append(Gpu("nvidia", name.strip(), float(mib) / 1024))
        except ValueError:
            continue
    return gpus


def _amd(run: Runner) -> list[Gpu]:
    out = run(["rocm-smi", "--showmeminfo", "vram", "--showproductname", "--json"])
    try:
        cards = json.loads(out) if out else {}
    except ValueError:
        return []
    gpus = []
    for card, info in sorted(cards.items()) if isinstance(cards, dict) else ():
        if not isinstance(info, dict):
            continue
        total = info.get("VRAM Total Memory (B)")
        try:
            vram = int(str(total)) / GIB
        except ValueError:
            continue
        name = str(info.get("Card Series") or info.get("Card series") or card)
        gpus.append(Gpu("amd", name, vram))
    return gpus


def _ram_bytes(run: Runner) -> int:
    if sys.platform.startswith("linux"):
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                match = re.match(r"MemTotal:\s+(\d+) kB", line)
                if match:
                    return int(match.group(1)) * 1024
        except OSError:
            pass
    if sys.platform == "darwin":
        out = run(["sysctl", "-n", "hw.memsize"])
        if out and out.strip().isdigit():
            return int(out.strip())
    if sys.platform == "win32":  # pragma: no cover - Windows only
        import ctypes

        class _Status(ctypes.Structure):
            _fields_ = [
                ("dwLength", ctypes.c_ulong),
                ("dwMemoryLoad", ctypes.c_ulong),
                ("ullTotalPhys", ctypes.c_ulonglong),
                ("ullAvailPhys", ctypes.c_ulonglong),
                ("ullTotalPageFile", ctypes.c_ulonglong),
                ("ullAvailPageFile", ctypes.c_ulonglong),
                ("ullTotalVirtual", ctypes.c_ulonglong),
                ("ullAvailVirtual", ctypes.c_ulonglong),
                ("sullAvailExtendedVirtual", ctypes.c_ulonglong),
            ]

        status = _Status()
        status.dwLength = ctypes.sizeof(_Status)
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
            return int(status.ullTotalPhys)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def from_json(text: str, source: str = f"${HARDWARE_ENV}") -> Hardware:
    """Hardware facts given as JSON (see the module docstring).

    Raises:
        ValueError: The JSON is invalid or lacks ``ram_gb``.
    """
    try:
        data = json.loads(text)
        hardware = cattrs.structure({**data, "source": source}, Hardware)
    except (ValueError, TypeError, cattrs.BaseValidationError) as exc:
        raise ValueError(
            f"{source} must be JSON like "
            '{"ram_gb": 16, "gpus": [{"vendor": "nvidia", "name": "x", "vram_gb": 8}]}'
            f": {exc}"
        ) from None
    return hardware


def detect(
    run: Runner = _run, *, system: str | None = None, machine: str | None = None
) -> Hardware:
    """Find this box's RAM and GPUs (or read ``$MODELRELAY_HARDWARE`` when set).

    Args:
        run: Runs a probe command (tests pass canned outputs).
        system: ``platform.system()`` unless given.
        machine: ``platform.machine()`` unless given.

    Returns:
        The facts.

    Raises:
        ValueError: ``$MODELRELAY_HARDWARE`` is set but invalid.
    """
    given = os.environ.get(HARDWARE_ENV)
    if given:
        return from_json(given)
    system = system or platform.system()
    machine = machine or platform.machine()
    ram_gb = _ram_bytes(run) / GIB
    if system == "Darwin" and machine == "arm64":
        # Unified memory: the GPU draws on the same RAM.
        return Hardware(ram_gb, (Gpu("apple", "Apple Silicon", ram_gb),), unified=True)
    gpus = _nvidia(run) or _amd(run)
    return Hardware(ram_gb, tuple(gpus))
