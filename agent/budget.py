"""The agent's concurrency budget: `--max-concurrency` slots for every relay at once.

A session takes a slot for each request it accepts and frees it when the job
ends. With one relay that is the same as counting its jobs; with several
(agent/fleet.py) the sessions share one budget, so the backend never runs
more than `--max-concurrency` requests whatever the relays send. Plain
synchronous bookkeeping on the trio thread: no lock, no task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Budget"]


@attrs.define(eq=False)
class Budget:
    """The agent's slots, shared by every relay session.

    Attributes:
        limit: `--max-concurrency`.
        in_use: Requests running now, from every relay.
    """

    limit: int
    in_use: int = 0
    # Sessions that refused a request for want of a slot: told once when one frees.
    _owed: set[Callable[[], None]] = attrs.field(factory=set, init=False)

    def take(self) -> bool:
        """Take a slot for a request; False when every slot is in use."""
        if self.in_use >= self.limit:
            return False
        self.in_use += 1
        return True

    def release(self) -> None:
        """A request ended: free its slot and wake every session that refused one."""
        self.in_use -= 1
        if self._owed:
            owed, self._owed = self._owed, set()
            for wake in owed:
                wake()

    def owe(self, wake: Callable[[], None]) -> None:
        """Call `wake` (synchronous, never blocking) when the next slot frees."""
        self._owed.add(wake)
