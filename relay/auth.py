"""Worker-secret checks with a per-IP failure limit.

Secrets are compared in constant time. After `limit` failures from one IP
within `window` seconds, further *failing* attempts from it are answered 429
until the window passes; a correct secret is always accepted (several agents
may share a box with one bad one among them).
"""

from __future__ import annotations

import hmac
import math
from collections import deque

import attrs

__all__ = ["AuthVerdict", "WorkerAuth"]

_MAX_TRACKED_IPS = 10_000


@attrs.frozen
class AuthVerdict:
    status: int  # 200 ok, 401 bad secret, 429 rate limited
    retry_after: int | None = None


@attrs.define(eq=False)
class WorkerAuth:
    secret: bytes = attrs.field(repr=False)
    limit: int = 10
    window: float = 60.0
    _failures: dict[str, deque[float]] = attrs.field(factory=dict)

    def check(self, ip: str, presented: str | None, now: float) -> AuthVerdict:
        """Judge one upgrade attempt from `ip` at time `now`."""
        if presented is not None and hmac.compare_digest(
            presented.encode("utf-8", "surrogateescape"), self.secret
        ):
            return AuthVerdict(200)
        failures = self._failures.get(ip)
        if failures is not None:
            while failures and failures[0] <= now - self.window:
                failures.popleft()
            if len(failures) >= self.limit:
                # Not recorded: the window is not extended by the refusals.
                return AuthVerdict(
                    429, retry_after=max(1, math.ceil(failures[0] + self.window - now))
                )
        else:
            if len(self._failures) >= _MAX_TRACKED_IPS:
                self._prune(now)
            failures = self._failures.setdefault(ip, deque())
        failures.append(now)
        return AuthVerdict(401)

    def _prune(self, now: float) -> None:
        stale = [ip for ip, f in self._failures.items() if not f or f[-1] <= now - self.window]
        for ip in stale:
            del self._failures[ip]
        if len(self._failures) >= _MAX_TRACKED_IPS:  # all fresh: forget the oldest half
            for ip in list(self._failures)[: _MAX_TRACKED_IPS // 2]:
                del self._failures[ip]
