"""Request statistics: per model, per client API key, and in total.

One `Stats` object per relay records every finished request in a few plain
integer increments and two bucket lookups (the relay's whole CPU budget is
under a millisecond per request; recording costs a few microseconds). Memory is
bounded: each tally holds fixed-size histograms instead of samples, and the
number of model tallies is capped (a worker serving `*` lets clients name any
model, so client input must not grow this map without bound).

`/admin/stats` reads `snapshot()`, a frozen `StatsSnapshot` (its `to_json()`
is the document's one serializer); `/metrics` (relay/metrics.py) reads the
same tallies, so both always agree::

    Stats
    ├── totals: Tally            every request, rejected ones included
    ├── models: {model: Tally}   requests that were accepted for routing
    └── keys:   {key id: Tally}  requests that presented a valid client key

Percentiles are estimated from the histogram buckets by linear interpolation
inside the bucket (as Prometheus' `histogram_quantile` does); with ten
buckets per decade the estimate is within about 12 % of the true value.
They cover the relay's whole uptime; for windows, use `/metrics` and
Prometheus' `rate()`.
"""

from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING

import attrs

from relay.keys import Usage

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "BUCKET_BOUNDS",
    "ERROR_CLASSES",
    "EXPORTED_BOUNDS",
    "MAX_MODELS",
    "OTHER_MODEL",
    "STATUS_CLASSES",
    "ErrorCounts",
    "Histogram",
    "Percentiles",
    "Stats",
    "StatsSnapshot",
    "Tally",
    "TallySnapshot",
    "queue_depths",
]

# Bucket upper bounds in seconds: 1 ms to 1000 s, ten per decade.
_MANTISSAS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)
BUCKET_BOUNDS: tuple[float, ...] = (
    *(round(m * 10.0**e, 6) for e in range(-3, 3) for m in _MANTISSAS),
    1000.0,
)
# The subset /metrics exports: a conventional, short set of `le` values (each
# series costs Prometheus storage). Cumulative counts at these bounds are exact
# because each is also an internal bound.
EXPORTED_BOUNDS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 300.0, 600.0,
)  # fmt: skip
_EXPORTED_INDEX = tuple(BUCKET_BOUNDS.index(b) for b in EXPORTED_BOUNDS)

STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "cancelled")
ERROR_CLASSES = ("4xx", "5xx", "queue_full", "timeouts", "cancelled", "requeued")
# Beyond this many distinct models, further ones share one tally.
MAX_MODELS = 256
OTHER_MODEL = "(other)"
_PERCENTILES = (0.5, 0.9, 0.95, 0.99)


@attrs.define(eq=False, slots=True)
class Histogram:
    """Counts of observations (seconds) per bucket of `BUCKET_BOUNDS`, plus +Inf."""

    counts: list[int] = attrs.field(factory=lambda: [0] * (len(BUCKET_BOUNDS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (`le`).
        self.counts[bisect.bisect_left(BUCKET_BOUNDS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def quantile(self, q: float) -> float | None:
        """The `q` quantile in seconds, estimated; None with no observation."""
        if self.count == 0:
            return None
        rank = q * self.count
        seen = 0
        for index, n in enumerate(self.counts):
            if n and seen + n >= rank:
                lower = BUCKET_BOUNDS[index - 1] if index > 0 else 0.0
                if index == len(BUCKET_BOUNDS):  # +Inf: the best we can say is its lower bound
                    return lower
                upper = BUCKET_BOUNDS[index]
                return lower + (upper - lower) * max(0.0, rank - seen) / n
            seen += n
        return BUCKET_BOUNDS[-1]

    def exported(self) -> list[tuple[str, float]]:
        """Cumulative counts at `EXPORTED_BOUNDS` and +Inf, as Prometheus wants them."""
        out: list[tuple[str, float]] = []
        running = 0
        start = 0
        for bound, stop in zip(EXPORTED_BOUNDS, _EXPORTED_INDEX, strict=True):
            running += sum(self.counts[start : stop + 1])
            start = stop + 1
            out.append((_le(bound), float(running)))
        out.append(("+Inf", float(self.count)))
        return out

    def percentiles(self) -> Percentiles:
        """Percentiles and mean in milliseconds, for `/admin/stats`."""
        p50, p90, p95, p99 = (_ms(self.quantile(q)) for q in _PERCENTILES)
        mean = _ms(self.total / self.count) if self.count else None
        return Percentiles(p50=p50, p90=p90, p95=p95, p99=p99, mean=mean, count=self.count)


@attrs.frozen
class Percentiles:
    """Estimated percentiles and the mean of one histogram, in milliseconds.

    None where there is no observation.
    """

    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    mean: float | None
    count: int

    def to_json(self) -> dict[str, float | None]:
        return {
            "p50": self.p50,
            "p90": self.p90,
            "p95": self.p95,
            "p99": self.p99,
            "mean": self.mean,
            "count": self.count,
        }


@attrs.frozen
class ErrorCounts:
    """Requests that did not succeed, by class (the relay's causes overlap 4xx/5xx)."""

    status_4xx: int
    status_5xx: int
    queue_full: int
    timeouts: int
    cancelled: int
    requeued: int  # requeue events, not requests

    def to_json(self) -> dict[str, int]:
        return {
            "4xx": self.status_4xx,
            "5xx": self.status_5xx,
            "queue_full": self.queue_full,
            "timeouts": self.timeouts,
            "cancelled": self.cancelled,
            "requeued": self.requeued,
        }


@attrs.frozen
class TallySnapshot:
    """One tally (a model, a key, or the whole relay) at one moment."""

    requests: int
    succeeded: int
    errors: ErrorCounts
    tokens_in: int
    tokens_out: int
    latency: Percentiles
    ttfb: Percentiles
    queue_depth: int | None = None  # models and totals only
    in_flight: int | None = None  # models and totals only
    rejected: int | None = None  # totals only

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "requests": self.requests,
            "succeeded": self.succeeded,
            "errors": self.errors.to_json(),
            "tokens": {"in": self.tokens_in, "out": self.tokens_out},
            "latency_ms": self.latency.to_json(),
            "ttfb_ms": self.ttfb.to_json(),
        }
        if self.queue_depth is not None:
            doc["queue_depth"] = self.queue_depth
        if self.in_flight is not None:
            doc["in_flight"] = self.in_flight
        if self.rejected is not None:
            doc["rejected"] = self.rejected
        return doc


@attrs.frozen
class StatsSnapshot:
    """The relay's statistics at one moment: what `/admin/stats` answers."""

    totals: TallySnapshot
    models: Mapping[str, TallySnapshot]  # by model name, sorted
    keys: Mapping[str, TallySnapshot]  # by key id, sorted

    def to_json(self) -> dict[str, object]:
        return {
            "totals": self.totals.to_json(),
            "models": {m: t.to_json() for m, t in self.models.items()},
            "keys": {k: t.to_json() for k, t in self.keys.items()},
        }


@attrs.define(eq=False, slots=True)
class Tally:
    """The counters of one model, one key, or the whole relay."""

    requests: int = 0
    active: int = 0  # in the relay now: queued or on a worker
    # by final status; a client that left before the end counts as cancelled
    status_2xx: int = 0
    status_3xx: int = 0
    status_4xx: int = 0
    status_5xx: int = 0
    cancelled: int = 0
    # causes the relay itself answered with (overlap with 4xx/5xx above)
    queue_full: int = 0
    timeouts: int = 0
    unavailable: int = 0
    upstream: int = 0
    rejected: int = 0  # refused before queueing (bad body, key, model, size)
    requeued: int = 0  # requeue events, not requests
    tokens_in: int = 0
    tokens_out: int = 0
    latency: Histogram = attrs.field(factory=Histogram)
    ttfb: Histogram = attrs.field(factory=Histogram)
    queue_wait: Histogram = attrs.field(factory=Histogram)  # arrival to first dispatch

    def status_counts(self) -> dict[str, int]:
        return {
            "2xx": self.status_2xx,
            "3xx": self.status_3xx,
            "4xx": self.status_4xx,
            "5xx": self.status_5xx,
            "cancelled": self.cancelled,
        }

    def snapshot(self, queue_depth: int | None = None, *, rejected: bool = False) -> TallySnapshot:
        """This tally now; with `queue_depth`, also how many wait and how many run."""
        return TallySnapshot(
            requests=self.requests,
            succeeded=self.status_2xx + self.status_3xx,
            errors=ErrorCounts(
                status_4xx=self.status_4xx,
                status_5xx=self.status_5xx,
                queue_full=self.queue_full,
                timeouts=self.timeouts,
                cancelled=self.cancelled,
                requeued=self.requeued,
            ),
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            latency=self.latency.percentiles(),
            ttfb=self.ttfb.percentiles(),
            queue_depth=queue_depth,
            in_flight=max(0, self.active - queue_depth) if queue_depth is not None else None,
            rejected=self.rejected if rejected else None,
        )


def _record(
    tally: Tally,
    status: int,
    client_gone: bool,
    error: str | None,
    duration: float,
    ttfb: float | None,
    requeues: int,
    tokens_in: int | None,
    tokens_out: int | None,
    queue_wait: float | None,
) -> None:
    tally.requests += 1
    tally.active -= 1
    if client_gone:
        tally.cancelled += 1
    elif status < 300:
        tally.status_2xx += 1
    elif status < 400:
        tally.status_3xx += 1
    elif status < 500:
        tally.status_4xx += 1
    else:
        tally.status_5xx += 1
    if error is not None:
        if error == "queue_full":
            tally.queue_full += 1
        elif error == "timeout":
            tally.timeouts += 1
        elif error == "unavailable":
            tally.unavailable += 1
        elif error == "upstream_error":
            tally.upstream += 1
    if requeues:
        tally.requeued += requeues
    if tokens_in:
        tally.tokens_in += tokens_in
    if tokens_out:
        tally.tokens_out += tokens_out
    tally.latency.observe(duration)
    if ttfb is not None:
        tally.ttfb.observe(ttfb)
    if queue_wait is not None:
        tally.queue_wait.observe(queue_wait)


@attrs.define(eq=False)
class Stats:
    """Owns the relay's request tallies; the hot path calls `started`/`finished`."""

    totals: Tally = attrs.field(factory=Tally)
    models: dict[str, Tally] = attrs.field(factory=dict)
    keys: dict[str, Tally] = attrs.field(factory=dict)
    max_models: int = MAX_MODELS

    def model_tally(self, model: str) -> Tally:
        tally = self.models.get(model)
        if tally is None:
            if len(self.models) >= self.max_models:
                model = OTHER_MODEL
                tally = self.models.get(model)
            if tally is None:
                tally = self.models[model] = Tally()
        return tally

    def key_tally(self, key_id: str) -> Tally:
        tally = self.keys.get(key_id)
        if tally is None:
            tally = self.keys[key_id] = Tally()
        return tally

    def key_usage(self) -> dict[str, Usage]:
        """Requests and tokens per key id since this relay started (the key store persists them)."""
        return {
            key_id: Usage(t.requests, t.tokens_in, t.tokens_out) for key_id, t in self.keys.items()
        }

    def started(self, model: str, key_id: str | None) -> None:
        """A request was accepted for routing (it will reach `finished`)."""
        self.totals.active += 1
        self.model_tally(model).active += 1
        if key_id is not None:
            self.key_tally(key_id).active += 1

    def finished(
        self,
        model: str,
        key_id: str | None,
        *,
        status: int,
        client_gone: bool = False,
        error: str | None = None,
        duration: float,
        ttfb: float | None = None,
        requeues: int = 0,
        tokens_in: int | None = None,
        tokens_out: int | None = None,
        queue_wait: float | None = None,
    ) -> None:
        """Record a request `started()` earlier, now answered or abandoned.

        Args:
            model: the requested model.
            key_id: the client key's id, or None.
            status: the status the client got (or would have got).
            client_gone: the client left before the response was complete.
            error: the code of the error the relay itself answered with, if any.
            duration: seconds from arrival to the end.
            ttfb: seconds from arrival to the worker's first frame, if any.
            requeues: how often the request was requeued.
            tokens_in: prompt tokens the backend reported.
            tokens_out: completion tokens the backend reported.
            queue_wait: seconds from arrival to the first dispatch to a worker, if any.
        """
        args = (
            status, client_gone, error, duration, ttfb, requeues, tokens_in, tokens_out, queue_wait
        )  # fmt: skip
        _record(self.totals, *args)
        _record(self.model_tally(model), *args)
        if key_id is not None:
            _record(self.key_tally(key_id), *args)

    def rejected(self, status: int, key_id: str | None = None) -> None:
        """A request refused before it was queued (never `started()`)."""
        for tally in (self.totals, self.key_tally(key_id) if key_id is not None else None):
            if tally is None:
                continue
            tally.requests += 1
            tally.rejected += 1
            if status < 500:
                tally.status_4xx += 1
            else:
                tally.status_5xx += 1

    def snapshot(self, queued: Iterable[str] = ()) -> StatsSnapshot:
        """Every tally now (what `/admin/stats` answers, as `to_json()`).

        Args:
            queued: the model of each request waiting in the queue now.
        """
        waiting = list(queued)
        depth = queue_depths(self.models, waiting)
        return StatsSnapshot(
            totals=self.totals.snapshot(len(waiting), rejected=True),
            models={m: t.snapshot(depth.get(m, 0)) for m, t in sorted(self.models.items())},
            keys={k: t.snapshot() for k, t in sorted(self.keys.items())},
        )


def queue_depths(models: Mapping[str, Tally], queued: Iterable[str]) -> dict[str, int]:
    """Queued requests per tracked model (zero for models with none waiting)."""
    depth = dict.fromkeys(models, 0)
    for model in queued:
        key = model if model in depth else OTHER_MODEL
        depth[key] = depth.get(key, 0) + 1
    return depth


def _le(bound: float) -> str:
    return repr(float(bound))


def _ms(seconds: float | None) -> float | None:
    if seconds is None or math.isnan(seconds):
        return None
    return round(seconds * 1000, 2)
