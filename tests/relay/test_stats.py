"""Request statistics: classification, bounded memory, percentile estimates, cost."""

from __future__ import annotations

import random
import sys
import tracemalloc
from typing import TYPE_CHECKING

import pytest

from relay.stats import (
    BUCKET_BOUNDS,
    EXPORTED_BOUNDS,
    OTHER_MODEL,
    ErrorCounts,
    Histogram,
    Stats,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType


def finish(stats: Stats, model: str = "m1", key: str | None = None, **kw: object) -> None:
    stats.started(model, key)
    fields: dict[str, object] = {"status": 200, "duration": 0.1}
    fields.update(kw)
    stats.finished(model, key, **fields)  # type: ignore[arg-type]


def test_bounds_are_sorted_and_exported_ones_exist() -> None:
    assert list(BUCKET_BOUNDS) == sorted(set(BUCKET_BOUNDS))
    assert set(EXPORTED_BOUNDS) <= set(BUCKET_BOUNDS)


def test_classification() -> None:
    stats = Stats()
    finish(stats, status=200, tokens_in=10, tokens_out=20, ttfb=0.01)
    finish(stats, status=404)
    finish(stats, status=502)
    finish(stats, status=429, error="queue_full")
    finish(stats, status=504, error="timeout")
    finish(stats, status=200, client_gone=True)  # a stream the client left
    finish(stats, status=200, requeues=2)
    snap = stats.snapshot()
    m1 = snap.models["m1"]
    assert m1.requests == 7
    assert m1.succeeded == 2
    assert m1.errors == ErrorCounts(
        status_4xx=2, status_5xx=2, queue_full=1, timeouts=1, cancelled=1, requeued=2
    )
    assert (m1.tokens_in, m1.tokens_out) == (10, 20)
    assert m1.latency.count == 7
    assert m1.ttfb.count == 1
    assert m1.in_flight == 0
    assert m1.queue_depth == 0
    assert snap.totals.requests == 7


def test_snapshot_document_layout() -> None:
    """`/admin/stats` as operators read it (docs/operations.md)."""
    stats = Stats()
    finish(stats, key="key_a", tokens_in=1, tokens_out=2, ttfb=0.01)
    stats.rejected(400)
    doc = stats.snapshot(queued=["m1"]).to_json()
    assert list(doc) == ["totals", "models", "keys"]
    m1 = doc["models"]["m1"]
    assert list(m1) == [
        "requests", "succeeded", "errors", "tokens", "latency_ms", "ttfb_ms",
        "queue_depth", "in_flight",
    ]  # fmt: skip
    assert m1["errors"] == {
        "4xx": 0, "5xx": 0, "queue_full": 0, "timeouts": 0, "cancelled": 0, "requeued": 0,
    }  # fmt: skip
    assert m1["tokens"] == {"in": 1, "out": 2, "cache_read": 0, "cache_creation": 0}
    assert list(m1["latency_ms"]) == ["p50", "p90", "p95", "p99", "mean", "count"]
    assert m1["queue_depth"] == 1
    assert doc["totals"]["rejected"] == 1
    assert list(doc["keys"]["key_a"])[-1] == "ttfb_ms"  # no queue figures per key


def test_rejected_count_in_totals_and_key_only() -> None:
    stats = Stats()
    stats.rejected(401)
    stats.rejected(404, "key_1")
    snap = stats.snapshot()
    assert snap.models == {}
    assert snap.totals.rejected == 2
    assert snap.totals.errors.status_4xx == 2
    assert snap.keys["key_1"].requests == 1


def test_in_flight_and_queue_depth() -> None:
    stats = Stats()
    for _ in range(3):
        stats.started("m1", None)
    stats.started("m2", "key_1")
    snap = stats.snapshot(queued=["m1", "m2"])
    assert (snap.models["m1"].queue_depth, snap.models["m1"].in_flight) == (1, 2)
    assert (snap.models["m2"].queue_depth, snap.models["m2"].in_flight) == (1, 0)
    assert (snap.totals.queue_depth, snap.totals.in_flight) == (2, 2)


def test_per_key() -> None:
    stats = Stats()
    finish(stats, key="key_a", tokens_in=5, tokens_out=7)
    finish(stats, key="key_a", status=500)
    finish(stats, key=None)
    keys = stats.snapshot().keys
    assert set(keys) == {"key_a"}
    assert keys["key_a"].requests == 2
    assert (keys["key_a"].tokens_in, keys["key_a"].tokens_out) == (5, 7)
    assert keys["key_a"].errors.status_5xx == 1
    assert keys["key_a"].queue_depth is None


def test_model_tallies_are_capped() -> None:
    # A worker serving "*" lets a client name any model: memory must not follow.
    stats = Stats(max_models=4)
    for i in range(100):
        finish(stats, model=f"model-{i}")
    assert len(stats.models) == 5  # four named, plus the shared overflow tally
    assert stats.models[OTHER_MODEL].requests == 96
    assert stats.snapshot().totals.requests == 100


def test_histogram_memory_is_fixed() -> None:
    hist = Histogram()
    size = len(hist.counts)
    for _ in range(10_000):
        hist.observe(random.random() * 2000)
    assert len(hist.counts) == size
    assert hist.count == 10_000


@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
def test_quantile_estimates_are_close(q: float) -> None:
    rng = random.Random(7)
    values = sorted(rng.lognormvariate(-1.5, 1.0) for _ in range(20_000))
    hist = Histogram()
    for value in values:
        hist.observe(value)
    true = values[int(q * len(values)) - 1]
    estimate = hist.quantile(q)
    assert estimate is not None
    assert abs(estimate - true) / true < 0.13  # ten buckets per decade


def test_empty_histogram() -> None:
    hist = Histogram()
    assert hist.quantile(0.5) is None
    assert hist.percentiles().p50 is None
    assert hist.exported()[-1] == ("+Inf", 0.0)


def test_exported_buckets_are_cumulative_and_exact() -> None:
    hist = Histogram()
    for value in (0.005, 0.0051, 0.3, 2000.0):
        hist.observe(value)
    exported = dict(hist.exported())
    assert exported["0.005"] == 1  # `le` is inclusive
    assert exported["0.01"] == 2
    assert exported["0.25"] == 2
    assert exported["0.5"] == 3
    assert exported["600.0"] == 3
    assert exported["+Inf"] == 4
    counts = [c for _, c in hist.exported()]
    assert counts == sorted(counts)


def _record_one(stats: Stats) -> None:
    stats.started("m1", "key_0123456789abcdef")
    stats.finished(
        "m1", "key_0123456789abcdef", status=200, duration=0.12, ttfb=0.04,
        tokens_in=12, tokens_out=40,
    )  # fmt: skip


def _bytecodes(call: Callable[[], None]) -> int:
    """How many bytecode instructions `call` executes (deterministic, unlike a stopwatch)."""
    count = 0

    def trace(frame: FrameType, event: str, arg: object) -> Callable[..., object]:
        nonlocal count
        frame.f_trace_opcodes = True
        if event == "opcode":
            count += 1
        return trace

    previous = sys.gettrace()  # a coverage tracer, if any, is put back
    sys.settrace(trace)
    try:
        call()
    finally:
        sys.settrace(previous)
    return count


def test_recording_does_not_grow_with_the_tallies() -> None:
    """Recording one request is the same work with one model and key tracked or hundreds.

    Counted in bytecode instructions, not timed: an accidental walk over the
    tallies in the hot path shows as a difference, on any machine.
    """
    small = Stats()
    _record_one(small)
    large = Stats()
    for i in range(200):
        finish(large, model=f"model-{i}", key=f"key_{i}")
    _record_one(large)
    assert _bytecodes(lambda: _record_one(large)) == _bytecodes(lambda: _record_one(small))


def test_recording_keeps_no_memory_per_request() -> None:
    stats = Stats()
    _record_one(stats)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(10_000):
            _record_one(stats)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 1024, f"recording 10,000 requests kept {grown} bytes"
