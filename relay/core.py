"""The relay's state, built once by `server.py` and handed to the app.

No globals: `create_app(relay)` receives this object, and every view and the
proxy reach the hub, the in-flight registry, the key store, the stats and the
metrics registry through it.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING, Any

import attrs
import trio
from prometheus_client.registry import CollectorRegistry

from relay import __version__, telemetry
from relay.errors import Unauthorized
from relay.inflight import InFlight
from relay.keys import KEY_PREFIX, KeyStore
from relay.metrics import build_registry
from relay.stats import Stats
from relay.telemetry import Telemetry
from relay.worker_hub import Hub
from wire.limits import filter_headers

if TYPE_CHECKING:
    from collections.abc import Iterable

    from relay.config import RelayConfig
    from relay.errors import RelayError

__all__ = ["Relay"]

log = logging.getLogger("relay.request")

_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key"})
_NO_KEY = (
    "this relay requires an API key: send it as 'Authorization: Bearer mr-…' "
    "or 'x-api-key: mr-…'; the relay's operator issues keys"
)


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
    # Client-side figures for /metrics (relay/telemetry.py).
    telemetry: Telemetry = attrs.field(factory=Telemetry)

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
                await nursery.start(self.keys.run)
            task_status.started()

    def wall_time(self, moment: float) -> float:
        """A `trio.current_time()` value as seconds since the Unix epoch."""
        return moment + self.wall_offset

    def rfc3339(self, moment: float) -> str:
        """A `trio.current_time()` value as an RFC 3339 UTC timestamp."""
        when = dt.datetime.fromtimestamp(self.wall_time(moment), dt.UTC)
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    # ------------------------------------------------------------ hot path

    def authorize(self, headers: list[tuple[bytes, bytes]]) -> tuple[dict[str, str], str | None]:
        """Check the client's credential; return the headers to forward and the key id.

        With `--require-api-keys` the credential (`Authorization: Bearer` or
        `x-api-key`) is consumed here: neither header is forwarded, so a relay
        key never reaches a worker.

        Raises:
            Unauthorized: keys are required and this request has no valid one.
        """
        pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]
        if not self.config.require_api_keys:
            return filter_headers(pairs), None
        key_id = self.check_key(pairs)
        return filter_headers(pairs, drop=_CREDENTIAL_HEADERS), key_id

    def check_key(self, headers: Iterable[tuple[str, str]]) -> str:
        """The id of the valid client key among `headers` (lower-case names).

        Any presented credential that is a valid key will do: a client may
        send both headers (one of them meant for something else).

        Raises:
            Unauthorized: none of them is a valid, unrevoked key.
        """
        keys = self.keys
        failure: Unauthorized | None = None
        for name, value in headers:
            lowered = name.lower()
            if lowered == "authorization":
                scheme, _, token = value.strip().partition(" ")
                if scheme.lower() != "bearer":
                    continue
                candidate = token.strip()
            elif lowered == "x-api-key":
                candidate = value.strip()
            else:
                continue
            if keys is None or not candidate.startswith(KEY_PREFIX):
                failure = failure or Unauthorized(
                    "the API key is not valid for this relay (relay keys start with 'mr-'); "
                    "ask the relay's operator for a key"
                )
                continue
            try:
                return keys.authenticate(candidate)
            except Unauthorized as exc:
                failure = exc
        raise failure or Unauthorized(_NO_KEY)

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
    ) -> None:
        self.stats.rejected(exc.status, key_id)
        self.telemetry.rejected(path, exc.status)
        log.info(
            "request rejected",
            extra={
                "request_id": request_id,
                "path": path,
                "model": model,
                "key_id": key_id,
                "status": exc.status,
                "error": exc.code,
                "duration_ms": round(elapsed * 1000, 2),
            },
        )

    def record_finished(self, summary: dict[str, Any]) -> None:
        """Count a finished request and log its canonical line (`call_summary`)."""
        counts = summary.pop("token_counts", None)
        tokens_in = tokens_out = None
        if counts is not None:
            tokens_in = summary["prompt_tokens"] = counts.prompt_tokens
            tokens_out = summary["completion_tokens"] = counts.completion_tokens
        ttfb_ms = summary.get("ttfb_ms")
        self.stats.finished(
            summary["model"],
            summary.get("key_id"),
            status=summary["status"],
            client_gone=summary.get("cancel_reason") == "client_disconnect",
            error=summary.get("error"),
            duration=summary["duration_ms"] / 1000,
            ttfb=ttfb_ms / 1000 if ttfb_ms is not None else None,
            requeues=summary.get("requeues", 0),
            tokens_in=tokens_in,
            tokens_out=tokens_out,
        )
        worker = self.hub.workers.get(summary.get("worker_id") or "")
        self.telemetry.finished(summary, worker.name if worker is not None else None)
        log.info("request finished", extra=summary)
