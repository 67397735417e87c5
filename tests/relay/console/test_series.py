"""The console's 15-minute series: buckets from the stats' cumulative tallies."""

from __future__ import annotations

import trio

from relay.console.series import Series
from relay.stats import Stats


def finish(stats: Stats, model: str, *, status: int = 200, duration: float = 0.1,
           ttfb: float = 0.05, queue_wait: float = 0.0) -> None:  # fmt: skip
    stats.started(model, None)
    stats.finished(model, None, status=status, duration=duration, ttfb=ttfb, queue_wait=queue_wait)


def test_a_bucket_holds_only_what_happened_in_it() -> None:
    stats = Stats()
    series = Series()
    for _ in range(10):
        finish(stats, "m1", duration=1.0)
    series.take(stats, 100.0)
    for _ in range(4):
        finish(stats, "m1", duration=0.01, ttfb=0.005, queue_wait=0.2)
    finish(stats, "m1", status=502, duration=0.01, ttfb=0.005, queue_wait=0.2)
    series.take(stats, 110.0)
    series.take(stats, 120.0)  # nothing happened

    (_, first), (_, second), (_, third) = series.ring
    assert first["m1"].requests == 10
    assert first["m1"].errors == 0
    assert 900 <= (first["m1"].latency_p50 or 0) <= 1000
    assert second["m1"].requests == 5
    assert second["m1"].errors == 1
    # the second bucket's latency is its own requests', not the uptime's
    assert (second["m1"].latency_p95 or 0) <= 10
    assert (second["m1"].ttft_p50 or 0) <= 5
    assert 150 <= (second["m1"].queue_p50 or 0) <= 200
    assert third == {}

    doc = series.to_json()
    assert doc["ends"] == [100_000, 110_000, 120_000]
    assert doc["fields"][:2] == ["requests", "errors"]
    rows = doc["models"]["m1"]
    assert rows[0][0] == 10
    assert rows[1][:2] == [5, 1]
    assert rows[2] is None


def test_the_ring_keeps_fifteen_minutes() -> None:
    stats = Stats()
    series = Series()
    for i in range(100):
        finish(stats, "m1")
        series.take(stats, float(i))
    assert len(series.ring) == 90
    assert series.ring[0][0] == 10.0
    assert series.generation == 100


async def test_run_samples_every_period(autojump_clock: trio.testing.MockClock) -> None:
    stats = Stats()
    finish(stats, "m1")  # before the sampler started: not in any bucket
    series = Series(period=10.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(series.run, stats)
        await trio.sleep(5)
        finish(stats, "m1")
        finish(stats, "m2")
        await trio.sleep(10)
        assert len(series.ring) == 1
        assert {m: p.requests for m, p in series.ring[0][1].items()} == {"m1": 1, "m2": 1}
        await trio.sleep(20)
        assert len(series.ring) == 3
        nursery.cancel_scope.cancel()
