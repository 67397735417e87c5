"""Errors the agent raises on purpose.

The tree::

    AgentError                    root of everything `agent` raises on purpose
    ├── ConfigError               a flag, variable or config-file value is invalid
    ├── SessionError              one relay session ended; the daemon reconnects
    │   ├── RelayUnreachable      TCP/TLS/handshake failed, or the relay answered
    │   │                         the upgrade with a status other than an auth refusal
    │   ├── AuthRefused           the relay refused the worker secret (HTTP 401/403/429
    │   │                         on the upgrade, or close 1008 "...authentication...")
    │   ├── RelayClosed           the relay closed the socket (any other close code)
    │   │   └── VersionRejected   close 1002 naming a protocol version
    │   ├── RelayProtocolError    the relay sent a frame we cannot decode (we close 1002)
    │   ├── RegistrationTimeout   no `register_ack` in time
    │   └── RelaySilent           no frame from the relay for `AGENT_RELAY_SILENCE_SECS`
    └── BackendError              one backend call failed; that request ends with 502
        ├── BackendUnreachable    connect refused, DNS, TLS, connect timeout
        ├── BackendTimeout        the backend stopped answering (read/write/pool timeout)
        └── BackendBroken         the backend broke the HTTP exchange (reset, bad framing)

`SessionError` never carries the worker secret: messages are built from close
codes, statuses and URLs only.
"""

__all__ = [
    "AgentError",
    "AuthRefused",
    "BackendBroken",
    "BackendError",
    "BackendTimeout",
    "BackendUnreachable",
    "ConfigError",
    "RegistrationTimeout",
    "RelayClosed",
    "RelayProtocolError",
    "RelaySilent",
    "RelayUnreachable",
    "SessionError",
    "VersionRejected",
]


class AgentError(Exception):
    """Root of the agent's exceptions."""


class ConfigError(AgentError):
    """A configuration value is invalid.

    Attributes:
        option: The flag the value came from, e.g. ``--max-concurrency``.
    """

    option: str

    def __init__(self, option: str, message: str) -> None:
        super().__init__(option, message)
        self.option = option
        self.message = message

    def __str__(self) -> str:
        return f"invalid value for {self.option}: {self.message}"


class SessionError(AgentError):
    """A relay session ended; the daemon decides how long to wait before the next."""


class RelayUnreachable(SessionError):
    """The WebSocket could not be opened (network, TLS, or an unexpected HTTP status).

    Attributes:
        status_code: The HTTP status the relay answered the upgrade with, if any.
    """

    status_code: int | None

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class AuthRefused(SessionError):
    """The relay refused the worker secret.

    Attributes:
        status_code: HTTP status of the refused upgrade, or None for a 1008 close.
        retry_after: Seconds the relay asked us to wait (429 `Retry-After`), if any.
    """

    status_code: int | None
    retry_after: float | None

    def __init__(
        self, message: str, status_code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after


class RelayClosed(SessionError):
    """The relay closed the WebSocket.

    Attributes:
        code: The close code (1006 when the TCP connection simply dropped).
        reason: The close reason, possibly empty.
    """

    code: int
    reason: str

    def __init__(self, code: int, reason: str | None) -> None:
        self.code = code
        self.reason = reason or ""
        super().__init__(code, self.reason)

    def __str__(self) -> str:
        if self.reason:
            return f"relay closed the connection (code {self.code}: {self.reason})"
        return f"relay closed the connection (code {self.code})"


class VersionRejected(RelayClosed):
    """The relay does not speak our protocol version (close 1002 naming versions)."""


class RelayProtocolError(SessionError):
    """The relay sent a frame we cannot decode; we closed the socket with 1002."""


class RegistrationTimeout(SessionError):
    """The relay did not answer `register` with `register_ack` in time."""


class RelaySilent(SessionError):
    """Nothing arrived from the relay for too long; the connection is presumed dead."""


class BackendError(AgentError):
    """A call to the local backend failed.

    Attributes:
        url: The backend URL that was called (never carries a credential).
        public: The message names no URL, address or OS error text, so a
            client may read it (a job otherwise tells the client only the
            kind of failure; the log always gets all of it).
    """

    url: str

    def __init__(self, message: str, url: str, *, public: bool = False) -> None:
        super().__init__(message, url)
        self.message = message
        self.url = url
        self.public = public

    def __str__(self) -> str:
        return f"{self.message} ({self.url})"


class BackendUnreachable(BackendError):
    """The backend could not be reached (refused, DNS, TLS, connect timeout)."""


class BackendTimeout(BackendError):
    """The backend stopped answering in time."""


class BackendBroken(BackendError):
    """The backend broke the HTTP exchange midway (connection reset, bad framing)."""
