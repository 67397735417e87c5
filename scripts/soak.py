"""`python scripts/soak.py`: the chaos soak behind docs/reliability.md.

5 agents (SIGKILLed and restarted at random), 2000 mixed streaming and
non-streaming requests at concurrency 64 through one relay, all on 127.0.0.1.
Prints a markdown table; exits 1 if any request was lost or any response
named a backend's address (and, with --backends N --no-agent-kills, if
fewer than 99 % succeeded). `--backends N` also stops and restarts backends.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import trio

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from tests.integration.soak import SoakReport, run_soak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--backends",
        type=int,
        default=1,
        help="more than 1: in-process backends, stopped and restarted one at a time",
    )
    parser.add_argument(
        "--no-agent-kills", action="store_true", help="never SIGKILL agents (backends only)"
    )
    args = parser.parse_args()

    async def bounded() -> SoakReport:
        with trio.fail_after(900):  # a hung soak is a failure, not a wait
            return await run_soak(
                agents=args.agents,
                requests=args.requests,
                concurrency=args.concurrency,
                seed=args.seed,
                backends=args.backends,
                kill_every=None if args.no_agent_kills else (0.3, 1.0),
            )

    report = trio.run(bounded)
    print(report.table())
    for line in report.lost[:20]:
        print("LOST", line)
    for line in report.leaked_addresses[:20]:
        print("ADDRESS LEAKED", line)
    failed = report.lost or report.leaked_addresses
    if args.backends > 1 and args.no_agent_kills and report.success_rate < 0.99:
        failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
