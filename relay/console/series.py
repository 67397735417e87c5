"""The console's recent history: per-model figures in 10-second buckets, 15 minutes of them.

`Series.run` samples the relay's cumulative tallies (`relay.stats.Stats`) every
`period` seconds and keeps what changed in a ring of `buckets` entries, so the
charts cost the hot path nothing: the requests are counted by the stats
already, and this reads them 6 times a minute. Percentiles per bucket come
from the difference of two cumulative histograms (exact bucket counts), so a
bucket's p95 is the p95 of that bucket's requests only.

Memory is bounded: one previous sample per tracked model (the stats cap their
number), and per bucket only the models that had a request in it.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import trio

from relay.stats import Histogram

if TYPE_CHECKING:
    from relay.stats import Stats, Tally

__all__ = ["BUCKET_SECS", "WINDOW_BUCKETS", "Point", "Series"]

BUCKET_SECS = 10.0
WINDOW_BUCKETS = 90  # 15 minutes


@attrs.frozen
class Point:
    """One model's figures over one bucket (times in milliseconds)."""

    requests: int
    errors: int
    latency_p50: float | None
    latency_p95: float | None
    ttft_p50: float | None
    ttft_p95: float | None
    queue_p50: float | None
    queue_p95: float | None

    def to_json(self) -> list[Any]:
        # A row, not an object: the console receives 90 of them per model.
        return [
            self.requests,
            self.errors,
            self.latency_p50,
            self.latency_p95,
            self.ttft_p50,
            self.ttft_p95,
            self.queue_p50,
            self.queue_p95,
        ]


POINT_FIELDS = [f.name for f in attrs.fields(Point)]


@attrs.frozen
class _Sample:
    requests: int
    errors: int
    latency: tuple[int, ...]
    ttft: tuple[int, ...]
    queue: tuple[int, ...]


def _errors(tally: Tally) -> int:
    return tally.status_4xx + tally.status_5xx


def _sample(tally: Tally) -> _Sample:
    return _Sample(
        tally.requests,
        _errors(tally),
        tuple(tally.latency.counts),
        tuple(tally.ttfb.counts),
        tuple(tally.queue_wait.counts),
    )


def _ms_quantiles(now: tuple[int, ...], before: tuple[int, ...] | None) -> tuple[float | None, ...]:
    counts = list(now) if before is None else [a - b for a, b in zip(now, before, strict=True)]
    histogram = Histogram(counts=counts, count=sum(counts))
    out: list[float | None] = []
    for q in (0.5, 0.95):
        value = histogram.quantile(q)
        out.append(None if value is None else round(value * 1000, 1))
    return tuple(out)


@attrs.define(eq=False)
class Series:
    """Owns the ring of recent buckets; `run` fills it (a service of the relay's nursery)."""

    period: float = BUCKET_SECS
    buckets: int = WINDOW_BUCKETS
    # (wall-clock end of the bucket, {model: Point})
    ring: deque[tuple[float, dict[str, Point]]] = attrs.field(init=False)
    _previous: dict[str, _Sample] = attrs.field(factory=dict)
    generation: int = 0  # bumped by each new bucket: the console re-sends the charts then

    def __attrs_post_init__(self) -> None:
        self.ring = deque(maxlen=self.buckets)

    def take(self, stats: Stats, wall: float) -> None:
        """Close one bucket: what changed in `stats` since the previous call."""
        points: dict[str, Point] = {}
        for model, tally in stats.models.items():
            now = _sample(tally)
            before = self._previous.get(model)
            self._previous[model] = now
            requests = now.requests - (before.requests if before else 0)
            if requests <= 0:
                continue
            lat = _ms_quantiles(now.latency, before.latency if before else None)
            ttft = _ms_quantiles(now.ttft, before.ttft if before else None)
            queue = _ms_quantiles(now.queue, before.queue if before else None)
            points[model] = Point(
                requests, now.errors - (before.errors if before else 0), *lat, *ttft, *queue
            )
        self.ring.append((wall, points))
        self.generation += 1

    async def run(self, stats: Stats) -> NoReturn:
        """Take a bucket every `period` seconds, forever (until cancelled)."""
        self._previous = {model: _sample(tally) for model, tally in stats.models.items()}
        next_at = trio.current_time() + self.period
        while True:
            await trio.sleep_until(next_at)
            next_at += self.period
            self.take(stats, time.time())

    def to_json(self) -> dict[str, Any]:
        """The charts' data: bucket ends (Unix ms), and per model one row per bucket."""
        ends = [round(end * 1000) for end, _ in self.ring]
        models = sorted({m for _, points in self.ring for m in points})
        rows: dict[str, list[list[Any] | None]] = {
            m: [p.to_json() if (p := points.get(m)) else None for _, points in self.ring]
            for m in models
        }
        return {
            "period_s": self.period,
            "fields": POINT_FIELDS,
            "ends": ends,
            "models": rows,
        }
