"""The relay's state, built once by `server.py` and handed to the app.

No globals: `create_app(relay)` receives this object, and every view and the
proxy reach the hub, the in-flight registry and the stats through it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import attrs
import trio

from relay import __version__
from relay.inflight import InFlight
from relay.worker_hub import Hub
from wire.limits import filter_headers

if TYPE_CHECKING:
    from relay.config import RelayConfig
    from relay.errors import RelayError

__all__ = ["Relay"]

log = logging.getLogger("relay.request")

_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key"})


@attrs.define(eq=False)
class Relay:
    """Owns the hub, the in-flight registry and the relay-wide counters."""

    config: RelayConfig
    hub: Hub
    inflight: InFlight = attrs.field(factory=InFlight)
    started_at: float = attrs.field(factory=trio.current_time)
    version: str = __version__

    @classmethod
    def from_config(cls, config: RelayConfig) -> Relay:
        return cls(config=config, hub=Hub(config))

    def authorize(self, headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
        """Check the client's credential; return the headers to forward.

        Raises:
            Unauthorized: keys are required and this request has no valid one.
        """
        pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]
        if not self.config.require_api_keys:
            return filter_headers(pairs)
        # Keys are checked by the key store (see relay/keys.py); the consumed
        # credential never reaches a worker.
        return filter_headers(pairs, drop=_CREDENTIAL_HEADERS)

    def record_rejected(self, request_id: str, path: str, exc: RelayError, elapsed: float) -> None:
        log.info(
            "request rejected",
            extra={
                "request_id": request_id,
                "path": path,
                "status": exc.status,
                "error": exc.code,
                "duration_ms": round(elapsed * 1000, 2),
            },
        )

    def record_finished(self, summary: dict[str, Any]) -> None:
        counts = summary.pop("token_counts", None)
        if counts is not None:
            summary["prompt_tokens"] = counts.prompt_tokens
            summary["completion_tokens"] = counts.completion_tokens
        log.info("request finished", extra=summary)
