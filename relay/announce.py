"""What the relay says once it listens: its effective limits, and unsafe exposure.

Upstream prints its limits and timeouts at start-up; an operator reading the
log then knows what a 429, 504 or 413 was measured against without looking
for the flags, the environment and the config file that made them. And a
relay that takes clients without keys on a public address serves anyone who
finds it: that deserves a warning every time it starts.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relay.config import RelayConfig

__all__ = ["announce_settings", "effective_settings", "is_loopback"]

log = logging.getLogger("relay.server")


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or `localhost`) is only reachable from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # a host name: assume it resolves to something reachable


def effective_settings(config: RelayConfig) -> dict[str, Any]:
    """The limits and timeouts in force (seconds; 0 = none), for the start-up line."""
    return {
        "max_queue_len": config.max_queue_len,
        "queue_timeout_s": config.queue_timeout,
        "request_timeout_s": config.request_timeout,
        "drain_timeout_s": config.drain_timeout,
        "heartbeat_interval_s": config.heartbeat_interval,
        "heartbeat_timeout_s": config.heartbeat_timeout,
        "max_body_bytes": config.max_body_bytes,
        "max_frame_bytes": config.max_frame_bytes,
        "max_response_bytes": config.max_response_bytes,
        "max_requeues": config.max_requeues,
        "require_api_keys": config.require_api_keys,
        "admin_api": config.admin_token is not None,
        "trusted_proxies": ",".join(str(n) for n in config.trusted_proxies.networks) or "none",
    }


def announce_settings(config: RelayConfig) -> None:
    """Log the effective limits, and warn when anyone can use the relay without a key."""
    log.info("relay limits", extra=effective_settings(config))
    if not config.require_api_keys and not is_loopback(config.listen_host):
        log.warning(
            "clients need no API key and the relay listens on a non-loopback address: "
            "anyone who can reach it can use your backends (--require-api-keys)",
            extra={"listen": config.listen},
        )
