"""Pure routing policy: which worker takes a request.

No I/O and no trio: the hub calls `choose()` with its current view of the
workers. A worker is eligible for a model when it was acked for that model (or
advertises `*` and no worker names the model), has a free slot and is not
unavailable (draining, or ejected for a failing backend). Among the eligible,
the lowest load wins, where load is the relay's own count of requests in
flight over the worker's capacity (never what the worker claims); ties go
round-robin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

__all__ = ["WILDCARD", "Candidate", "RoundRobin", "choose", "serves"]

WILDCARD = "*"


class Candidate(Protocol):
    @property
    def models(self) -> frozenset[str]: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def max_concurrent(self) -> int: ...
    @property
    def unavailable(self) -> bool: ...


def serves(worker: Candidate, model: str, named: Collection[str]) -> bool:
    """Whether `worker` may be routed `model`, busy or not.

    Args:
        worker: the candidate.
        model: the requested model.
        named: every model some connected worker names explicitly.
    """
    if model in worker.models:
        return True
    return WILDCARD in worker.models and model not in named


class RoundRobin:
    """Tie-breaker state: a counter that advances on every tied choice."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def pick(self, n: int) -> int:
        index = self._next % n
        self._next += 1
        return index


W = TypeVar("W", bound=Candidate)


def choose(workers: Iterable[W], model: str, named: Collection[str], rr: RoundRobin) -> W | None:
    """The worker that should take a request for `model` now, or None."""
    best: list[W] = []
    best_load = 2.0
    for w in workers:
        if w.unavailable or w.in_flight >= w.max_concurrent or not serves(w, model, named):
            continue
        load = w.in_flight / w.max_concurrent
        if load < best_load:
            best, best_load = [w], load
        elif load == best_load:
            best.append(w)
    if not best:
        return None
    return best[0] if len(best) == 1 else best[rr.pick(len(best))]
