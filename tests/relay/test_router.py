"""Routing policy and the pending queue: pure logic, no I/O."""

from __future__ import annotations

import attrs

from relay.queue import PendingQueue
from relay.router import RoundRobin, choose, serves


@attrs.define
class W:
    name: str
    models: frozenset[str]
    in_flight: int = 0
    max_concurrent: int = 1
    draining: bool = False
    ejected: bool = False

    @property
    def unavailable(self) -> bool:
        return self.draining or self.ejected


def w(name: str, *models: str, **kw: object) -> W:
    return W(name, frozenset(models), **kw)  # type: ignore[arg-type]


def test_only_workers_acked_for_the_model() -> None:
    a, b = w("a", "m1"), w("b", "m2")
    for _ in range(5):
        assert choose([a, b], "m2", {"m1", "m2"}, RoundRobin()) is b


def test_lowest_load_wins() -> None:
    busy = w("busy", "m", in_flight=3, max_concurrent=4)
    idle = w("idle", "m", in_flight=1, max_concurrent=4)
    assert choose([busy, idle], "m", {"m"}, RoundRobin()) is idle


def test_load_is_relative_to_capacity() -> None:
    big = w("big", "m", in_flight=2, max_concurrent=8)  # 25 %
    small = w("small", "m", in_flight=1, max_concurrent=2)  # 50 %
    assert choose([small, big], "m", {"m"}, RoundRobin()) is big


def test_ties_round_robin() -> None:
    a, b, c = w("a", "m"), w("b", "m"), w("c", "m")
    rr = RoundRobin()
    picks = [choose([a, b, c], "m", {"m"}, rr).name for _ in range(6)]  # type: ignore[union-attr]
    assert picks == ["a", "b", "c", "a", "b", "c"]


def test_ejected_workers_are_skipped() -> None:
    ejected, ok = w("ejected", "m", ejected=True), w("ok", "m")
    for _ in range(3):
        assert choose([ejected, ok], "m", {"m"}, RoundRobin()) is ok
    assert choose([ejected], "m", {"m"}, RoundRobin()) is None


def test_full_and_draining_workers_are_skipped() -> None:
    full = w("full", "m", in_flight=1)
    draining = w("draining", "m", draining=True)
    assert choose([full, draining], "m", {"m"}, RoundRobin()) is None


def test_wildcard_takes_only_models_no_worker_names() -> None:
    star = w("star", "*")
    named = w("named", "m1", in_flight=1)
    assert serves(star, "other", {"m1"})
    assert not serves(star, "m1", {"m1"})
    assert choose([star, named], "m1", {"m1"}, RoundRobin()) is None
    assert choose([star, named], "other", {"m1"}, RoundRobin()) is star


def test_queue_is_fifo_with_requeued_first_and_bounded() -> None:
    q: PendingQueue[str] = PendingQueue(max_len=2)
    assert q.push("a")
    assert q.push("b")
    assert not q.push("c")  # full for fresh arrivals
    assert q.push("r", requeued=True)  # never refused
    assert list(q) == ["r", "a", "b"]
    q.discard("a")
    assert q.take_first(lambda item: item != "r") == "b"
    assert q.take_first(lambda item: True) == "r"
    assert len(q) == 0


def test_unbounded_queue() -> None:
    q: PendingQueue[int] = PendingQueue(max_len=0)
    for i in range(1000):
        assert q.push(i)
    assert q.drain() == list(range(1000))
