"""`GET /metrics`: the relay's figures in Prometheus text format.

Nothing here is updated per request: `RelayCollector` reads the relay's own
tallies (relay/stats.py), its hub and its key store when Prometheus scrapes,
so the hot path pays for its plain integer increments only. A scrape costs
time in proportion to models x buckets + workers: measured here, about 1 ms
for one model and 20 ms for twenty, three quarters of it in
prometheus-client's text formatting. So `scrape()` takes the snapshot on the
trio thread (consistent, and the state is only safe to read there) and
formats it in a worker thread, one scrape at a time. Each relay has its own
`CollectorRegistry`: no global registry, so several relays can live in one
process (tests do).

Every name starts with `modelrelay_`; the list with meanings is in
docs/operations.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from relay.stats import STATUS_CLASSES, queue_depths

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from relay.core import Relay
    from relay.worker_hub import HubCounts, WorkerStatistics

__all__ = ["CONTENT_TYPE", "RelayCollector", "build_registry", "render", "scrape"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
_NS = "modelrelay_"


def build_registry(relay: Relay) -> CollectorRegistry:
    """A registry of this relay's metrics plus the standard process ones."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(relay))
    # CPU, memory, open file descriptors (reads /proc: microseconds, no disk).
    ProcessCollector(namespace="modelrelay", registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition of `registry`, all on the calling thread."""
    return generate_latest(registry)


async def scrape(registry: CollectorRegistry, limiter: trio.CapacityLimiter) -> bytes:
    """The text exposition of `registry`: collected here, formatted in a thread.

    Args:
        registry: the relay's registry; its collectors read trio-owned state,
            so they run on the trio thread.
        limiter: bounds the formatting threads (one is plenty).
    """
    families = _Collected(list(registry.collect()))
    return await trio.to_thread.run_sync(generate_latest, families, limiter=limiter)


class _Collected(Collector):
    """Metric families already collected, for `generate_latest`."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


class RelayCollector(Collector):
    """Builds the relay's metric families from its state at each scrape."""

    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    def collect(self) -> Iterator[Metric]:
        relay = self._relay
        stats = relay.stats
        fleet = relay.hub.statistics()

        requests = CounterMetricFamily(
            _NS + "requests", "Inference requests finished, by model and status class "
            "(cancelled: the client left before the end).", labels=["model", "status_class"],
        )  # fmt: skip
        errors = CounterMetricFamily(
            _NS + "relay_errors", "Requests the relay itself failed, by model and cause.",
            labels=["model", "cause"],
        )  # fmt: skip
        requeues = CounterMetricFamily(
            _NS + "requeues", "Requeues after a worker was lost, by model.", labels=["model"]
        )
        tokens = CounterMetricFamily(
            _NS + "tokens", "Tokens the backends reported, by model and direction (in/out).",
            labels=["model", "direction"],
        )  # fmt: skip
        # A family of its own: these are parts of tokens{direction="in"}, and
        # a sum over one family must not count them twice.
        cache = CounterMetricFamily(
            _NS + "cache_tokens",
            "Of the prompt tokens, those the backends read from / wrote to their prompt cache.",
            labels=["model", "kind"],
        )
        duration = HistogramMetricFamily(
            _NS + "request_duration_seconds",
            "Time from a request's arrival to its last byte, by model.",
            labels=["model"],
        )
        ttfb = HistogramMetricFamily(
            _NS + "time_to_first_byte_seconds",
            "Time from a request's arrival to the first frame of its response, by model.",
            labels=["model"],
        )
        wait = HistogramMetricFamily(
            _NS + "queue_wait_seconds",
            "Time requests waited in the queue before their first dispatch, by model.",
            labels=["model"],
        )
        depth = queue_depths(stats.models, fleet.queued)
        queue = GaugeMetricFamily(
            _NS + "queue_depth", "Requests waiting for a worker, by model.", labels=["model"]
        )
        in_flight = GaugeMetricFamily(
            _NS + "in_flight", "Requests on a worker now, by model.", labels=["model"]
        )
        for model, tally in stats.models.items():
            label = [model]
            counts = tally.status_counts()
            for status_class in STATUS_CLASSES:
                requests.add_metric([model, status_class], counts[status_class])
            # Causes the relay itself answered with, by the code of its error.
            errors.add_metric([model, "queue_full"], tally.queue_full)
            errors.add_metric([model, "timeout"], tally.timeouts)
            errors.add_metric([model, "unavailable"], tally.unavailable)
            errors.add_metric([model, "upstream_error"], tally.upstream)
            requeues.add_metric(label, tally.requeued)
            tokens.add_metric([model, "in"], tally.tokens_in)
            tokens.add_metric([model, "out"], tally.tokens_out)
            cache.add_metric([model, "read"], tally.tokens_cache_read)
            cache.add_metric([model, "creation"], tally.tokens_cache_creation)
            duration.add_metric(label, tally.latency.exported(), tally.latency.total)
            ttfb.add_metric(label, tally.ttfb.exported(), tally.ttfb.total)
            wait.add_metric(label, tally.queue_wait.exported(), tally.queue_wait.total)
            queued = depth.get(model, 0)
            queue.add_metric(label, queued)
            in_flight.add_metric(label, max(0, tally.active - queued))
        yield from (requests, errors, requeues, tokens, cache, duration, ttfb, wait, queue)
        yield in_flight

        totals = stats.totals
        rejected = CounterMetricFamily(
            _NS + "rejected_requests",
            "Requests refused before queueing (bad body, API key, unknown model, size, draining).",
            value=totals.rejected,
        )
        yield rejected
        yield GaugeMetricFamily(
            _NS + "requests_active",
            "Requests in the relay now, queued or on a worker.",
            value=totals.active,
        )

        yield from _workers(fleet.workers)
        yield from self._keys()

        yield from _hub_counters(fleet.counts)
        yield GaugeMetricFamily(
            _NS + "draining", "1 while the relay is shutting down.", value=int(fleet.draining)
        )
        yield GaugeMetricFamily(
            _NS + "start_time_seconds",
            "When the relay started, in seconds since the Unix epoch.",
            value=relay.wall_time(relay.started_at),
        )
        info = GaugeMetricFamily(_NS + "build_info", "The relay's version.", labels=["version"])
        info.add_metric([relay.version], 1)
        yield info

    def _keys(self) -> Iterator[Metric]:
        relay = self._relay
        key_requests = CounterMetricFamily(
            _NS + "key_requests",
            "Requests per client API key (id, never the secret), by status class.",
            labels=["key_id", "status_class"],
        )
        key_tokens = CounterMetricFamily(
            _NS + "key_tokens", "Tokens per client API key and direction.",
            labels=["key_id", "direction"],
        )  # fmt: skip
        for key_id, tally in relay.stats.keys.items():
            for status_class, count in tally.status_counts().items():
                key_requests.add_metric([key_id, status_class], count)
            key_tokens.add_metric([key_id, "in"], tally.tokens_in)
            key_tokens.add_metric([key_id, "out"], tally.tokens_out)
        yield key_requests
        yield key_tokens
        if relay.keys is not None:
            active, revoked = relay.keys.counts()
            keys = GaugeMetricFamily(
                _NS + "api_keys", "Client API keys this relay knows, by state.", labels=["state"]
            )
            keys.add_metric(["active"], active)
            keys.add_metric(["revoked"], revoked)
            yield keys


def _workers(workers: Sequence[WorkerStatistics]) -> Iterator[Metric]:
    labels = ["worker", "worker_name"]
    connected = GaugeMetricFamily(
        _NS + "workers_connected", "Workers connected (acked), draining ones included."
    )
    draining = GaugeMetricFamily(_NS + "workers_draining", "Connected workers that are draining.")
    in_flight = GaugeMetricFamily(
        _NS + "worker_in_flight", "Requests on each worker now.", labels=labels
    )
    capacity = GaugeMetricFamily(
        _NS + "worker_max_concurrent", "Each worker's capacity.", labels=labels
    )
    load = GaugeMetricFamily(
        _NS + "worker_reported_load", "The load each worker last reported.", labels=labels
    )
    ejected = GaugeMetricFamily(
        _NS + "worker_ejected",
        "1 while a worker is ejected for failing before a first byte (cool-down).",
        labels=labels,
    )
    unhealthy = GaugeMetricFamily(
        _NS + "worker_backend_unhealthy",
        "1 while a worker's model server is taken to be down.",
        labels=labels,
    )
    served = CounterMetricFamily(
        _NS + "worker_requests_served",
        "Requests each worker completed in its current session.",
        labels=labels,
    )
    connected.add_metric([], len(workers))
    draining.add_metric([], sum(1 for w in workers if w.draining))
    for worker in workers:
        label = [worker.id, worker.name]
        in_flight.add_metric(label, worker.in_flight)
        capacity.add_metric(label, worker.max_concurrent)
        load.add_metric(label, worker.reported_load)
        served.add_metric(label, worker.requests_served)
        ejected.add_metric(label, int(worker.ejected))
        unhealthy.add_metric(label, int(worker.unhealthy is not None))
    yield from (connected, draining, in_flight, capacity, load, served, ejected, unhealthy)


def _hub_counters(counts: HubCounts) -> Iterator[Metric]:
    """The hub's event counters (requeues are exported per model instead)."""
    for name, text, value in (
        ("workers_registered", "Worker registrations.", counts.workers_registered),
        ("workers_lost", "Worker sessions that ended.", counts.workers_lost),
        (
            "protocol_errors",
            "Worker sessions closed for a protocol error.",
            counts.protocol_errors,
        ),
        (
            "dropped_frames",
            "Worker frames for requests no longer in flight.",
            counts.dropped_frames,
        ),
        (
            "slow_workers",
            "Worker sessions closed for not reading their socket.",
            counts.slow_workers,
        ),
        (
            "heartbeat_timeouts",
            "Worker sessions closed after heartbeat silence.",
            counts.heartbeat_timeouts,
        ),
        (
            "backend_failures",
            "Requests a worker's model server failed before a first byte (requeued).",
            counts.backend_failures,
        ),
        ("worker_ejections", "Workers ejected for repeated backend failures.", counts.ejections),
    ):
        yield CounterMetricFamily(_NS + name, text, value=value)
