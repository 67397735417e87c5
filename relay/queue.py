"""The bounded FIFO of requests waiting for a worker.

Pure bookkeeping, no trio: the hub decides when to look (a slot freed, a
worker registered or changed its models) and the request's own task owns the
waiting (its cancel scope enforces the queue timeout and removes it when the
client leaves). Requeued requests — their worker was lost before any byte
reached the client — go to the head, ahead of every fresh arrival.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["PendingQueue"]

T = TypeVar("T")


class PendingQueue(Generic[T]):
    """Waiting requests in dispatch order; O(1) push and removal.

    Args:
        max_len: fresh arrivals beyond this many waiting are refused
            (0 = unbounded). Requeued requests are never refused: they were
            accepted once already.
    """

    __slots__ = ("_fresh", "_max_len", "_requeued")

    def __init__(self, max_len: int) -> None:
        self._max_len = max_len
        # dicts keep insertion order and remove in O(1): a FIFO that a
        # cancelled waiter can leave from the middle.
        self._requeued: dict[T, None] = {}
        self._fresh: dict[T, None] = {}

    def __len__(self) -> int:
        return len(self._requeued) + len(self._fresh)

    def __iter__(self) -> Iterator[T]:
        yield from list(self._requeued)
        yield from list(self._fresh)

    @property
    def full(self) -> bool:
        return self._max_len > 0 and len(self) >= self._max_len

    def push(self, item: T, *, requeued: bool = False) -> bool:
        """Add `item`; False if the queue is full (fresh arrivals only)."""
        if requeued:
            self._requeued[item] = None
            return True
        if self.full:
            return False
        self._fresh[item] = None
        return True

    def discard(self, item: T) -> None:
        self._requeued.pop(item, None)
        self._fresh.pop(item, None)

    def take_first(self, accept: Callable[[T], bool]) -> T | None:
        """Remove and return the oldest item `accept` says yes to."""
        for bucket in (self._requeued, self._fresh):
            for item in bucket:
                if accept(item):
                    del bucket[item]
                    return item
        return None

    def drain(self) -> list[T]:
        """Remove and return everything, in order."""
        items = [*self._requeued, *self._fresh]
        self._requeued.clear()
        self._fresh.clear()
        return items
