"""``agent llamafile serve``: a model server and the agent, in one process tree.

Task tree::

    serve
    └── nursery
        ├── signals        1st SIGTERM/SIGINT → the agent drains (Daemon.stop), or, before
        │                  the agent runs, everything stops; 2nd → stop at once
        ├── backend watch  the model server exiting on its own ends everything (exit 1)
        ├── run_agent      agent/daemon.py's own loop, handle_signals=False (signals above)
        └── relay report   keeps the state file's relay connection current

The model server is started first and must answer ``/health`` before the agent
runs; it is stopped last, after the agent drained, so requests in flight finish.
"""

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import trio

from agent.config import AgentConfig, redact_url
from agent.daemon import Daemon, run_agent
from agent.llamafile.errors import LlamafileError, RelayUnreachable, ServeError
from agent.llamafile.paths import Home
from agent.llamafile.runner import HOST, wait_healthy
from agent.llamafile.state import RunState, remove_state, write_state

__all__ = ["ServePlan", "serve"]

log = logging.getLogger(__name__)

# How long `serve` waits for the first registration before it calls itself
# ready anyway (the agent keeps trying; `status` shows the connection).
READY_REGISTER_SECS = 20.0
STOP_BACKEND_SECS = 10.0
STATUS_SAMPLE_SECS = 1.0


@attrs.frozen
class ServePlan:
    """Everything `serve` needs, resolved by the CLI.

    Attributes:
        slug: The model.
        argv: The model server's command line.
        port: Its port.
        config: The agent's configuration (backend_url points at the port).
        args: The CLI arguments, recorded for ``restart``.
        startup_secs: How long the model may take to load.
    """

    slug: str
    argv: tuple[str, ...]
    port: int
    config: AgentConfig
    args: tuple[str, ...]
    startup_secs: float = 300.0


async def check_relay(proxy_url: str) -> None:
    """Open (and close) a TCP connection to the relay.

    Raises:
        RelayUnreachable: No answer within 5 s, or refused.
    """
    parts = urlsplit(proxy_url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    try:
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream(host, port)
        await stream.aclose()
    except (OSError, trio.TooSlowError) as exc:
        detail = "no answer in 5 s" if isinstance(exc, trio.TooSlowError) else str(exc)
        raise RelayUnreachable(
            f"the relay at {proxy_url} is unreachable ({detail}): check --relay-url "
            "and that the relay runs"
        ) from None


async def _open_backend(argv: tuple[str, ...], log_path: Path) -> trio.Process:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        try:
            return await trio.lowlevel.open_process(
                list(argv), stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True
            )
        except OSError as exc:
            if exc.errno == 8:  # ENOEXEC: an APE the kernel cannot exec; run it with sh
                return await trio.lowlevel.open_process(
                    ["sh", *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=fd,
                    stderr=fd,
                    start_new_session=True,
                )
            raise
    except PermissionError as exc:
        raise ServeError(f"not allowed to run {argv[0]}: {exc.strerror} (noexec mount?)") from None
    except OSError as exc:
        raise ServeError(f"cannot start {argv[0]}: {exc.strerror}") from None
    finally:
        os.close(fd)


async def _stop_backend(process: trio.Process) -> None:
    # Shielded and bounded: this runs while everything else is being cancelled.
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(STOP_BACKEND_SECS):
                await process.wait()
        if process.returncode is None:
            process.kill()
            with trio.move_on_after(STOP_BACKEND_SECS):
                await process.wait()


@attrs.define(eq=False)
class _Serve:
    """Owns one serve run's state file and its wiring."""

    plan: ServePlan
    home: Home
    ready: Callable[[dict[str, Any]], None]
    state: RunState | None = None
    daemon: Daemon | None = None
    failure: str | None = None

    def _save(self, *, relay_connected: bool, worker_id: str | None) -> None:
        assert self.state is not None
        new = attrs.evolve(self.state, relay_connected=relay_connected, worker_id=worker_id)
        if new != self.state:
            self.state = new
            write_state(self.home, new)

    async def _signals(self, root: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            first = True
            async for signum in signals:
                name = signal.Signals(signum).name
                if first and self.daemon is not None:
                    first = False
                    log.info("%s received: draining the agent, then stopping the model", name)
                    self.daemon.stop()
                else:
                    log.warning("%s received: stopping now", name)
                    root.cancel()
                    return

    async def _watch_backend(self, process: trio.Process, root: trio.CancelScope) -> None:
        code = await process.wait()
        self.failure = (
            f"the model server exited with code {code}; see `agent llamafile logs {self.plan.slug}`"
        )
        log.error(self.failure)
        root.cancel()

    async def _agent(self, root: trio.CancelScope, *, task_status: trio.TaskStatus[Daemon]) -> None:
        # agent/daemon.py's own loop; our signal task calls Daemon.stop() for it.
        await run_agent(self.plan.config, handle_signals=False, task_status=task_status)
        root.cancel()  # drained and stopped: the model server goes next

    async def _report_relay(self, daemon: Daemon) -> None:
        # The daemon has an event for "registered" but none for "lost": sample
        # the session once a second (a status display, not a control path).
        while True:
            session = daemon.session
            connected = session is not None and session.registered
            self._save(
                relay_connected=connected,
                worker_id=session.worker_id if connected and session is not None else None,
            )
            if not connected:
                with trio.move_on_after(STATUS_SAMPLE_SECS):
                    await daemon.wait_registered()
            else:
                await trio.sleep(STATUS_SAMPLE_SECS)

    async def _announce(self, daemon: Daemon) -> None:
        with trio.move_on_after(READY_REGISTER_SECS):
            await daemon.wait_registered()
        session = daemon.session
        assert self.state is not None
        if session is not None and session.registered:
            self._save(relay_connected=True, worker_id=session.worker_id)
        self.ready(
            {
                "model": self.plan.slug,
                "url": self.state.url,
                "pid": self.state.pid,
                "backend_pid": self.state.backend_pid,
                "relay": redact_url(self.plan.config.proxy_url),
                "relay_connected": self.state.relay_connected,
                "worker_id": self.state.worker_id,
            }
        )

    async def run(self) -> int:
        plan, home = self.plan, self.home
        log_path = home.log_file(plan.slug)
        async with trio.open_nursery() as nursery:
            root = nursery.cancel_scope
            nursery.start_soon(self._signals, root)
            await check_relay(plan.config.proxy_url)
            process = await _open_backend(plan.argv, log_path)
            try:
                url = f"http://{HOST}:{plan.port}"
                log.info(
                    "model server starting",
                    extra={"model": plan.slug, "url": url, "pid": process.pid},
                )
                try:
                    with trio.fail_after(plan.startup_secs):
                        await wait_healthy(url, lambda: process.poll())
                except trio.TooSlowError:
                    raise ServeError(
                        f"the model server did not answer {url}/health within "
                        f"{plan.startup_secs:.0f} s; see `agent llamafile logs {plan.slug}`"
                    ) from None
                except ServeError as exc:
                    raise ServeError(
                        f"{exc.message}; see `agent llamafile logs {plan.slug}`"
                    ) from None
                log.info("model server ready", extra={"model": plan.slug, "url": url})
                self.state = RunState(
                    slug=plan.slug,
                    kind="serve",
                    pid=os.getpid(),
                    backend_pid=process.pid,
                    port=plan.port,
                    started_at=time.time(),
                    program=plan.argv[0],
                    args=plan.args,
                    relay_url=redact_url(plan.config.proxy_url),
                )
                write_state(home, self.state)
                nursery.start_soon(self._watch_backend, process, root)
                daemon = await nursery.start(self._agent, root)
                self.daemon = daemon
                nursery.start_soon(self._report_relay, daemon)
                await self._announce(daemon)
                await trio.sleep_forever()  # until the agent is done (or a failure)
            finally:
                await _stop_backend(process)
                if self.state is not None:
                    remove_state(home, plan.slug, os.getpid())
        if self.failure is not None:
            raise ServeError(self.failure)
        return 0


async def serve(plan: ServePlan, home: Home, ready: Callable[[dict[str, Any]], None]) -> int:
    """Run the model server and the agent until stopped (see the module docstring).

    Args:
        plan: What to run.
        home: The state directory.
        ready: Called once the model answers and the agent registered (or
            gave up waiting for the first registration).

    Returns:
        The exit code (0 after a clean stop).

    Raises:
        RelayUnreachable: The relay does not answer (checked before the model loads).
        ServeError: The model server failed to start or died.
    """
    try:
        return await _Serve(plan, home, ready).run()
    except* LlamafileError as group:
        # The nursery wraps what its body raised; the operator needs the one line.
        raise _first(group) from None


def _first(group: BaseExceptionGroup[LlamafileError]) -> LlamafileError:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, LlamafileError)
    return leaf
