"""The agent on its own thread, and the thread-safe bridge to the GUI. No Qt here.

Why a worker thread and not trio's guest mode on Qt's loop (`qtrio`): the
agent's hot path (a run-loop trip per frame, measured in docs/benchmarks.md)
stays on trio's own epoll loop, unaffected by a busy or blocked GUI (a modal
dialog, a slow paint); and qtrio 0.8 pins ``trio-typing~=0.8`` and
``qts~=0.3``, packages that have not moved with trio 0.35. The price is the
bridge, kept small and one-way each direction:

- agent → GUI: `run_agent`'s observer (agent/events.py) and the log handler
  call a callback from the agent thread; the GUI passes a Qt signal's
  ``emit``, which Qt queues to the GUI thread. The agent never touches a widget.
- GUI → agent: `pause`, `resume`, `reconfigure` and `quit` hand a function to
  trio with ``TrioToken.run_sync_soon`` (thread-safe, never blocks). The GUI
  never waits on the agent: it learns the outcome from the events.

Task tree (all on the agent thread)::

    trio.run(_main)
    └── quit scope          deadline set by quit(): drain_timeout + grace
        └── loop            run_agent(config, observer) until stopped;
                            then wait while paused, or run again
"""

import collections
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Callable
from functools import partial

import attrs
import trio

from agent.config import AgentConfig
from agent.daemon import Daemon, run_agent
from agent.events import AgentEvent
from agent.logging import TextFormatter

__all__ = ["AgentRunner", "Finished", "LogBuffer", "Paused", "RunnerEvent", "SignalInbox"]

log = logging.getLogger(__name__)

# After the drain deadline, this long again for the close handshake and the
# backend client before quitting cancels what is left.
_QUIT_GRACE_SECS = 5.0
_START_WAIT_SECS = 10.0


@attrs.frozen
class Paused:
    """The agent stopped because the user paused it; it waits for `resume`."""


@attrs.frozen
class Finished:
    """The agent thread ended (after `quit`)."""


RunnerEvent = AgentEvent | Paused | Finished


@attrs.define(eq=False)
class AgentRunner:
    """Owns the agent thread: runs `run_agent` there, and pauses, reconfigures or quits it.

    Attributes:
        config: The configuration the next run uses.
        on_event: Called on the agent thread with every event (must be thread-safe).
        paused: Whether the user paused the agent.
    """

    config: AgentConfig
    on_event: Callable[[RunnerEvent], None]
    paused: bool = False
    _thread: threading.Thread | None = attrs.field(default=None, init=False)
    _token: trio.lowlevel.TrioToken | None = attrs.field(default=None, init=False)
    _ready: threading.Event = attrs.field(factory=threading.Event, init=False)
    _daemon: Daemon | None = attrs.field(default=None, init=False)
    _quitting: bool = attrs.field(default=False, init=False)
    _wake: trio.Event | None = attrs.field(default=None, init=False)
    _quit_scope: trio.CancelScope | None = attrs.field(default=None, init=False)

    def start(self) -> None:
        """Start the agent thread (returns once trio runs there, at most 10 s)."""
        self._thread = threading.Thread(target=self._thread_main, name="agent", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_WAIT_SECS):
            raise RuntimeError("the agent thread did not start")

    @property
    def alive(self) -> bool:
        """Whether the agent thread is still running."""
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end; whether it did within `timeout` seconds."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- commands from the GUI thread ---------------------------------------

    def pause(self) -> None:
        """Drain, then stay disconnected until `resume`."""
        self._call(self._do_pause)

    def resume(self) -> None:
        """Connect again after `pause`."""
        self._call(self._do_resume)

    def reconfigure(self, config: AgentConfig) -> None:
        """Drain, then run again with `config` (stays paused if paused)."""
        self._call(partial(self._do_reconfigure, config))

    def quit(self) -> None:
        """Drain (bounded by the drain timeout plus a grace), then end the thread."""
        self._call(self._do_quit)

    def _call(self, fn: Callable[[], None]) -> None:
        token = self._token
        if token is None:
            return
        # RunFinishedError: the agent already ended, nothing left to command.
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(fn)

    # --- on the agent thread ------------------------------------------------

    def _do_pause(self) -> None:
        self.paused = True
        if self._daemon is not None:
            self._daemon.stop()

    def _do_resume(self) -> None:
        self.paused = False
        if self._wake is not None:
            self._wake.set()

    def _do_reconfigure(self, config: AgentConfig) -> None:
        self.config = config
        if self._daemon is not None:
            self._daemon.stop()

    def _do_quit(self) -> None:
        self._quitting = True
        if self._quit_scope is not None:
            self._quit_scope.deadline = (
                trio.current_time() + self.config.drain_timeout + _QUIT_GRACE_SECS
            )
        if self._daemon is not None:
            self._daemon.stop()
        if self._wake is not None:
            self._wake.set()

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except Exception:
            log.exception("the agent thread crashed")
        finally:
            self.on_event(Finished())

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._quit_scope = trio.CancelScope()
        self._ready.set()
        with self._quit_scope:
            while not self._quitting:
                if self.paused:
                    self.on_event(Paused())
                    self._wake = trio.Event()
                    await self._wake.wait()
                    continue
                async with trio.open_nursery() as nursery:
                    self._daemon = await nursery.start(
                        partial(
                            run_agent, self.config, handle_signals=False, observer=self.on_event
                        )
                    )
                    if self._quitting or self.paused:  # asked while it was starting
                        self._daemon.stop()
                self._daemon = None
        if self._quit_scope.cancelled_caught:
            log.warning("quit: the drain did not finish in time; in-flight requests abandoned")


class LogBuffer(logging.Handler):
    """Owns the last `capacity` log lines (text format) for the log window.

    `on_line` (thread-safe, e.g. a Qt signal's emit) gets each new line; it
    may be set after construction.
    """

    def __init__(self, capacity: int = 2000) -> None:
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=capacity)
        self.problems: collections.deque[str] = collections.deque(maxlen=20)
        self.on_line: Callable[[str], None] | None = None
        self.setFormatter(TextFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.lines.append(line)
        if record.levelno >= logging.WARNING:
            self.problems.append(line)
        callback = self.on_line
        if callback is not None:
            callback(line)


class SignalInbox:
    """Owns SIGTERM and SIGINT for the desktop app, from before Qt is even imported.

    Python runs signal handlers only between bytecodes of the main thread,
    and the main thread spends its life inside Qt's C++ loop; so the handler
    only records the signal, and `signal.set_wakeup_fd` writes a byte to a
    socket that the GUI watches (`reader`). Installed first thing, so a
    signal that arrives while the app is still starting is not lost (and
    does not kill the process): the GUI finds it waiting.
    """

    def __init__(self) -> None:
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)
        self._received: list[int] = []
        signal.set_wakeup_fd(self._writer.fileno())
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handler)

    def _handler(self, signum: int, _frame: object) -> None:
        self._received.append(signum)

    def take(self) -> list[int]:
        """The signals received since the last call (empties the wake-up socket)."""
        with contextlib.suppress(OSError):
            while self.reader.recv(64):
                pass
        taken, self._received = self._received, []
        return taken

    def close(self) -> None:
        """Give the signals back to their default handling."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self.reader.close()
        self._writer.close()
