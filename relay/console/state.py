"""The dashboard's state document: what one Server-Sent Event carries.

Built from the relay's in-memory state only (the hub, the stats' totals, the
key store's loaded keys): no database call, no per-request work. The SSE
stream builds it at most once a second and sends it only when it changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from relay.keys import Usage
from relay.router import WILDCARD

if TYPE_CHECKING:
    from relay.core import Relay
    from relay.worker_hub import Worker

__all__ = ["Rates", "keys_doc", "state_doc", "worker_doc"]


class Rates:
    """Requests/s and error rate between two calls (one stream's previous tick)."""

    __slots__ = ("_at", "_errors", "_requests")

    def __init__(self) -> None:
        self._at: float | None = None
        self._requests = 0
        self._errors = 0

    def update(self, relay: Relay) -> tuple[float, float]:
        totals = relay.stats.totals
        errors = totals.status_4xx + totals.status_5xx
        now = trio.current_time()
        rps = error_rate = 0.0
        if self._at is not None and now > self._at:
            done = totals.requests - self._requests
            rps = done / (now - self._at)
            error_rate = (errors - self._errors) / done if done > 0 else 0.0
        self._at, self._requests, self._errors = now, totals.requests, errors
        return round(rps, 2), round(error_rate, 4)


def worker_doc(relay: Relay, worker: Worker) -> dict[str, Any]:
    return {
        "id": worker.id,
        "name": worker.name,
        "models": [m for m in worker.model_list if m != WILDCARD],
        "all_models": WILDCARD in worker.models,
        "in_flight": worker.in_flight,
        "max_concurrent": worker.max_concurrent,
        "draining": worker.draining,
        "cordoned": worker.cordoned,
        "connected_since": relay.rfc3339(worker.connected_since),
        "last_heard": relay.rfc3339(worker.last_seen),
        "requests_served": worker.requests_served,
        "backend_errors": worker.backend_errors,
    }


def keys_doc(relay: Relay) -> list[dict[str, Any]] | None:
    """Every key with its use, from memory; None without a key store."""
    if relay.keys is None:
        return None
    usage = relay.keys.usage_all()
    out = []
    for key in relay.keys.snapshot():
        doc = key.to_json()
        doc.update(usage.get(key.id, Usage()).to_json())
        out.append(doc)
    return out


def state_doc(relay: Relay, rates: Rates) -> dict[str, Any]:
    hub = relay.hub
    rps, error_rate = rates.update(relay)
    workers = sorted(hub.workers.values(), key=lambda w: (w.name, w.id))
    queue_depth = len(hub.queue)
    return {
        "version": relay.version,
        "uptime_s": int(trio.current_time() - relay.started_at),
        "draining": hub.draining,
        "workers": [worker_doc(relay, w) for w in workers],
        "models": hub.served_models(),
        "any_model": any(WILDCARD in w.models for w in workers),
        "cordons": sorted(hub.cordons),
        "queue_depth": queue_depth,
        "in_flight": max(0, relay.stats.totals.active - queue_depth),
        "requests_per_s": rps,
        "error_rate": error_rate,
        "requests_total": relay.stats.totals.requests,
        "keys": keys_doc(relay),
        "require_api_keys": relay.config.require_api_keys,
    }
