"""What the agent tells an observer about itself: connection, load, models.

The daemon has no user interface; a front end (the desktop tray, agent/desktop/)
passes `run_agent(..., observer=fn)` and `fn` receives these frozen values, in
order, on the agent's own trio thread. An observer must return at once and
never raise: it is called from inside the reconnect loop and the session.
With no observer (``agent run``) none of this is built.
"""

import enum
import ssl
from collections.abc import Callable

import attrs

from agent.errors import AuthRefused, RelayUnreachable, VersionRejected

__all__ = [
    "AgentEvent",
    "Connected",
    "Connecting",
    "Disconnected",
    "FailureKind",
    "LoadChanged",
    "ModelsChanged",
    "Observer",
    "Stopped",
    "failure_kind",
]


class FailureKind(enum.StrEnum):
    """Why a session ended, as a person needs to tell them apart."""

    AUTH = "auth"  # the relay refused the worker secret
    TLS = "tls"  # the TLS handshake with the relay failed
    UNREACHABLE = "unreachable"  # no connection to the relay at all
    VERSION = "version"  # the relay speaks another protocol version
    DROPPED = "dropped"  # a registered session was lost (relay gone, network)
    DRAINED = "drained"  # the relay asked us to drain; we reconnect


@attrs.frozen
class Connecting:
    """A connection attempt to the relay begins."""


@attrs.frozen
class Connected:
    """The relay acknowledged our registration."""

    worker_id: str
    models: tuple[str, ...]


@attrs.frozen
class LoadChanged:
    """The number of requests in flight changed."""

    in_flight: int


@attrs.frozen
class ModelsChanged:
    """A model discovery attempt ended (``--models '*'`` only).

    Attributes:
        models: The models the agent now advertises.
        backend_reachable: Whether the backend answered this attempt.
    """

    models: tuple[str, ...]
    backend_reachable: bool


@attrs.frozen
class Disconnected:
    """A session ended (or never opened); the daemon retries after `retry_in` seconds."""

    kind: FailureKind
    message: str
    retry_in: float


@attrs.frozen
class Stopped:
    """The reconnect loop ended (after `Daemon.stop()`)."""


AgentEvent = Connecting | Connected | LoadChanged | ModelsChanged | Disconnected | Stopped
Observer = Callable[[AgentEvent], None]


def failure_kind(error: Exception | None, registered: bool) -> FailureKind:
    """Classify how a session attempt ended.

    Args:
        error: What the session raised, or None after a drain the relay asked for.
        registered: Whether the session had registered.

    Returns:
        The kind of failure.
    """
    if error is None:
        return FailureKind.DRAINED
    if isinstance(error, AuthRefused):
        return FailureKind.AUTH
    if isinstance(error, VersionRejected):
        return FailureKind.VERSION
    if isinstance(error, RelayUnreachable):
        cause: BaseException | None = error
        while cause is not None:  # the SSLError sits a few causes down
            if isinstance(cause, ssl.SSLError):
                return FailureKind.TLS
            cause = cause.__cause__
        return FailureKind.UNREACHABLE
    return FailureKind.DROPPED if registered else FailureKind.UNREACHABLE
