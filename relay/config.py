"""The relay's configuration: one frozen value built at the edge (cli.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import attrs

from relay.trusted import TrustedProxies
from wire import limits

__all__ = ["RelayConfig", "default_data_dir", "parse_listen"]

MiB = 1024 * 1024


def parse_listen(text: str) -> tuple[str, int]:
    """Split `host:port` (or `[v6]:port`) into its parts.

    Raises:
        ValueError: with a message fit for the `--listen` flag's error.
    """
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:8080 or [::1]:8080), got {text!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range 0..65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", port


def default_data_dir() -> Path:
    """The platform's per-user data directory for ModelRelay."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "modelrelay"


@attrs.frozen
class RelayConfig:
    """Everything `relay serve` needs, validated; times in seconds, 0 = none."""

    worker_secret: str = attrs.field(repr=False)
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    provider: str = "local"
    max_queue_len: int = 100
    queue_timeout: float = 30.0
    request_timeout: float = 300.0
    log_level: str = "info"
    log_format: str = "text"
    admin_token: str | None = attrs.field(default=None, repr=False)
    require_api_keys: bool = False
    data_dir: Path = attrs.field(factory=default_data_dir)
    database_url: str | None = attrs.field(default=None, repr=False)
    heartbeat_interval: float = limits.DEFAULT_HEARTBEAT_INTERVAL_SECS
    heartbeat_timeout: float = limits.DEFAULT_HEARTBEAT_TIMEOUT_SECS
    drain_timeout: float = 30.0
    # After the first signal: /health answers 503 but new work is still
    # served this long, so a balancer's health check takes the relay out of
    # rotation before it refuses anything (docs/operations.md, rolling restart).
    drain_grace: float = 0.0
    max_body_bytes: int = 32 * MiB
    max_frame_bytes: int = limits.DEFAULT_MAX_RECEIVE_FRAME_BYTES
    max_response_bytes: int = 1024 * MiB
    body_timeout: float = 30.0
    # Body bytes held across all requests read but not yet dispatched.
    max_pending_body_bytes: int = 256 * MiB
    # The web console under /console; it is served only with an admin token too.
    console: bool = True
    http_front: str = attrs.field(
        default="builtin", validator=attrs.validators.in_(("builtin", "hypercorn"))
    )
    # --trusted-proxies: whose X-Forwarded-For/-Proto to believe (relay/proxies.py).
    trusted_proxies: TrustedProxies = attrs.field(factory=TrustedProxies)
    # Seconds between keepalives to a streamed request still waiting for its
    # first token (queued, or prefilling); 0 = none.
    stream_keepalive: float = 10.0
    # Not flags: policy the spec fixes, kept here so tests can shorten them.
    max_requeues: int = 3
    # A worker whose backend fails `max_fails` requests before their first
    # byte within `fail_timeout` s is ejected for `fail_timeout` s.
    max_fails: int = 3
    fail_timeout: float = 30.0
    model_grace: float = 60.0
    cancel_grace: float = limits.CANCEL_GRACE_SECS
    register_timeout: float = 10.0
    client_buffer_bytes: int = 8 * MiB
    auth_failure_limit: int = 10
    auth_failure_window: float = 60.0
    max_worker_concurrency: int = 65536
    console_session_secs: float = 12 * 3600.0

    @property
    def console_enabled(self) -> bool:
        """Whether /console is served: asked for, and an admin token to log in with."""
        return self.console and bool(self.admin_token)

    keep_alive_timeout: float = 30.0

    @property
    def listen(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"
