"""One relay connection: register, then serve requests until it ends.

Task tree of a session (all inside `Session.run`)::

    session nursery
    ├── writer      the only sender on the socket; drains the bounded outbox
    ├── reader      decodes frames: request → job, cancel → job's scope,
    │               ping → pong, graceful_shutdown → drain, models_refresh
    ├── discovery   re-reads the backend's models; sends models_update
    └── jobs scope / jobs nursery   one task per request (agent/jobs.py)

Jobs never outlive the session: when the socket drops, the session nursery
is cancelled, which cancels every job and so closes every backend
connection. A drain (our signal, or the relay's ``graceful_shutdown``) stops
accepting requests, tells the relay, and sets the jobs scope's deadline; when
the jobs nursery is empty (or the deadline passes) the outbox is flushed and
the socket closed with 1000.

A session either returns (after a drain) or raises one `SessionError`; the
daemon decides what comes next.
"""

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from typing import NoReturn

import attrs
import trio

from agent.backend import Backend
from agent.config import AgentConfig
from agent.dialect_exchange import DialectExchange
from agent.dialects import error_body, json_headers
from agent.discovery import ModelCatalog, discover_models
from agent.errors import (
    RegistrationTimeout,
    RelayProtocolError,
    RelaySilent,
    SessionError,
    VersionRejected,
)
from agent.jobs import Job, run_job
from agent.logging import bind_log_context
from agent.outbox import Flush, Outgoing, run_writer
from agent.transport import Transport
from mrcommon import closecodes
from wire import (
    CAPABILITY_DRAIN,
    PROTOCOL_VERSION,
    REFUSED_HEADER,
    Cancel,
    CancelReason,
    GracefulShutdown,
    ModelsRefresh,
    ModelsUpdate,
    Ping,
    Pong,
    ProtocolError,
    Register,
    RegisterAck,
    RelayToAgent,
    Request,
    ResponseComplete,
    VersionMismatch,
    check_protocol_version,
    decode_relay_frame,
    encode,
)

__all__ = ["Session"]

log = logging.getLogger(__name__)

_Task = Callable[[], Awaitable[None]]


def _outbox_size(max_concurrency: int) -> int:
    # Room for a few frames per job plus control frames; a full outbox makes
    # jobs wait (backpressure towards the backend), never grows without bound.
    return 64 + 4 * min(max_concurrency, 4096)


def _reason_text(reason: object) -> str:
    if isinstance(reason, CancelReason):
        return reason.value
    return f"other: {getattr(reason, 'text', reason)}"


@attrs.define(eq=False)
class Session:
    """Owns one relay connection's state: its jobs, its outbox, and its drain.

    Attributes:
        config: The agent's configuration.
        transport: The connection (only the writer task sends on it once registered).
        backend: The backend client, shared by all sessions.
        catalog: The advertised models, shared by all sessions.
        worker_id: The id the relay assigned, once registered.
        jobs: In-flight requests by request id.
        drain_reason: Why the session drained, once it has begun draining.
        on_load: Called with the number of requests in flight whenever it changes.
    """

    config: AgentConfig
    transport: Transport
    backend: Backend
    catalog: ModelCatalog
    worker_id: str | None = attrs.field(default=None, init=False)
    jobs: dict[str, Job] = attrs.field(factory=dict, init=False)
    drain_reason: str | None = attrs.field(default=None, init=False)
    on_load: Callable[[int], None] | None = attrs.field(default=None, init=False)
    _drain_agreed: bool = attrs.field(default=False, init=False)
    _drain_announced: bool = attrs.field(default=False, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    _drain_requested: trio.Event = attrs.field(factory=trio.Event, init=False)
    _jobs_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope, init=False)
    _jobs_nursery: trio.Nursery | None = attrs.field(default=None, init=False)
    _advertised: tuple[str, ...] = attrs.field(default=(), init=False)
    _end: SessionError | None = attrs.field(default=None, init=False)
    _heard_at: float = attrs.field(default=0.0, init=False)  # trio time of the last frame
    _outbox: trio.MemorySendChannel[Outgoing] = attrs.field(init=False)
    _outbox_rx: trio.MemoryReceiveChannel[Outgoing] = attrs.field(init=False)
    _refresh: trio.MemorySendChannel[None] = attrs.field(init=False)
    _refresh_rx: trio.MemoryReceiveChannel[None] = attrs.field(init=False)
    # What jobs run their requests through; it alone knows the backend's dialect.
    _exchange: DialectExchange = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._exchange = DialectExchange.for_backend(self.backend)
        self._outbox, self._outbox_rx = trio.open_memory_channel[Outgoing](
            _outbox_size(self.config.max_concurrency)
        )
        # One pending refresh is enough: several requests in a row collapse.
        self._refresh, self._refresh_rx = trio.open_memory_channel[None](1)

    @property
    def registered(self) -> bool:
        """Whether the relay acknowledged our registration."""
        return self.worker_id is not None

    @property
    def draining(self) -> bool:
        """Whether the session takes no new requests."""
        return self.drain_reason is not None

    def begin_drain(self, timeout: float, reason: str) -> None:
        """Stop taking requests, let in-flight ones finish for at most `timeout` s, then close.

        Calling it again can only bring the deadline closer.

        Args:
            timeout: Seconds in-flight requests may still take.
            reason: Why, for the log (e.g. ``signal``, ``relay graceful_shutdown``).
        """
        deadline = trio.current_time() + timeout
        self._jobs_scope.deadline = min(self._jobs_scope.deadline, deadline)
        if self.drain_reason is None:
            self.drain_reason = reason
            self._drain_requested.set()

    async def run(
        self, *, task_status: trio.TaskStatus[RegisterAck] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Register, then serve until the connection ends or a drain completes.

        Args:
            task_status: Started with the relay's `RegisterAck`.

        Raises:
            SessionError: The connection ended (closed, silent, refused,
                protocol error); never raised after a completed drain.
        """
        ack = await self._register()
        self._heard_at = trio.current_time()  # the ack: the silence counts from here
        task_status.started(ack)
        with bind_log_context(worker_id=ack.worker_id):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._guard, self._write, nursery.cancel_scope)
                nursery.start_soon(self._guard, self._read, nursery.cancel_scope)
                nursery.start_soon(self._guard, self._watch_silence, nursery.cancel_scope)
                nursery.start_soon(self._guard, self._discover, nursery.cancel_scope)
                with self._jobs_scope:
                    async with trio.open_nursery() as jobs:
                        self._jobs_nursery = jobs
                        await self._drain_requested.wait()
                        await self._announce_drain()
                await self._finish_drain()
                nursery.cancel_scope.cancel()
        if self._end is not None:
            raise self._end

    async def _finish_drain(self) -> None:
        if self._jobs_scope.cancelled_caught:
            # Each abandoned request has logged its own line.
            log.warning("drain deadline passed; in-flight requests were abandoned")
        else:
            log.info("drained: every in-flight request finished")
        # Everything queued so far (last chunks, completes) goes out before the close.
        with trio.move_on_after(self.config.timeouts.close_secs):
            flush = Flush()
            await self._outbox.send(flush)
            await flush.done.wait()
        # From here on, the reader seeing the socket close is our own doing.
        self._closing = True
        with trio.move_on_after(self.config.timeouts.close_secs):
            await self.transport.aclose(closecodes.NORMAL, "worker drained")

    async def _guard(self, task: _Task, session_scope: trio.CancelScope) -> None:
        """Run one session task; its `SessionError` ends the session (first one wins)."""
        try:
            await task()
        except SessionError as exc:
            if self._end is None and not self._closing:
                self._end = exc
            session_scope.cancel()

    # --- registration ------------------------------------------------------

    async def _register(self) -> RegisterAck:
        models = self.catalog.models
        self._advertised = models
        register = Register(
            worker_name=self.config.worker_name,
            models=models,
            max_concurrent=self.config.max_concurrency,
            protocol_version=PROTOCOL_VERSION,
            current_load=0,
            capabilities=(CAPABILITY_DRAIN,),
        )
        await self.transport.send(encode(register))
        ack: RegisterAck | None = None
        with trio.move_on_after(self.config.timeouts.register_secs):
            while ack is None:
                msg = await self._receive_frame()
                if isinstance(msg, RegisterAck):
                    ack = msg
                elif isinstance(msg, Ping):
                    await self.transport.send(encode(Pong(0, msg.timestamp_unix_ms)))
                else:
                    await self._protocol_error(
                        ProtocolError(f"expected register_ack, got {type(msg).__name__}")
                    )
        if ack is None:
            raise RegistrationTimeout(
                f"no register_ack within {self.config.timeouts.register_secs:g} s"
            )
        try:
            check_protocol_version(ack.protocol_version)
        except VersionMismatch as exc:
            await self._close(closecodes.PROTOCOL_ERROR, str(exc))
            raise VersionRejected(closecodes.PROTOCOL_ERROR, str(exc)) from exc
        self.worker_id = ack.worker_id
        self._drain_agreed = CAPABILITY_DRAIN in (ack.capabilities or ())
        log.info(
            "registered",
            extra={
                "worker_id": ack.worker_id,
                "models": list(ack.models),
                "max_concurrent": self.config.max_concurrency,
            },
        )
        for warning in ack.warnings or ():
            if not ack.models and "without any routable models" in warning:
                # Expected at every start: the agent registers before discovery
                # has found a model (relays, ours and upstream, say so).
                log.info(
                    "no model to offer yet: the relay routes nothing here until one is found",
                    extra={"worker_id": ack.worker_id},
                )
                continue
            log.warning("relay warning: %s", warning, extra={"worker_id": ack.worker_id})
        return ack

    async def _receive_frame(self) -> RelayToAgent:
        """Receive and decode one frame; an undecodable one closes the socket with 1002."""
        raw = await self.transport.receive()
        try:
            return decode_relay_frame(raw)
        except ProtocolError as exc:
            await self._protocol_error(exc)

    async def _protocol_error(self, exc: ProtocolError) -> NoReturn:
        log.error("the relay broke the protocol; closing the connection", extra={"error": str(exc)})
        await self._close(closecodes.PROTOCOL_ERROR, str(exc))
        raise RelayProtocolError(str(exc)) from exc

    async def _close(self, code: int, reason: str) -> None:
        with trio.move_on_after(self.config.timeouts.close_secs):
            await self.transport.aclose(code, reason)

    # --- session tasks -----------------------------------------------------

    async def _write(self) -> None:
        await run_writer(self._outbox_rx, self.transport)

    async def _read(self) -> None:
        while True:
            msg = await self._receive_frame()
            self._heard_at = trio.current_time()
            await self._handle(msg)

    async def _watch_silence(self) -> None:
        """End the session once the relay has sent nothing for ``relay_silence_secs``.

        The reader only stamps the time of each frame; this task wakes when
        the silence would be complete and sleeps again if a frame came since.
        (A deadline scope around each receive cost a scope and a deadline
        re-registration per frame.)
        """
        silence = self.config.timeouts.relay_silence_secs
        while True:
            deadline = self._heard_at + silence
            if trio.current_time() >= deadline:
                raise RelaySilent(f"no frame from the relay for {silence:g} s")
            await trio.sleep_until(deadline)

    async def _handle(self, msg: RelayToAgent) -> None:
        if isinstance(msg, Request):
            await self._accept(msg)
        elif isinstance(msg, Cancel):
            job = self.jobs.get(msg.request_id)
            if job is not None:
                job.cancel(_reason_text(msg.reason))
            else:
                log.debug(
                    "cancel for a request not in flight", extra={"request_id": msg.request_id}
                )
        elif isinstance(msg, Ping):
            await self._outbox.send(Pong(len(self.jobs), msg.timestamp_unix_ms))
        elif isinstance(msg, GracefulShutdown):
            timeout = (
                float(msg.drain_timeout_secs)
                if msg.drain_timeout_secs is not None
                else self.config.drain_timeout
            )
            log.info(
                "the relay asked us to drain",
                extra={"reason": msg.reason or "", "drain_timeout_secs": timeout},
            )
            self.begin_drain(timeout, "relay graceful_shutdown")
            # From the reader, so the relay hears it before any 503 we send next.
            await self._announce_drain()
        elif isinstance(msg, ModelsRefresh):
            with contextlib.suppress(trio.WouldBlock):  # one is already pending
                self._refresh.send_nowait(None)
        else:  # a second register_ack: harmless, but worth knowing
            log.warning(
                "unexpected frame from the relay ignored", extra={"frame": type(msg).__name__}
            )

    async def _accept(self, request: Request) -> None:
        rid = request.request_id
        if self.draining:
            await self._refuse(
                request,
                "worker_draining",
                "This worker is shutting down and takes no new requests; retry.",
            )
        elif rid in self.jobs:
            log.warning("duplicate request id ignored", extra={"request_id": rid})
        elif len(self.jobs) >= self.config.max_concurrency:
            await self._refuse(
                request,
                "worker_busy",
                f"This worker is at its limit of {self.config.max_concurrency} "
                "concurrent requests; retry.",
            )
        else:
            assert self._jobs_nursery is not None
            job = Job(request, trio.current_time())
            self.jobs[rid] = job
            self._jobs_nursery.start_soon(self._run_job, job, name=f"job {rid}")
            if self.on_load is not None:
                self.on_load(len(self.jobs))

    async def _run_job(self, job: Job) -> None:
        try:
            await run_job(job, exchange=self._exchange, outbox=self._outbox)
        finally:
            del self.jobs[job.request.request_id]
            if self.on_load is not None:
                self.on_load(len(self.jobs))

    async def _refuse(self, request: Request, code: str, message: str) -> None:
        log.info(
            "request refused",
            extra={
                "request_id": request.request_id,
                "model": request.model,
                "status": 503,
                "why": code,
            },
        )
        headers = json_headers()
        headers["retry-after"] = "1"
        # Tells our relay this is the agent refusing, not the backend's own
        # 503: it requeues the request elsewhere instead of answering with it.
        headers[REFUSED_HEADER] = code
        await self._outbox.send(
            ResponseComplete(
                request.request_id,
                503,
                headers=headers,
                body=error_body(request.endpoint_path, 503, message, code),
            )
        )

    async def _announce_drain(self) -> None:
        if self._drain_announced:
            return
        self._drain_announced = True
        log.info(
            "draining: taking no new requests",
            extra={"reason": self.drain_reason, "in_flight": len(self.jobs)},
        )
        await self._send_models_update()

    async def _send_models_update(self) -> None:
        models = () if self.draining else self.catalog.models
        draining = True if self.draining and self._drain_agreed else None
        self._advertised = models
        await self._outbox.send(ModelsUpdate(models, len(self.jobs), draining))

    async def _discover(self) -> None:
        timeouts = self.config.timeouts
        answer = False  # whether the relay asked (models_refresh): then always answer
        while True:
            if self.config.discover_models:
                found: tuple[str, ...] | None = None
                with trio.move_on_after(timeouts.discovery_secs):
                    found = await discover_models(self.backend)
                self.catalog.update(found, self.config.backend_display)
            wanted = () if self.draining else self.catalog.models
            if answer or wanted != self._advertised:
                await self._send_models_update()
            if not self.config.discover_models:
                period = math.inf
            elif self.catalog.models:
                period = self.config.models_poll_interval
            else:
                period = timeouts.discovery_retry_secs
            answer = False
            with trio.move_on_after(period):
                await self._refresh_rx.receive()
                answer = True
