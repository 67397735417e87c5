"""From the agent's events to what the tray shows: pure logic, no Qt.

`TrayModel` owns the facts the agent reported (link up or down, the last
failure, requests in flight, models, whether the backend answers, paused) and
derives one `TrayState` from them: the icon, the tooltip and the status line
all read that one value. It also decides which desktop notifications to show:
a lost connection is announced only when it stays lost for `debounce_secs`
(a relay restart that takes a second is not worth a pop-up), and "back online"
only follows an announced loss.

Time is passed in (``now``, seconds on any monotonic clock), so the tests
drive it without sleeping.
"""

import enum

import attrs

from agent.events import (
    AgentEvent,
    Connected,
    Connecting,
    Disconnected,
    FailureKind,
    LoadChanged,
    ModelsChanged,
    Stopped,
)

__all__ = ["Notification", "TrayKind", "TrayModel", "TrayState", "error_message"]


class TrayKind(enum.StrEnum):
    """The icon's states."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RELAYING = "relaying"
    ERROR = "error"
    PAUSED = "paused"


class _Link(enum.Enum):
    DOWN = "down"
    CONNECTING = "connecting"
    UP = "up"


# Failures that will not heal by retrying alone: the icon stays red through
# the retries until a session registers again.
_STICKY = {FailureKind.AUTH, FailureKind.TLS, FailureKind.VERSION, FailureKind.UNREACHABLE}


def error_message(kind: FailureKind | None, relay: str, backend: str) -> str:
    """The sentence a person reads for a failure (None: the backend is down).

    Args:
        kind: The failure, or None for "the backend does not answer".
        relay: The relay's URL, as the user typed it.
        backend: The backend's URL.

    Returns:
        One sentence that says what is wrong and where to fix it.
    """
    if kind is None:
        return f"The backend at {backend} does not answer: is your LLM server running?"
    return {
        FailureKind.AUTH: "The relay refused the worker secret: check it in Settings.",
        FailureKind.TLS: (
            f"TLS error talking to {relay}: check the certificate, or http:// vs https://."
        ),
        FailureKind.UNREACHABLE: f"Cannot reach the relay at {relay}: is it running?",
        FailureKind.VERSION: "The relay speaks another protocol version: upgrade one of them.",
        FailureKind.DROPPED: "Lost the connection to the relay; reconnecting.",
        FailureKind.DRAINED: "The relay asked us to pause; reconnecting.",
    }[kind]


@attrs.frozen
class TrayState:
    """What the tray shows now.

    Attributes:
        kind: The icon's state.
        in_flight: Requests being relayed.
        message: One line for the status entry and the tooltip.
        models: The models advertised.
    """

    kind: TrayKind
    in_flight: int = 0
    message: str = ""
    models: tuple[str, ...] = ()


@attrs.frozen
class Notification:
    """A desktop notification to show."""

    title: str
    text: str
    error: bool = False


@attrs.define(eq=False)
class TrayModel:
    """Owns the agent's reported facts and derives the tray's state and notifications.

    Attributes:
        relay: The relay URL (for messages and the tooltip).
        backend: The backend URL.
        worker_name: Shown in the tooltip.
        max_concurrency: Shown as the load's denominator.
        debounce_secs: How long a loss must last before it is announced.
    """

    relay: str
    backend: str
    worker_name: str
    max_concurrency: int
    debounce_secs: float = 10.0
    paused: bool = False
    _link: _Link = _Link.DOWN
    _failure: FailureKind | None = None
    _failure_text: str = ""
    _in_flight: int = 0
    _models: tuple[str, ...] = ()
    _backend_ok: bool | None = None
    _lost_at: float | None = None
    _loss_announced: bool = False
    _was_up: bool = False
    _announced_failure: FailureKind | None = None

    @property
    def state(self) -> TrayState:
        """The tray's state, derived from the facts."""
        models = self._models
        if self.paused and self._link is not _Link.UP:
            return TrayState(TrayKind.PAUSED, 0, "Paused: not taking requests.", models)
        if self._link is _Link.UP:
            if self._backend_ok is False:
                text = error_message(None, self.relay, self.backend)
                return TrayState(TrayKind.ERROR, self._in_flight, text, models)
            if self._in_flight > 0:
                text = f"Relaying {self._in_flight} request(s)."
                return TrayState(TrayKind.RELAYING, self._in_flight, text, models)
            return TrayState(TrayKind.CONNECTED, 0, "Connected, idle.", models)
        if self._failure in _STICKY:
            text = error_message(self._failure, self.relay, self.backend)
            return TrayState(TrayKind.ERROR, 0, text, models)
        if self._link is _Link.CONNECTING:
            return TrayState(TrayKind.CONNECTING, 0, "Connecting to the relay…", models)
        if self._failure is not None:
            text = error_message(self._failure, self.relay, self.backend)
            return TrayState(TrayKind.DISCONNECTED, 0, text, models)
        return TrayState(TrayKind.DISCONNECTED, 0, "Not connected.", models)

    @property
    def tooltip(self) -> str:
        """Relay, worker name, models and load, one per line."""
        state = self.state
        models = ", ".join(state.models) if state.models else "none yet"
        return "\n".join(
            [
                f"ModelRelay: {state.kind.value}",
                state.message,
                f"Relay: {self.relay}",
                f"Worker: {self.worker_name}",
                f"Models: {models}",
                f"Load: {state.in_flight}/{self.max_concurrency}",
            ]
        )

    def set_paused(self, paused: bool) -> None:
        """Record that the user paused (or resumed) the agent."""
        self.paused = paused
        if paused:
            # A paused agent is down on purpose: nothing to announce.
            self._lost_at = None
            self._loss_announced = False

    def apply(self, event: AgentEvent, now: float) -> list[Notification]:
        """Take one agent event into account.

        Args:
            event: What the agent reported.
            now: The current time (monotonic seconds).

        Returns:
            Notifications to show at once (configuration errors, recovery).
        """
        out: list[Notification] = []
        if isinstance(event, Connecting):
            self._link = _Link.CONNECTING
        elif isinstance(event, Connected):
            self._link = _Link.UP
            self._failure = None
            self._announced_failure = None
            self._in_flight = 0
            self._models = event.models
            if self._loss_announced:
                out.append(Notification("ModelRelay: back online", f"Connected to {self.relay}."))
            self._lost_at = None
            self._loss_announced = False
            self._was_up = True
        elif isinstance(event, LoadChanged):
            self._in_flight = event.in_flight
        elif isinstance(event, ModelsChanged):
            self._models = event.models
            self._backend_ok = event.backend_reachable
        elif isinstance(event, Disconnected):
            self._link = _Link.DOWN
            self._in_flight = 0
            self._failure = event.kind
            self._failure_text = event.message
            if self._was_up and self._lost_at is None and not self.paused:
                self._lost_at = now
            if event.kind in (FailureKind.AUTH, FailureKind.TLS, FailureKind.VERSION) and (
                self._announced_failure is not event.kind
            ):
                # A configuration problem: say so once, not at every retry.
                self._announced_failure = event.kind
                text = error_message(event.kind, self.relay, self.backend)
                out.append(Notification("ModelRelay: cannot connect", text, error=True))
        elif isinstance(event, Stopped):
            self._link = _Link.DOWN
            self._in_flight = 0
            self._lost_at = None
        return out

    def tick(self, now: float) -> list[Notification]:
        """Notifications that are due by `now` (a loss that has lasted long enough).

        Args:
            now: The current time (monotonic seconds).

        Returns:
            At most one notification.
        """
        if (
            self._lost_at is not None
            and not self._loss_announced
            and now - self._lost_at >= self.debounce_secs
        ):
            self._loss_announced = True
            text = error_message(self._failure, self.relay, self.backend)
            return [Notification("ModelRelay: connection lost", text, error=True)]
        return []
