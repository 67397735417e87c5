"""`run.py --profile`: where the relay's and the agent's CPU goes, under the bench loads.

Starts the backend and relay + 1 agent, and for each load — c=64
non-streaming (wrk), streaming burst, paced streaming — records the relay
and the agent with ``py-spy record --format raw`` (collapsed stacks, one
file per process and load; speedscope and flamegraph.pl read them) while
the load runs. Then prints, per process and load, the functions with the
most samples: *self* (the sample's innermost frame) and *inclusive* (the
function is anywhere on the stack), as a share of the process's busy
samples (py-spy leaves idle samples out).

Profiling slows the processes down: the figures of a profiled run are not
the table's; only the shares are.
"""

from __future__ import annotations

import collections
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import procutil
import setups
import wrkrun

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _pyspy() -> str:
    here = setups.VENV_BIN / "py-spy"
    found = str(here) if here.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy==0.4.3")
    return found


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m['func']} ({path})"


def parse(
    path: Path,
) -> tuple[int, collections.Counter[str], collections.Counter[str], collections.Counter[str]]:
    """Total samples; self and inclusive counts per function; self counts per file."""
    total = 0
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    files: collections.Counter[str] = collections.Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        if "_bootstrap (threading.py" in stack:
            # A helper thread (the logging QueueListener): idle in Condition.wait,
            # which py-spy counts as busy. Only the trio thread matters here.
            continue
        frames = [_short(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        files[frames[-1].rsplit("(", 1)[-1].rstrip(")").split("/")[0]] += count
        for f in set(frames):
            incl[f] += count
    return total, own, incl, files


def top(path: Path, n: int = 25) -> str:
    total, own, incl, files = parse(path)
    if not total:
        return f"{path.name}: no samples"
    out = [f"### {path.stem}: {total} busy samples", "", "self (innermost frame):", ""]
    out += [f"  {c / total * 100:5.1f}%  {f}" for f, c in own.most_common(n)]
    out += ["", "inclusive (anywhere on the stack):", ""]
    out += [f"  {c / total * 100:5.1f}%  {f}" for f, c in incl.most_common(n + 15)]
    out += ["", "self by top-level package:", ""]
    out += [f"  {c / total * 100:5.1f}%  {f}" for f, c in files.most_common(15)]
    return "\n".join(out)


def _record(pid: int, out: Path, seconds: float, work: Path, name: str) -> procutil.Child:
    return procutil.Child(
        f"py-spy-{name}",
        [
            _pyspy(),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--duration",
            str(round(seconds)),
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        work,
    )


def top_cprofile(path: Path, n: int = 30) -> str:
    """Shares of CPU time (cProfile with a process_time clock) per function."""
    stats = pstats.Stats(str(path))
    rows = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_cc, _nc, tt, _ct, _callers) in rows.values())
    if not total:
        return f"{path.name}: no samples"

    def name(key: tuple[str, int, str]) -> str:
        return _short(f"{key[2]} ({key[0]}:{key[1]})")

    by_self = sorted(rows.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    by_cum = sorted(rows.items(), key=lambda kv: kv[1][3], reverse=True)[: n + 20]
    packages: collections.Counter[str] = collections.Counter()
    for key, (_cc, _nc, tt, _ct, _callers) in rows.items():
        packages[name(key).rsplit("(", 1)[-1].rstrip(")").split("/")[0]] += tt
    out = [
        f"### {path.stem} (cProfile, CPU clock): {total:.2f} CPU s in profiled functions",
        "",
        "self (tottime):",
        "",
    ]
    out += [f"  {v[2] / total * 100:5.1f}%  {v[1]:8d} calls  {name(k)}" for k, v in by_self]
    out += ["", "inclusive (cumtime; coroutines count per resume):", ""]
    out += [f"  {v[3] / total * 100:5.1f}%  {name(k)}" for k, v in by_cum]
    out += ["", "self by top-level package:", ""]
    out += [f"  {t / total * 100:5.1f}%  {p}" for p, t in packages.most_common(15)]
    return "\n".join(out)


def main(args: argparse.Namespace, work: Path, outdir: Path) -> int:
    outdir.mkdir(parents=True, exist_ok=True)
    backend = setups.Backend(work)
    use_cprofile = getattr(args, "profiler", "py-spy") == "cprofile"
    seconds = 6 if args.quick else 15
    body = b'{"model":"m","messages":[{"role":"user","content":"Say hello."}]}'
    holder: dict[str, setups.Setup] = {}

    def url() -> str:
        return holder["setup"].url

    def plain(conns: int) -> None:
        backend.profile(kind="json")
        r = wrkrun.run(
            url() + "/v1/chat/completions",
            work,
            body=body,
            key=setups.API_KEY,
            connections=conns,
            duration=seconds,
            max_requests=10**7,
        )
        print(
            f"   c{conns}: {r['requests']} requests, {r['rps']:.0f} req/s (under the profiler)",
            flush=True,
        )

    def big(which: str) -> None:
        pad = b"x" * (1024 * 1024)
        big_body = b'{"model":"m","messages":[{"role":"user","content":"' + pad + b'"}]}'
        if which == "bigreq":
            backend.profile(kind="json")
            payload = big_body
        else:
            backend.profile(kind="json", resp_bytes=1024 * 1024)
            payload = body
        r = wrkrun.run(
            url() + "/v1/chat/completions",
            work,
            body=payload,
            key=setups.API_KEY,
            connections=1,
            duration=seconds,
            max_requests=10**6,
        )
        print(
            f"   {which}: {r['requests']} requests, "
            f"p50 {r['p50'] / 1000:.1f} ms (under the profiler)",
            flush=True,
        )
        backend.profile(kind="json")

    def stream(kind: str) -> None:
        if kind == "burst":
            backend.profile(kind="sse", events=1000, interval=0)
            argv_extra = ["--n", "100000", "--conns", "8"]
        else:
            backend.profile(kind="sse", events=int(seconds / 0.02), interval=0.02)
            argv_extra = ["--n", "64", "--conns", "64"]
        done = subprocess.run(
            [
                sys.executable,
                str(setups.HERE / "loadgen.py"),
                "--scenario",
                "burst",
                "--url",
                url(),
                "--key",
                setups.API_KEY,
                "--time",
                str(seconds),
                *argv_extra,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
        print(f"   {kind}: {done.stdout.strip()[-200:]}", flush=True)
        backend.profile(kind="json")

    loads: list[tuple[str, Callable[[], None]]] = [
        ("c1", lambda: plain(1)),
        ("c64", lambda: plain(64)),
        ("burst", lambda: stream("burst")),
        ("paced", lambda: stream("paced")),
        ("bigreq", lambda: big("bigreq")),
        ("bigresp", lambda: big("bigresp")),
    ]
    reports = []
    only = set(getattr(args, "profile_loads", "").split(",")) - {""}
    try:
        profdir = outdir / "cprofile"
        if use_cprofile:
            profdir.mkdir(exist_ok=True)
            holder["setup"] = setups.Relay(backend, work, 1, cprofile_dir=profdir)
        else:
            holder["setup"] = setups.start("relay1", backend, work)
        for name, run_load in loads:
            if only and name not in only:
                continue
            tool = "cProfile" if use_cprofile else "py-spy"
            print(f"== profiling relay + agent under {name} ({seconds}s, {tool})", flush=True)
            if use_cprofile:
                setup = holder["setup"]
                pids = {"relay": setup.front[0].pid, "agent": setup.agents[0].pid}
                for pid in pids.values():
                    os.kill(pid, signal.SIGUSR1)
                time.sleep(0.3)
                run_load()
                for pid in pids.values():
                    os.kill(pid, signal.SIGUSR2)
                time.sleep(1.0)
                for role, prof in (
                    ("relay", profdir / "relay.prof"),
                    ("agent", profdir / "agent0.prof"),
                ):
                    if prof.exists():
                        renamed = outdir / f"{name}-{role}.prof"
                        prof.rename(renamed)
                        reports.append(top_cprofile(renamed))
                    else:
                        reports.append(f"{name}-{role}: no stats written")
                continue
            setup = holder["setup"]
            relay, agent = setup.front[0], setup.agents[0]
            files = {}
            spies = []
            for role, child in (("relay", relay), ("agent", agent)):
                files[role] = outdir / f"{name}-{role}.txt"
                spies.append(_record(child.pid, files[role], seconds + 1, work, f"{name}-{role}"))
            time.sleep(0.5)
            run_load()
            for spy in spies:
                spy.proc.wait(30)
                spy.stop()
            for role in ("relay", "agent"):
                if files[role].exists():
                    reports.append(top(files[role]))
                else:
                    reports.append(
                        f"{files[role].name}: py-spy wrote nothing (see {spies[0].log_path})"
                    )
    finally:
        if "setup" in holder:
            holder["setup"].stop()
        procutil.stop_all()
    text = "\n\n".join(reports)
    (outdir / "summary.txt").write_text(text + "\n")
    print(text)
    print(f"\nprofiles and summary: {outdir}")
    return 0
