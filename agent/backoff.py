"""Jittered exponential backoff between relay sessions: pure policy, no I/O.

Two ladders share one tracker:

- normal failures (relay down, dropped socket, protocol error): 1 s doubling
  to 30 s;
- authentication refusals (the relay refused the worker secret): 10 s
  doubling to 60 s, so a box with a wrong secret does not hammer the relay.

Each delay is the ladder's step minus a random share of at most `jitter` of
it, so many agents restarted together spread out, and no delay ever exceeds
the ladder's cap. A session that registered successfully resets both ladders.
"""

import enum
import random

import attrs

from agent.config import Backoff

__all__ = ["BackoffTracker", "FailureKind", "step_delay"]


class FailureKind(enum.Enum):
    """Which ladder a failure climbs."""

    NORMAL = "normal"
    AUTH = "auth"


def step_delay(policy: Backoff, kind: FailureKind, attempt: int, draw: float) -> float:
    """The delay before retry number `attempt` (1-based) after a `kind` failure.

    Args:
        policy: The ladders' parameters.
        kind: Which ladder.
        attempt: How many failures of this kind in a row, counting this one (>= 1).
        draw: A number in [0, 1); 0 gives the full step, values near 1 shave
            off up to `policy.jitter` of it.

    Returns:
        Seconds to wait, in ``[step * (1 - jitter), step]`` where
        ``step = min(initial * 2 ** (attempt - 1), cap)``.
    """
    if kind is FailureKind.AUTH:
        initial, cap = policy.auth_initial_secs, policy.auth_max_secs
    else:
        initial, cap = policy.initial_secs, policy.max_secs
    # Cap the exponent too: 2 ** 10_000 would overflow a float.
    exponent = min(max(attempt, 1) - 1, 62)
    step = min(initial * (2.0**exponent), cap)
    return step * (1.0 - policy.jitter * draw)


@attrs.define(eq=False)
class BackoffTracker:
    """Owns the failure counts of both ladders for one daemon.

    Attributes:
        policy: The ladders' parameters.
        rng: Source of jitter (seeded in tests).
    """

    policy: Backoff
    rng: random.Random = attrs.field(factory=random.Random)
    _normal: int = attrs.field(default=0, init=False)
    _auth: int = attrs.field(default=0, init=False)

    def next_delay(self, kind: FailureKind) -> float:
        """Count one more `kind` failure and return how long to wait before retrying."""
        if kind is FailureKind.AUTH:
            self._auth += 1
            attempt = self._auth
        else:
            self._normal += 1
            attempt = self._normal
        return step_delay(self.policy, kind, attempt, self.rng.random())

    def reset(self) -> None:
        """Forget past failures: the last session registered successfully."""
        self._normal = 0
        self._auth = 0
