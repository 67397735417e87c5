"""The agent's configuration: one frozen value built and checked in one place.

`AgentConfig.create` takes the values the CLI gathered (flag > env > file >
default, see agent/cli.py), validates and normalises them, and raises
`ConfigError` naming the flag when one is wrong. Everything else in the agent
reads this value and never looks at the environment itself.
"""

import enum
import socket
from urllib.parse import urlencode, urlsplit, urlunsplit

import attrs

from agent.errors import ConfigError
from mrcommon.logs import parse_level_spec
from wire.limits import AGENT_RELAY_SILENCE_SECS

__all__ = [
    "DEFAULT_BACKEND_URL",
    "DEFAULT_PROXY_URL",
    "AgentConfig",
    "BackendDialect",
    "Backoff",
    "LogFormat",
    "Timeouts",
    "redact_url",
    "relay_ws_url",
]

DEFAULT_PROXY_URL = "http://127.0.0.1:8080"
DEFAULT_BACKEND_URL = "http://127.0.0.1:8000"

_WS_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
_CONNECT_PATH = "/v1/worker/connect"


class BackendDialect(enum.StrEnum):
    """How the backend serves Anthropic `/v1/messages` (see `--backend-dialect`)."""

    AUTO = "auto"
    ANTHROPIC = "anthropic"
    OPENAI = "openai"


class LogFormat(enum.StrEnum):
    """Log line format (see `--log-format`)."""

    TEXT = "text"
    JSON = "json"


@attrs.frozen
class Backoff:
    """Reconnect delays in seconds (see agent/backoff.py).

    Attributes:
        initial_secs: First delay after a normal failure.
        max_secs: Cap of the normal ladder.
        auth_initial_secs: First delay after the relay refused the secret.
        auth_max_secs: Cap of the authentication ladder.
        jitter: Largest share of a delay removed at random (0 = none).
    """

    initial_secs: float = 1.0
    max_secs: float = 30.0
    auth_initial_secs: float = 10.0
    auth_max_secs: float = 60.0
    jitter: float = 0.25


@attrs.frozen
class Timeouts:
    """Timeouts in seconds, applied at the call sites.

    Attributes:
        connect_secs: Opening the WebSocket (TCP, TLS, HTTP upgrade).
        register_secs: From `register` sent to `register_ack` received.
        close_secs: The clean close handshake and the final flush of the outbox.
        relay_silence_secs: No frame at all from the relay for this long ends
            the session.
        backend_connect_secs: Connecting to the backend. There is no read
            timeout: the relay owns request deadlines and cancels.
        discovery_secs: One model-discovery request to the backend.
        discovery_retry_secs: Discovery period while no model has been found.
    """

    connect_secs: float = 10.0
    register_secs: float = 10.0
    close_secs: float = 5.0
    relay_silence_secs: float = AGENT_RELAY_SILENCE_SECS
    backend_connect_secs: float = 10.0
    discovery_secs: float = 10.0
    discovery_retry_secs: float = 1.0


def redact_url(url: str) -> str:
    """`url` without any ``user:password@`` part, for logs and error messages.

    Args:
        url: Any URL.

    Returns:
        The same URL with its userinfo removed.
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def relay_ws_url(proxy_url: str, provider: str) -> str:
    """The WebSocket URL of the relay's worker endpoint.

    ``http`` becomes ``ws`` and ``https`` becomes ``wss`` (``ws``/``wss`` are
    kept), trailing slashes are dropped, a path prefix is kept, and
    ``/v1/worker/connect?provider=<provider>`` is appended (not twice if the
    URL already ends with it). Any query or fragment of `proxy_url` is dropped.

    Args:
        proxy_url: The relay's base URL as given to `--proxy-url`.
        provider: The provider to register under.

    Returns:
        The ``ws://`` or ``wss://`` URL to open.

    Raises:
        ConfigError: The URL's scheme is not http/https/ws/wss or it has no host.
    """
    parts = urlsplit(proxy_url.strip())
    scheme = _WS_SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ConfigError(
            "--proxy-url", f"{proxy_url!r} must start with http://, https://, ws:// or wss://"
        )
    if not parts.hostname:
        raise ConfigError("--proxy-url", f"{proxy_url!r} has no host")
    path = parts.path.rstrip("/")
    if not path.endswith(_CONNECT_PATH):
        path += _CONNECT_PATH
    return urlunsplit((scheme, parts.netloc, path, urlencode({"provider": provider}), ""))


def _backend_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme.lower() not in {"http", "https"}:
        raise ConfigError("--backend-url", f"{value!r} must start with http:// or https://")
    if not parts.hostname:
        raise ConfigError("--backend-url", f"{value!r} has no host")
    if parts.query or parts.fragment:
        raise ConfigError("--backend-url", f"{value!r} must not carry a query or fragment")
    return urlunsplit((parts.scheme.lower(), parts.netloc, parts.path.rstrip("/"), "", ""))


def _models(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    seen: dict[str, None] = {}
    for item in items:
        name = item.strip()
        if name:
            seen.setdefault(name, None)
    names = tuple(seen)
    if names == ("*",):
        return ()
    if "*" in names:
        raise ConfigError(
            "--models", "'*' (discover from the backend) cannot be combined with model names"
        )
    return names


def _positive(option: str, value: float) -> float:
    if not value > 0:
        raise ConfigError(option, f"{value!r} must be greater than 0")
    return float(value)


@attrs.frozen
class AgentConfig:
    """Everything one agent run needs, validated.

    Secrets are excluded from `repr` so that a config never leaks into a log line.

    Attributes:
        proxy_url: The relay's base URL as given.
        worker_secret: Secret presented to the relay (`X-Worker-Secret`).
        backend_url: The local backend's base URL, without trailing slash.
        backend_api_key: Bearer credential added to backend calls, if any.
        models: Models to advertise; empty means "discover from the backend".
        models_poll_interval: Seconds between discovery checks.
        provider: Provider to register under.
        worker_name: Name shown on the relay's dashboard.
        max_concurrency: Requests run at once; more get 503.
        backend_dialect: How `/v1/messages` reaches the backend.
        drain_timeout: Seconds a drain waits for in-flight requests.
        log_level: Level spec, e.g. ``info`` or ``agent=debug,httpx=warning``.
        log_format: Text or JSON lines.
        backoff: Reconnect delays.
        timeouts: Call-site timeouts.
    """

    proxy_url: str
    worker_secret: str = attrs.field(repr=False)
    backend_url: str
    backend_api_key: str | None = attrs.field(repr=False)
    models: tuple[str, ...]
    models_poll_interval: float
    provider: str
    worker_name: str
    max_concurrency: int
    backend_dialect: BackendDialect
    drain_timeout: float
    log_level: str
    log_format: LogFormat
    backoff: Backoff = Backoff()
    timeouts: Timeouts = Timeouts()
    # --ca-file: extra CA certificates for wss:// to the relay (agent/tls.py).
    ca_file: str | None = None
    # --metrics-listen: HOST:PORT of the agent's own /metrics (agent/metrics.py).
    metrics_listen: str | None = None

    @property
    def discover_models(self) -> bool:
        """Whether the model list comes from the backend (``--models '*'``)."""
        return not self.models

    @property
    def relay_display(self) -> str:
        """The relay's WebSocket URL without credentials, for logs."""
        return redact_url(self.ws_url)

    @property
    def backend_display(self) -> str:
        """The backend URL without credentials, for logs and error messages."""
        return redact_url(self.backend_url)

    @property
    def ws_url(self) -> str:
        """The relay's worker endpoint, e.g. ``ws://relay:8080/v1/worker/connect?provider=local``."""
        return relay_ws_url(self.proxy_url, self.provider)

    @classmethod
    def create(
        cls,
        *,
        worker_secret: str | None,
        proxy_url: str = DEFAULT_PROXY_URL,
        backend_url: str = DEFAULT_BACKEND_URL,
        backend_api_key: str | None = None,
        models: str | tuple[str, ...] | list[str] = "*",
        models_poll_interval: float = 30.0,
        provider: str = "local",
        worker_name: str | None = None,
        max_concurrency: int = 1,
        backend_dialect: str = "auto",
        drain_timeout: float = 30.0,
        log_level: str = "info",
        log_format: str = "text",
        backoff: Backoff | None = None,
        timeouts: Timeouts | None = None,
    ) -> "AgentConfig":
        """Validate and normalise raw option values into a config.

        Args:
            worker_secret: Required, non-empty.
            proxy_url: http(s) or ws(s) URL of the relay.
            backend_url: http(s) URL of the backend.
            backend_api_key: Optional backend credential (empty counts as none).
            models: ``*`` or a comma list (or a sequence of names).
            models_poll_interval: Seconds, > 0.
            provider: Non-empty.
            worker_name: Defaults to the host name.
            max_concurrency: >= 1.
            backend_dialect: ``auto``, ``anthropic`` or ``openai``.
            drain_timeout: Seconds, >= 0.
            log_level: Level spec (see agent/logging.py).
            log_format: ``text`` or ``json``.
            backoff: Reconnect delays (defaults if None).
            timeouts: Call-site timeouts (defaults if None).

        Returns:
            The config.

        Raises:
            ConfigError: A value is invalid; the error names its flag.
        """
        if not worker_secret:
            raise ConfigError("--worker-secret", "required (or set WORKER_SECRET)")
        provider = provider.strip()
        if not provider:
            raise ConfigError("--provider", "must not be empty")
        relay_ws_url(proxy_url, provider)  # validates --proxy-url
        if max_concurrency < 1:
            raise ConfigError("--max-concurrency", f"{max_concurrency} must be at least 1")
        if max_concurrency > 2**32 - 1:
            raise ConfigError("--max-concurrency", f"{max_concurrency} is too large")
        if drain_timeout < 0:
            raise ConfigError("--drain-timeout", f"{drain_timeout!r} must not be negative")
        try:
            dialect = BackendDialect(backend_dialect.strip().lower())
        except ValueError:
            raise ConfigError(
                "--backend-dialect", f"{backend_dialect!r} is not one of auto, anthropic, openai"
            ) from None
        try:
            fmt = LogFormat(log_format.strip().lower())
        except ValueError:
            raise ConfigError("--log-format", f"{log_format!r} is not one of text, json") from None
        try:
            parse_level_spec(log_level)
        except ValueError as exc:
            raise ConfigError("--log-level", str(exc)) from None
        name = (worker_name or "").strip() or socket.gethostname()
        return cls(
            proxy_url=proxy_url.strip(),
            worker_secret=worker_secret,
            backend_url=_backend_url(backend_url),
            backend_api_key=backend_api_key or None,
            models=_models(models),
            models_poll_interval=_positive("--models-poll-interval", models_poll_interval),
            provider=provider,
            worker_name=name,
            max_concurrency=int(max_concurrency),
            backend_dialect=dialect,
            drain_timeout=float(drain_timeout),
            log_level=log_level,
            log_format=fmt,
            backoff=backoff or Backoff(),
            timeouts=timeouts or Timeouts(),
        )
