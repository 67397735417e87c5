"""One agent serving several relays with one concurrency budget.

`agent run --proxy-url https://a,https://b` keeps one session to each relay,
each with its own reconnect loop and backoff (a `Daemon` per relay, run side
by side by `Fleet`), and one `Budget` (agent/budget.py) across all of them: the GPU box has
`--max-concurrency` slots, not that many per relay.

Each relay only counts what it sent, so one may offer a request while the
others hold every slot. The session then refuses it at once with the agent's
refusal marker and the code `fleet_busy` (wire.REFUSED_FLEET_BUSY, when the
relay agreed the `fleet` capability; `worker_busy` otherwise). Our relay
requeues such a request without counting a failure or lowering the worker's
capacity, and routes that worker nothing more until it hears of room: the
budget remembers each session it refused for (`owe`) and, when a slot
frees, wakes each to send its relay an unsolicited `pong` whose
`current_load` is the budget's. Every pong counts work from every relay.

Relays never talk to each other; nothing here needs them to.

Task tree::

    Fleet.run
    └── nursery
        ├── Daemon.run (relay a)   reconnect loop → Session.run
        └── Daemon.run (relay b)   reconnect loop → Session.run
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import attrs
import trio

from agent.backoff import BackoffTracker
from agent.budget import Budget
from agent.daemon import Daemon

if TYPE_CHECKING:
    from agent.session import Session

__all__ = ["Fleet"]

log = logging.getLogger(__name__)


@attrs.define(eq=False)
class Fleet(Daemon):
    """The agent's daemon when it serves several relays: one `Daemon` per relay.

    It is a `Daemon` to its callers (run_agent's signal handling, the desktop
    tray, llamafile serve): `run`, `stop`, `session` and `wait_registered`
    mean the same for the fleet as a whole. Its own reconnect loop is never
    used; each member has its own, with its own backoff.

    Attributes:
        members: One daemon per relay in `config.relays`, in that order.
    """

    members: tuple[Daemon, ...] = attrs.field(default=(), init=False)

    def __attrs_post_init__(self) -> None:
        budget = self.budget if self.budget is not None else Budget(self.config.max_concurrency)
        self.budget = budget
        self.members = tuple(
            Daemon(
                self.config.for_relay(url),
                self.backend,
                self.catalog,
                BackoffTracker(self.config.backoff),
                connect=self.connect,
                observer=self.observer,
                budget=budget,
            )
            for url in self.config.relays
        )

    @property
    def session(self) -> Session | None:
        """A registered session if there is one, else any open one, else None."""
        sessions = [m.session for m in self.members if m.session is not None]
        registered = [s for s in sessions if s.registered]
        chosen = registered or sessions
        return chosen[0] if chosen else None

    async def wait_registered(self) -> Session:
        """Wait until a session to any relay is registered, and return it."""
        found: list[Session] = []
        async with trio.open_nursery() as nursery:
            for member in self.members:

                async def one(member: Daemon = member) -> None:
                    found.append(await member.wait_registered())
                    nursery.cancel_scope.cancel()

                nursery.start_soon(one)
        return found[0]

    def stop(self) -> None:
        """Drain every relay's session, then make `run` return."""
        for member in self.members:
            member.stop()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every member's reconnect loop until all have stopped."""
        log.info(
            "serving several relays with one budget",
            extra={
                "relays": [m.config.relay_display for m in self.members],
                "max_concurrency": self.config.max_concurrency,
            },
        )
        async with trio.open_nursery() as nursery:
            for member in self.members:
                await nursery.start(member.run)
            task_status.started()
