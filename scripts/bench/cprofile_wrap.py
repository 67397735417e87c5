#!/usr/bin/env python3
"""Run `relay` or `agent` with cProfile (CPU clock) switched on and off by signals.

    python cprofile_wrap.py OUT.prof relay serve --listen ...
    python cprofile_wrap.py OUT.prof agent run --proxy-url ...

SIGUSR1 starts profiling, SIGUSR2 stops it and writes OUT.prof (start-up and
shutdown stay out of the figures). `time.process_time` as the timer charges
each function with the CPU it used, not the time it sat runnable waiting for
a core (a sampling profiler on a busy 2-core machine counts that too).
cProfile's own per-call overhead inflates functions that are called very
often; read its shares next to py-spy's.
"""

from __future__ import annotations

import cProfile
import signal
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import FrameType


def main() -> None:
    out, entry, *rest = sys.argv[1:]
    if entry == "relay":
        from relay.cli import main as entry_main
    elif entry == "agent":
        from agent.cli import main as entry_main
    else:
        raise SystemExit(f"unknown entry point {entry!r}")
    prof = cProfile.Profile(time.process_time)

    def start(_signum: int, _frame: FrameType | None) -> None:
        prof.enable()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        prof.disable()
        prof.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = [entry, *rest]
    entry_main()


if __name__ == "__main__":
    main()
