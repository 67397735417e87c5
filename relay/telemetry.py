"""Request figures seen from the client's side, for `/metrics`.

relay/stats.py counts what the relay decides (status classes, the worker's
first frame, the queue wait, all exported by relay/metrics.py); this module
adds what an operator's dashboards ask next:

- time to first byte as the client sees it: from the request's arrival at
  the relay (queue wait included) to the answer's first byte, which the
  proxy writes to the client as soon as its task holds the worker's first
  frame (stream keep-alive pings do not count), per model;
- finished requests by exact status code and by endpoint;
- backend errors per worker (a 5xx that came from a worker);
- the standard `process_*` names that stock dashboards (node/process
  exporters' panels) expect, besides the relay's `modelrelay_process_*`.

Like relay/stats.py, nothing is formatted per request: `Telemetry` keeps plain
counters, fed from each request's `CallSummary`, and `TelemetryCollector`
builds the families at scrape time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from relay.stats import MAX_MODELS, OTHER_MODEL, Histogram

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.registry import CollectorRegistry

    from relay.http_api import CallSummary

__all__ = [
    "ENDPOINTS",
    "Telemetry",
    "TelemetryCollector",
    "endpoint_label",
    "register",
]

_NS = "modelrelay_"
ENDPOINTS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/embeddings",
    }
)
# Bounded label sets: client-chosen strings never become label values as is.
MAX_WORKERS = 1024


def endpoint_label(path: str | None) -> str:
    """`path` if it is one of the API's endpoints, else `other` (bounded labels)."""
    return path if path in ENDPOINTS else "other"


@attrs.define(eq=False)
class Telemetry:
    """The client-side tallies; fed by `relay.core.Relay.record_finished`/`_rejected`."""

    client_ttfb: dict[str, Histogram] = attrs.field(factory=dict)
    by_code: dict[tuple[str, str, str], int] = attrs.field(factory=dict)
    backend_errors: dict[tuple[str, str], int] = attrs.field(factory=dict)
    # The model labels given so far (at most MAX_MODELS, then OTHER_MODEL).
    models: set[str] = attrs.field(factory=set)

    def _model(self, model: str | None) -> str:
        if not model:
            return ""
        if model in self.models:
            return model
        if len(self.models) < MAX_MODELS:
            self.models.add(model)
            return model
        return OTHER_MODEL

    def finished(self, summary: CallSummary, worker_name: str | None) -> None:
        """Count one finished request from its summary (relay/http_api.py)."""
        model = self._model(summary.model)
        status = summary.status
        key = (model, endpoint_label(summary.path), str(status))
        self.by_code[key] = self.by_code.get(key, 0) + 1
        if summary.ttfb is not None and 200 <= status < 300:
            ttfb = self.client_ttfb.get(model)
            if ttfb is None:  # not setdefault: that builds a histogram per request
                ttfb = self.client_ttfb[model] = Histogram()
            ttfb.observe(summary.ttfb)
        worker_id = summary.worker_id
        if worker_id and status >= 500 and status != 504:
            wkey = (str(worker_id), worker_name or "")
            if wkey in self.backend_errors or len(self.backend_errors) < MAX_WORKERS:
                self.backend_errors[wkey] = self.backend_errors.get(wkey, 0) + 1

    def rejected(self, path: str | None, status: int) -> None:
        """Count a request refused before queueing (its model may be anything: not a label)."""
        key = ("", endpoint_label(path), str(status))
        self.by_code[key] = self.by_code.get(key, 0) + 1


class TelemetryCollector(Collector):
    """Builds the client-side families from a `Telemetry` at each scrape."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._t = telemetry

    def collect(self) -> Iterator[Metric]:
        t = self._t
        ttft = HistogramMetricFamily(
            _NS + "client_time_to_first_byte_seconds",
            "Time from a request's arrival to its first byte written to the client "
            "(the first token of a stream), by model; successful requests only.",
            labels=["model"],
        )
        for model, hist in t.client_ttfb.items():
            ttft.add_metric([model], hist.exported(), hist.total)
        codes = CounterMetricFamily(
            _NS + "responses",
            "Answers to inference requests by model, endpoint and exact status code "
            "(model is empty for requests refused before queueing).",
            labels=["model", "endpoint", "code"],
        )
        for (model, endpoint, code), count in t.by_code.items():
            codes.add_metric([model, endpoint, code], count)
        errors = CounterMetricFamily(
            _NS + "worker_backend_errors",
            "5xx answers that came from each worker (its backend failed or was unreachable).",
            labels=["worker", "worker_name"],
        )
        for (worker, name), count in t.backend_errors.items():
            errors.add_metric([worker, name], count)
        yield from (ttft, codes, errors)


def register(telemetry: Telemetry, registry: CollectorRegistry) -> None:
    """Add the client-side families and the standard `process_*` ones to `registry`."""
    registry.register(TelemetryCollector(telemetry))
    # Un-prefixed: the names stock process dashboards query (process_cpu_seconds_total, ...).
    ProcessCollector(namespace="", registry=registry)
