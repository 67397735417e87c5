"""The relay's state, built once by `server.py` and handed to the app.

No globals: `create_app(relay)` receives this object, and every view and the
proxy reach the hub, the in-flight registry, the key store, the stats and the
metrics registry through it.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING

import attrs
import trio
from prometheus_client.registry import CollectorRegistry

from relay import __version__, telemetry
from relay.auth import ClientAuth, SecretCheck
from relay.console.series import Series
from relay.inflight import InFlight
from relay.keys import KeyStore
from relay.metrics import build_registry
from relay.stats import Stats
from relay.telemetry import Telemetry
from relay.worker_hub import Hub

if TYPE_CHECKING:
    from relay.config import RelayConfig
    from relay.errors import RelayError
    from relay.http_api import CallSummary

__all__ = ["Relay"]

log = logging.getLogger("relay.request")


@attrs.define(eq=False)
class Relay:
    """Owns the hub, the in-flight registry, the key store and the stats."""

    config: RelayConfig
    hub: Hub
    inflight: InFlight = attrs.field(factory=InFlight)
    keys: KeyStore | None = None
    stats: Stats = attrs.field(factory=Stats)
    registry: CollectorRegistry = attrs.field(factory=CollectorRegistry)
    started_at: float = attrs.field(factory=trio.current_time)
    # wall clock minus trio's clock, captured once: turns trio times into dates
    wall_offset: float = attrs.field(factory=lambda: time.time() - trio.current_time())
    version: str = __version__
    # Client API-key checks (relay/auth.py), over this relay's key store.
    client_auth: ClientAuth = attrs.field(
        default=attrs.Factory(
            lambda self: ClientAuth(self.keys, required=self.config.require_api_keys),
            takes_self=True,
        )
    )
    series: Series | None = None  # the console's recent history, when the console is on
    # Client-side figures for /metrics (relay/telemetry.py).
    telemetry: Telemetry = attrs.field(factory=Telemetry)
    # Set at the first signal, before the drain proper (RelayServer.drain):
    # /health answers 503 from then on, so balancers stop sending new work.
    leaving: bool = False

    # The admin token's check and its per-address failure limit, shared by the
    # admin API and the console's login (one token, one count); None without a token.
    admin_auth: SecretCheck | None = attrs.field(
        default=attrs.Factory(
            lambda self: (
                SecretCheck(
                    self.config.admin_token.encode("utf-8", "surrogateescape"),
                    limit=self.config.auth_failure_limit,
                    window=self.config.auth_failure_window,
                )
                if self.config.admin_token
                else None
            ),
            takes_self=True,
        )
    )

    @classmethod
    def from_config(cls, config: RelayConfig) -> Relay:
        """Build the relay's state (no I/O; `run_services` opens the key store).

        The key store exists when something can use it: `--require-api-keys`
        or an admin token (an operator may create keys before requiring them).

        Raises:
            KeyStoreError: `--database-url` is not a PostgreSQL URL.
        """
        keys = None
        if config.require_api_keys or config.admin_token:
            keys = KeyStore.from_config(config)
        relay = cls(config=config, hub=Hub(config), keys=keys)
        relay.registry = build_registry(relay)
        telemetry.register(relay.telemetry, relay.registry)
        return relay

    async def run_services(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the relay's background services until cancelled.

        `task_status.started()` once they are ready (the keys are loaded).

        Raises:
            KeyStoreError: the key database cannot be opened.
        """
        if self.config.require_api_keys and not self.config.admin_token:
            log.warning(
                "--require-api-keys without --admin-token: keys can only be created "
                "by a relay that has an admin token and shares this key store"
            )
        async with trio.open_nursery() as nursery:
            if self.keys is not None:
                # Per-key usage is read from the stats' tallies at each sync, and
                # the persisted cordons reach the router through the hub.
                self.keys.usage_source = self.stats.key_usage
                self.keys.on_cordons = self.hub.set_cordons
                await nursery.start(self.keys.run)
            if self.config.console_enabled:
                # The console's 15-minute charts: a sample of the tallies every 10 s.
                self.series = Series()
                nursery.start_soon(self.series.run, self.stats)
            task_status.started()

    def wall_time(self, moment: float) -> float:
        """A `trio.current_time()` value as seconds since the Unix epoch."""
        return moment + self.wall_offset

    def rfc3339(self, moment: float) -> str:
        """A `trio.current_time()` value as an RFC 3339 UTC timestamp."""
        when = dt.datetime.fromtimestamp(self.wall_time(moment), dt.UTC)
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    # ------------------------------------------------------------ hot path

    def record_started(self, model: str, key_id: str | None) -> None:
        """A request was accepted for routing; `record_finished` will follow."""
        self.stats.started(model, key_id)

    def record_rejected(
        self,
        request_id: str,
        path: str,
        exc: RelayError,
        elapsed: float,
        *,
        model: str | None = None,
        key_id: str | None = None,
        client_request_id: str | None = None,
    ) -> None:
        """Count and log a request refused before it was queued (`path` already clipped)."""
        self.stats.rejected(exc.status, key_id)
        self.telemetry.rejected(path, exc.status)
        log.info(
            "request rejected",
            extra={
                "request_id": request_id,
                "client_request_id": client_request_id,
                "path": path,
                "model": model,
                "key_id": key_id,
                "status": exc.status,
                "error": exc.code,
                "duration_ms": round(elapsed * 1000, 2),
            },
        )

    def record_finished(self, summary: CallSummary) -> None:
        """Count a finished request and log its canonical line."""
        counts = summary.token_counts
        self.stats.finished(
            summary.model,
            summary.key_id,
            status=summary.status,
            client_gone=summary.client_gone,
            error=summary.error,
            duration=summary.duration,
            ttfb=summary.ttfb,
            requeues=summary.requeues,
            tokens_in=counts.prompt_tokens if counts is not None else None,
            tokens_out=counts.completion_tokens if counts is not None else None,
            cache_read=counts.cache_read_tokens if counts is not None else None,
            cache_creation=counts.cache_creation_tokens if counts is not None else None,
            queue_wait=summary.queue_wait,
        )
        worker = self.hub.workers.get(summary.worker_id or "")
        self.telemetry.finished(summary, worker.name if worker is not None else None)
        if log.isEnabledFor(logging.INFO):  # the fields cost a dict per request
            log.info("request finished", extra=summary.log_fields())
