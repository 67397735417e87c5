"""The agent's lifetime: reconnect forever around one session at a time; signals.

Task tree::

    run_agent
    └── root nursery
        ├── signal watcher   1st SIGTERM/SIGINT → Daemon.stop() (drain, then exit 0)
        │                    2nd → cancel everything, exit at once (also exit code 0)
        └── Daemon.run       open the WebSocket → Session.run → classify → backoff → ...

Failures are classified by the `SessionError` a session ends with:

- `AuthRefused` (HTTP 401/403/429 on the upgrade, close 1008 "authentication"):
  one ERROR line saying the worker secret was refused, then the long
  cool-down ladder (10 s doubling to 60 s; at least the relay's Retry-After);
- `VersionRejected` (close 1002 naming versions): one ERROR line, normal ladder;
- anything else: one WARNING line, normal ladder (1 s doubling to 30 s).

A session that registered resets the ladders. A drain requested by the relay
(``graceful_shutdown``) ends the session normally, and the daemon reconnects
with the usual backoff: a relay never makes an agent exit.

A second signal exits with code 0 as well: the operator asked the agent to
stop, and a non-zero code would make ``Restart=on-failure`` units restart it.
"""

import logging
import signal
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import attrs
import trio

from agent.backend import Backend, open_backend
from agent.backoff import BackoffTracker, FailureKind
from agent.config import AgentConfig
from agent.discovery import ModelCatalog
from agent.errors import AuthRefused, SessionError, VersionRejected
from agent.events import (
    Connected,
    Connecting,
    Disconnected,
    LoadChanged,
    ModelsChanged,
    Observer,
    Stopped,
    failure_kind,
)
from agent.session import Session
from agent.transport import Transport, open_relay_transport
from mrcommon.limits import raise_open_file_limit

__all__ = ["Daemon", "run_agent"]

log = logging.getLogger(__name__)


@attrs.define(eq=False)
class _Outcome:
    """How one session attempt ended."""

    registered: bool
    error: Exception | None


@attrs.define(eq=False)
class Daemon:
    """Owns the reconnect loop: one session at a time, backoff between them.

    Attributes:
        config: The agent's configuration.
        backend: The backend client (one per agent run).
        catalog: The advertised models, kept across sessions.
        backoff: The reconnect ladders.
        connect: Opens one connection to the relay (tests pass an in-memory one).
        observer: Told about connection, load and model changes (agent/events.py).
        sessions: How many sessions have registered so far.
    """

    config: AgentConfig
    backend: Backend
    catalog: ModelCatalog
    backoff: BackoffTracker
    connect: Callable[[AgentConfig], AbstractAsyncContextManager[Transport]] = open_relay_transport
    observer: Observer | None = None
    sessions: int = attrs.field(default=0, init=False)
    _session: Session | None = attrs.field(default=None, init=False)
    _stopping: bool = attrs.field(default=False, init=False)
    _loop_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope, init=False)
    _registered: trio.Event = attrs.field(factory=trio.Event, init=False)

    @property
    def session(self) -> Session | None:
        """The current session, if one is open."""
        return self._session

    async def wait_registered(self) -> Session:
        """Wait until a session is registered with the relay, and return it."""
        while True:
            session = self._session
            if session is not None and session.registered:
                return session
            await self._registered.wait()
            # Each registration sets a fresh event; loop in case the session
            # ended again before we woke.

    def stop(self) -> None:
        """Drain the current session (if registered), then make `run` return.

        What the first SIGTERM/SIGINT does. With no registered session there
        is nothing in flight, so the loop ends at once.
        """
        if self._stopping:
            return
        self._stopping = True
        session = self._session
        if session is not None and session.registered:
            session.begin_drain(self.config.drain_timeout, "signal")
        else:
            self._loop_scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reconnect forever until `stop()`; never raises for a relay or network failure.

        Args:
            task_status: Started as soon as the loop begins.
        """
        task_status.started()
        with self._loop_scope:
            while True:
                outcome = await self._one_session()
                if self._stopping:
                    return
                if outcome.registered:
                    self.backoff.reset()
                await trio.sleep(self._delay_after(outcome))

    def _delay_after(self, outcome: _Outcome) -> float:
        error = outcome.error
        if isinstance(error, AuthRefused):
            delay = max(self.backoff.next_delay(FailureKind.AUTH), error.retry_after or 0.0)
            log.error(
                "the relay refused the worker secret: check --worker-secret (WORKER_SECRET) "
                "against the relay's; retrying in %.1f s",
                delay,
                extra={
                    "relay": self.config.relay_display,
                    "detail": str(error),
                    "retry_in_secs": round(delay, 1),
                },
            )
        elif isinstance(error, VersionRejected):
            delay = self.backoff.next_delay(FailureKind.NORMAL)
            log.error(
                "the relay does not speak our protocol version; upgrade the agent or the "
                "relay; retrying in %.1f s",
                delay,
                extra={
                    "relay": self.config.relay_display,
                    "detail": error.reason,
                    "retry_in_secs": round(delay, 1),
                },
            )
        elif error is None:
            delay = self.backoff.next_delay(FailureKind.NORMAL)
            log.info(
                "drained at the relay's request; reconnecting in %.1f s",
                delay,
                extra={"retry_in_secs": round(delay, 1)},
            )
        else:
            delay = self.backoff.next_delay(FailureKind.NORMAL)
            verb = "disconnected from" if outcome.registered else "cannot connect to"
            log.warning(
                "%s the relay: %s; reconnecting in %.1f s",
                verb,
                error,
                delay,
                extra={"relay": self.config.relay_display, "retry_in_secs": round(delay, 1)},
            )
        if self.observer is not None:
            kind = failure_kind(error, outcome.registered)
            self.observer(Disconnected(kind, str(error) if error else "", delay))
        return delay

    async def _one_session(self) -> _Outcome:
        session: Session | None = None
        observer = self.observer
        if observer is not None:
            observer(Connecting())
        try:
            async with self.connect(self.config) as transport:
                session = Session(self.config, transport, self.backend, self.catalog)
                if observer is not None:
                    session.on_load = lambda n: observer(LoadChanged(n))
                self._session = session
                await session.run(task_status=_RegisteredHook(self))
            return _Outcome(registered=True, error=None)
        except SessionError as exc:
            return _Outcome(registered=session is not None and session.registered, error=exc)
        except Exception as exc:
            # A bug must not stop a box from serving: log it whole and retry.
            log.exception("session crashed inside the agent")
            return _Outcome(registered=session is not None and session.registered, error=exc)
        finally:
            self._session = None

    def _on_registered(self) -> None:
        self.sessions += 1
        session = self._session
        if self.observer is not None and session is not None and session.worker_id:
            self.observer(Connected(session.worker_id, self.catalog.models))
        event, self._registered = self._registered, trio.Event()
        event.set()


@attrs.define(eq=False)
class _RegisteredHook:
    """Passed to `Session.run` as its `task_status`: tells the daemon it registered."""

    daemon: Daemon

    def started(self, value: object = None) -> None:
        self.daemon._on_registered()


async def _watch_signals(
    daemon: Daemon,
    root: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        first = True
        async for signum in signals:
            name = signal.Signals(signum).name
            if first:
                first = False
                log.info(
                    "%s received: draining (a second signal exits at once)",
                    name,
                    extra={"drain_timeout_secs": daemon.config.drain_timeout},
                )
                daemon.stop()
            else:
                session = daemon.session
                log.warning(
                    "%s received again: exiting now",
                    name,
                    extra={"abandoned": len(session.jobs) if session else 0},
                )
                root.cancel()
                return


async def run_agent(
    config: AgentConfig,
    *,
    handle_signals: bool = True,
    observer: Observer | None = None,
    task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run an agent until stopped: the entry point of `agent run`.

    In-process use (tests, benchmarks)::

        daemon = await nursery.start(partial(run_agent, config, handle_signals=False))
        await daemon.wait_registered()
        ...
        daemon.stop()          # drain like a first SIGTERM; run_agent returns after

    Args:
        config: The configuration.
        handle_signals: Install SIGTERM/SIGINT handling (main thread only).
        observer: Told what the agent is doing (the desktop tray; agent/events.py).
        task_status: Started with the `Daemon` once the reconnect loop runs.
    """
    limit = raise_open_file_limit()
    log.info(
        "agent starting",
        extra={
            "relay": config.relay_display,
            "backend": config.backend_display,
            "worker_name": config.worker_name,
            "models": list(config.models) if config.models else "*",
            "max_concurrency": config.max_concurrency,
            "open_file_limit": limit,
        },
    )
    async with open_backend(config) as backend:
        catalog = ModelCatalog(models=config.models)
        if observer is not None:
            catalog.on_change = lambda models, ok: observer(ModelsChanged(models, ok))
        daemon = Daemon(config, backend, catalog, BackoffTracker(config.backoff))
        daemon.observer = observer
        async with trio.open_nursery() as nursery:
            if handle_signals:
                await nursery.start(_watch_signals, daemon, nursery.cancel_scope)
            task_status.started(daemon)
            await daemon.run()
            nursery.cancel_scope.cancel()  # the signal watcher
    if observer is not None:
        observer(Stopped())
    log.info("agent stopped")
