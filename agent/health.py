"""Whether the backend answers: marked down by a failed connect, probed back up.

A job whose backend connection is refused, not made within the connect
timeout, or reset before any byte of an answer, marks the backend down
(`BackendHealth.mark_down`) and refuses its request to the relay, which
requeues it on another worker. While the backend is down the session offers
the relay no models (a ``models_update`` with an empty list: the protocol's
own way of saying "route nothing here"), refuses what still arrives, and
probes the backend with `probe` after each step of `probe_delay` (0.5 s
doubling to 10 s). The first probe that gets any HTTP answer marks it up
again and the session offers its models again.

The state lives on the `Backend` (shared by every relay session), so a
reconnecting agent registers with what it knows.
"""

import logging
from collections.abc import Awaitable, Callable

import attrs
import trio

from agent.config import redact_url
from agent.errors import BackendError
from wire import REFUSED_BACKEND_DOWN

__all__ = [
    "PROBE_INITIAL_SECS",
    "PROBE_MAX_SECS",
    "REFUSED_BACKEND_DOWN",
    "BackendHealth",
    "probe",
    "probe_delay",
]

log = logging.getLogger(__name__)

PROBE_INITIAL_SECS = 0.5
PROBE_MAX_SECS = 10.0


def probe_delay(attempt: int) -> float:
    """Seconds before probe number `attempt` (1-based): 0.5 s doubling to 10 s."""
    exponent = min(max(attempt, 1) - 1, 16)
    return min(PROBE_INITIAL_SECS * 2.0**exponent, PROBE_MAX_SECS)


@attrs.define(eq=False)
class BackendHealth:
    """Owns whether the backend is taken to answer, and wakes whoever waits on a change.

    Attributes:
        healthy: False from a failed connect until a probe gets an answer.
        reason: Why it was marked down (for logs and the refusal), else None.
        changed: Set (and replaced) at every change of `healthy`.
    """

    healthy: bool = True
    reason: str | None = None
    changed: trio.Event = attrs.field(factory=trio.Event)

    def mark_down(self, reason: str, backend_url: str) -> None:
        """The backend did not answer a connect: stop offering its models."""
        if not self.healthy:
            return
        self.healthy = False
        self.reason = reason
        log.warning(
            "backend unreachable: offering no models until it answers again",
            extra={"backend": redact_url(backend_url), "error": reason},
        )
        self._changed()

    def mark_up(self, backend_url: str) -> None:
        """A probe got an answer: offer the models again."""
        if self.healthy:
            return
        self.healthy = True
        self.reason = None
        log.info("backend answers again: offering its models", extra={"backend": backend_url})
        self._changed()

    def _changed(self) -> None:
        event, self.changed = self.changed, trio.Event()
        event.set()


async def probe(get: Callable[[str], Awaitable[tuple[int, bytes]]]) -> bool:
    """Whether the backend answers HTTP at all (any status counts).

    Args:
        get: The backend's ``get`` (``Backend.get``); called with ``/v1/models``.
    """
    try:
        await get("/v1/models")
    except BackendError:
        return False
    return True
