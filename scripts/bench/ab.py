"""Relay + 1 agent, this tree against another commit, in interleaved rounds.

    .venv/bin/python scripts/bench/ab.py --baseline 4aae351 --rounds 6
    .venv/bin/python scripts/bench/ab.py --baseline HEAD --rounds 6   # A/A: the noise

`run.py --baseline` runs each side once, always this tree first. On this
shared 2-core machine that is not enough to tell a 5 % change from noise:
the same code run twice in one run differed by up to 0.05 ms of relay CPU
per request and 15 % of throughput, and the side that ran second did better
more often than not. This script runs the two sides in ABBA order (so each
goes first as often as second), each round a fresh relay and agent with the
same warm-up and load as `make bench` (c=64 for throughput and CPU per
request, c=1 for latency), and reports the median of each figure per side,
its spread (min-max), the difference of the medians, and the median of the
paired differences (each run against the other side's run next to it in
time, so a machine that speeds up or slows down mid-run moves both). Run it with
``--baseline HEAD`` (the same code on both sides) to see how far apart two
identical sides land: a difference smaller than that is noise.

Bounded like every load here: each wrk run stops at its request cap or
after its seconds, whichever comes first; no network beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procutil
import setups
from run import FULL, QUICK, Bench, export_tree, machine_info

RESULTS_DIR = setups.ROOT / "bench-results"

# (label, format) of each compared figure, as `figures` names them.
FIGURES: list[tuple[str, str]] = [
    ("relay CPU per request (ms)", "{:.3f}"),
    ("agent CPU per request (ms)", "{:.3f}"),
    ("throughput c=64 (req/s)", "{:.0f}"),
    ("latency c=1 p50 (ms)", "{:.3f}"),
    ("latency c=1 p99 (ms)", "{:.3f}"),
]
LABELS = [label for label, _ in FIGURES]


def figures(c64: dict[str, Any], c1: dict[str, Any]) -> dict[str, float]:
    """The compared figures of one side's round."""
    requests = c64["requests"] or 1
    return {
        "relay CPU per request (ms)": c64["cpu_s"]["front"] / requests * 1000,
        "agent CPU per request (ms)": c64["cpu_s"]["agents"] / requests * 1000,
        "throughput c=64 (req/s)": c64["rps"],
        "latency c=1 p50 (ms)": c1["p50"] / 1000,
        "latency c=1 p99 (ms)": c1["p99"] / 1000,
    }


def order(rounds: int) -> list[str]:
    """ABBA ABBA ...: each side runs first in half the rounds."""
    pattern = ["relay1", "relay1base", "relay1base", "relay1"]
    return [pattern[i % 4] for i in range(2 * rounds)]


def paired(sequence: list[tuple[str, dict[str, float]]], label: str) -> float | None:
    """Median over neighbouring runs (1-2, 3-4, ...: one of each side) of this ÷ baseline - 1."""
    changes = []
    for first, second in zip(sequence[::2], sequence[1::2], strict=False):
        pair = dict([first, second])
        here, there = pair["relay1"][label], pair["relay1base"][label]
        if there:
            changes.append(here / there - 1)
    return statistics.median(changes) if changes else None


def render(ref: str, sequence: list[tuple[str, dict[str, float]]]) -> str:
    lines = [
        f"| figure | this tree: median (min-max) | {ref}: median (min-max) "
        "| difference of medians | paired difference |",
        "|---|---|---|---|---|",
    ]
    for label, fmt in FIGURES:
        here = [got[label] for name, got in sequence if name == "relay1"]
        there = [got[label] for name, got in sequence if name == "relay1base"]
        a, b = statistics.median(here), statistics.median(there)
        spread_a = f"{fmt.format(min(here))}-{fmt.format(max(here))}"
        spread_b = f"{fmt.format(min(there))}-{fmt.format(max(there))}"
        change = f"{(a - b) / b * 100:+.1f} %" if b else "-"
        pair = paired(sequence, label)
        pair_text = f"{pair * 100:+.1f} %" if pair is not None else "-"
        lines.append(
            f"| {label} | {fmt.format(a)} ({spread_a}) | {fmt.format(b)} ({spread_b}) "
            f"| {change} | {pair_text} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", metavar="REF", required=True, help="the commit to compare")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per side (default 6)")
    parser.add_argument("--quick", action="store_true", help="make bench's --quick counts")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    info = machine_info([".venv/bin/python", "scripts/bench/ab.py", *argv])
    sequence: list[tuple[str, dict[str, float]]] = []  # (side, figures), in the order run
    with tempfile.TemporaryDirectory(prefix="modelrelay-ab-") as tmp:
        work = Path(tmp)
        tree = export_tree(args.baseline, work / "baseline")
        bench = Bench(argparse.Namespace(quick=args.quick), work)
        try:
            for n, name in enumerate(order(args.rounds), 1):
                setup = setups.start(name, bench.backend, work, baseline=tree)
                try:
                    c64 = bench.sc_c64(setup)
                    c1 = bench.sc_c1(setup)
                finally:
                    setup.stop()
                got = figures(c64, c1)
                sequence.append((name, got))
                side = "this tree" if name == "relay1" else args.baseline
                print(
                    f"{n:2d}/{2 * args.rounds} {side:>12s}: "
                    + ", ".join(f"{k.split(' (')[0]} {v:.3f}" for k, v in got.items()),
                    flush=True,
                )
        finally:
            procutil.stop_all()
    table = render(args.baseline, sequence)
    print()
    print(table)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = RESULTS_DIR / f"ab-{stamp}.json"
    params = QUICK if args.quick else FULL
    out.write_text(json.dumps({"machine": info, "params": params, "sequence": sequence}, indent=1))
    print(f"raw figures: {out.relative_to(setups.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
