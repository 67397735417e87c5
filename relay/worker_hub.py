"""Connected workers, their sessions, and the requests they carry.

The hub owns the relay's view of its fleet: which worker serves which model,
what each has in flight, and the queue of requests waiting for a slot. Each
worker's session runs in the task of its WebSocket connection; it holds a
lease per request it carries (request id -> the attempt's cancel scope and
the queue its frames go to, which wakes the request's task). When the
session ends, for whatever reason, its `finally` cancels every lease: that
is how a request learns its worker is gone. Nothing here polls a flag.

The hub knows nothing of Quart or HTTP: it speaks to a worker through a
`Transport` and to a request's task through `Ticket` and `Lease`.
"""

from __future__ import annotations

import enum
import itertools
import json
import logging
import math
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

import wire
from mrcommon import closecodes
from relay import router
from relay.boundary import Sent
from relay.errors import QueueFull, Unavailable
from relay.queue import PendingQueue

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from relay.boundary import ClientWriter
    from relay.config import RelayConfig

__all__ = [
    "Hub",
    "HubCounts",
    "HubStatistics",
    "HubStats",
    "Lease",
    "LeaseEnd",
    "Ticket",
    "Transport",
    "TransportClosed",
    "Worker",
    "WorkerStatistics",
    "sanitize_models",
]

log = logging.getLogger("relay.hub")


class Flush(enum.Enum):
    """A lease item saying: a chunk went out only in part; write the rest now."""

    FLUSH = "flush"


FLUSH = Flush.FLUSH

Item = str | wire.ResponseComplete | Flush


class TransportClosed(Exception):
    """The worker's socket is gone."""


class Transport(Protocol):
    """What a worker session needs of its WebSocket."""

    async def send(self, text: str) -> None: ...
    async def receive(self) -> str | bytes: ...
    async def aclose(self, code: int, reason: str) -> None: ...


class LeaseEnd(enum.Enum):
    """Why the worker side ended an attempt before its response completed."""

    WORKER_LOST = "worker_lost"
    SLOW_CLIENT = "slow_client"
    TOO_LARGE = "response_too_large"


class _WorkerSilent(Exception):
    pass


@attrs.define(eq=False)
class Ticket:
    """A client request's place in the relay: queued, then leased to a worker.

    Owned by the request's task; the hub only fills `lease` (or `error`) and
    wakes it.
    """

    request_id: str
    model: str
    arrival: float
    requeues: int = 0
    # Refused by an agent whose budget other relays had taken (fleet_busy):
    # not a failure, but the ticket goes back to the head of the queue.
    bounced: bool = False
    lease: Lease | None = None
    error: Exception | None = None
    # Set by the hub once it has filled `lease` or `error` (made by `Hub.acquire`).
    assigned: trio.Event | None = None


@attrs.define(eq=False)
class Lease:
    """One attempt of one request on one worker.

    The worker's reader feeds it without ever blocking; the request's task
    runs inside `scope` and reads the frames. The session cancels `scope`
    when the worker is lost; the lease itself cancels it when the client
    falls too far behind or the response grows past its bound.
    """

    request_id: str
    worker: Worker
    max_buffered: int
    max_total: int
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    ended: LeaseEnd | None = None
    sent: bool = False
    complete: wire.ResponseComplete | None = None
    buffered: int = 0
    total: int = 0
    # Unbounded in items, bounded in bytes by feed(): the reader must never
    # block on one slow client (WebSocket has no per-stream flow control), so
    # overflow ends this request instead. One reader, one waiter: a deque and
    # the parked task, not a memory channel (a channel pair per request, and a
    # scheduler trip on every receive that finds items waiting).
    _items: deque[Item] = attrs.field(factory=deque, init=False)
    _waiter: trio.lowlevel.Task | None = attrs.field(default=None, init=False)
    # Set by the request task once its stream has started: writes one chunk
    # to the client's socket now, if the kernel takes it (never blocks). Used
    # only while that task waits here with nothing queued, so a lone chunk
    # costs the relay one wake-up (this reader's) instead of two. The
    # `ClientWriter` checks the rule that makes this safe (relay/boundary.py).
    direct: ClientWriter | None = attrs.field(default=None, init=False)

    # -- worker side (the session's reader task; never blocks) --

    def feed(self, chunk: str) -> None:
        size = len(chunk)
        self.buffered += size
        self.total += size
        if self.total > self.max_total:
            self._end(LeaseEnd.TOO_LARGE, "response exceeds --max-response-bytes")
        elif self.buffered > self.max_buffered:
            self._end(LeaseEnd.SLOW_CLIENT, "client too slow")
        elif self._waiter is not None and self.direct is not None and not self._items:
            sent = self.direct.send_now(chunk)
            if sent is Sent.NONE:
                self._put(chunk)
                return
            self.buffered -= size
            if sent is Sent.PART:
                self._put(FLUSH)  # the request task writes the rest
        else:
            self._put(chunk)

    def finish(self, message: wire.ResponseComplete) -> None:
        self.complete = message
        if message.body:
            self.total += len(message.body)
        self._put(message)

    def _put(self, item: Item) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)

    def lose(self) -> None:
        self.ended = LeaseEnd.WORKER_LOST
        self.scope.cancel()

    def _end(self, why: LeaseEnd, text: str) -> None:
        self.ended = why
        self.scope.cancel()
        self.worker.cancel(self, wire.OtherReason(text))

    # -- request side --

    async def receive(self) -> list[Item]:
        """Everything that has arrived: wait for one item, take all waiting.

        Coalescing here turns many small chunks into one client write when
        the client falls behind, and costs nothing when it keeps up. Items
        already waiting are taken without a trip through the scheduler; the
        next call finds none (only another task adds them) and waits.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._items:
            self._waiter = trio.lowlevel.current_task()

            def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
                self._waiter = None
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        batch = list(self._items)
        self._items.clear()
        for item in batch:
            if type(item) is str:
                self.buffered -= len(item)
        return batch

    def post_request(self, frame: str) -> None:
        self.worker.post(frame)
        self.sent = True

    def close(self, reason: wire.CancelReason | wire.OtherReason) -> None:
        """The request's task is done with this attempt (sync: safe in finally)."""
        worker = self.worker
        if worker.leases.get(self.request_id) is not self:
            return  # completed, lost, or already cancelled by feed()
        if self.sent:
            worker.cancel(self, reason)
        else:
            del worker.leases[self.request_id]
            worker.hub.slot_freed(worker)


@attrs.define(eq=False)
class Worker:
    """One connected agent: what it serves, what it carries, its outbox."""

    hub: Hub
    id: str
    name: str
    models: frozenset[str]
    model_list: tuple[str, ...]
    max_concurrent: int
    peer: str
    connected_since: float
    capabilities: frozenset[str] = frozenset()
    draining: bool = False
    # Backend health (`Hub.backend_failed`): when the last pre-first-byte
    # failures happened, until when the worker is ejected and why, and the
    # models it offered when its backend failed (its agent may withdraw them).
    backend_failures: deque[float] = attrs.field(factory=deque)
    ejected_until: float = 0.0
    unhealthy: str | None = None
    down_models: frozenset[str] = frozenset()
    withdrawn: frozenset[str] = frozenset()  # what it offered before an empty update
    # The agent refused a request because work from other relays filled its
    # one budget (wire.REFUSED_FLEET_BUSY): route it nothing until it has
    # room again (a completion here, or a pong below its capacity).
    saturated: bool = False
    last_seen: float = 0.0
    reported_load: int = 0
    requests_served: int = 0
    backend_errors: int = 0  # responses of status 5xx, the worker's error frames included
    leases: dict[str, Lease] = attrs.field(factory=dict)
    # request id -> deadline: cancelled on the relay side, slot held until
    # the agent's 499 arrives or cancel_grace passes (an upstream agent
    # sends nothing after a cancel).
    cancelling: dict[str, float] = attrs.field(factory=dict)
    session_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    # The session's frames to the agent, drained by its writer task (set by the hub).
    outbox: trio.MemorySendChannel[str] | None = None
    _cancel_added: trio.Event = attrs.field(factory=trio.Event)

    @property
    def in_flight(self) -> int:
        return len(self.leases) + len(self.cancelling)

    @property
    def unavailable(self) -> bool:
        """Not to be routed new work: draining, or ejected for failing before a first byte."""
        return self.draining or (
            self.ejected_until != 0.0 and self.ejected_until > trio.current_time()
        )

    def statistics(self) -> WorkerStatistics:
        return WorkerStatistics(
            id=self.id,
            name=self.name,
            models=self.model_list,
            max_concurrent=self.max_concurrent,
            in_flight=self.in_flight,
            reported_load=self.reported_load,
            draining=self.draining,
            ejected=self.ejected_until > trio.current_time(),
            unhealthy=self.unhealthy,
            connected_since=self.connected_since,
            last_seen=self.last_seen,
            requests_served=self.requests_served,
            peer=self.peer,
            cordoned=self.cordoned,
            backend_errors=self.backend_errors,
        )

    @property
    def cordoned(self) -> bool:
        """An operator cordoned this worker's name: it finishes its work, gets no more."""
        return self.name in self.hub.cordons

    def post(self, frame: str) -> None:
        """Queue a frame for the worker's writer task without blocking.

        Frames to a worker are few (one per request, cancel, ping), so the
        outbox is sized from its capacity; a full one means the worker has
        stopped reading, and the session ends.
        """
        assert self.outbox is not None
        try:
            self.outbox.send_nowait(frame)
        except trio.WouldBlock:
            log.warning("worker stopped reading; closing", extra={"worker_id": self.id})
            self.hub.stats.slow_workers += 1
            self.session_scope.cancel()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # session already ending

    async def wait_for_cancelling(self) -> None:
        """Return once a cancelled request holds a slot (`cancelling` is not empty)."""
        while not self.cancelling:
            self._cancel_added = trio.Event()
            await self._cancel_added.wait()

    def cancel(self, lease: Lease, reason: wire.CancelReason | wire.OtherReason) -> None:
        if self.leases.pop(lease.request_id, None) is None:
            return
        self.cancelling[lease.request_id] = trio.current_time() + self.hub.config.cancel_grace
        self._cancel_added.set()
        self.post(wire.encode(wire.Cancel(request_id=lease.request_id, reason=reason)))
        log.info(
            "cancel sent",
            extra={"request_id": lease.request_id, "worker_id": self.id, "reason": str(reason)},
        )


@attrs.frozen
class WorkerStatistics:
    """One connected worker at one moment: what `/admin/workers` and `/metrics` show."""

    id: str
    name: str
    models: tuple[str, ...]
    max_concurrent: int
    in_flight: int
    reported_load: int
    draining: bool
    ejected: bool  # failed before a first byte too often: cooling down
    unhealthy: str | None  # why its backend is taken to be down, if it is
    connected_since: float  # trio.current_time() values
    last_seen: float
    requests_served: int
    peer: str
    cordoned: bool  # an operator cordoned the worker's name (it gets no new work)
    backend_errors: int  # 5xx answers and error frames from its backend

    @property
    def load(self) -> float:
        """The router's measure: the relay's own count over the capacity."""
        return self.in_flight / self.max_concurrent


@attrs.define
class HubStats:
    """The hub's event counters (the hub increments them; read `HubCounts` copies)."""

    workers_registered: int = 0
    workers_lost: int = 0
    protocol_errors: int = 0
    dropped_frames: int = 0
    requeues: int = 0
    slow_workers: int = 0
    heartbeat_timeouts: int = 0
    backend_failures: int = 0
    ejections: int = 0


@attrs.frozen
class HubCounts:
    """`HubStats` at one moment."""

    workers_registered: int
    workers_lost: int
    protocol_errors: int
    dropped_frames: int
    requeues: int
    slow_workers: int
    heartbeat_timeouts: int
    backend_failures: int
    ejections: int


@attrs.frozen
class HubStatistics:
    """The fleet at one moment (`Hub.statistics()`)."""

    workers: tuple[WorkerStatistics, ...]
    queued: tuple[str, ...]  # the model of each waiting request, oldest first
    draining: bool  # the relay is shutting down
    counts: HubCounts


def sanitize_models(models: Iterable[str], cap: int) -> tuple[tuple[str, ...], list[str]]:
    """Trim, drop empties and duplicates (first seen wins), cap the count.

    Returns:
        The accepted models in order, and warnings about what was dropped.
    """
    seen: dict[str, None] = {}
    empty = duplicates = 0
    for raw in models:
        name = raw.strip()
        if not name:
            empty += 1
        elif name in seen:
            duplicates += 1
        else:
            seen[name] = None
    accepted = list(seen)
    warnings = []
    if empty:
        warnings.append(f"{empty} empty model name(s) dropped")
    if duplicates:
        warnings.append(f"{duplicates} duplicate model name(s) dropped")
    if len(accepted) > cap:
        warnings.append(f"{len(accepted) - cap} model(s) beyond the limit of {cap} dropped")
        accepted = accepted[:cap]
    return tuple(accepted), warnings


# Seconds a worker whose backend just failed gets no new request (see `Hub.backend_failed`).
_BACKEND_FAILURE_HOLD = 1.0


@attrs.define(eq=False)
class Hub:
    """The fleet: workers by id, the waiting queue, routing state."""

    config: RelayConfig
    workers: dict[str, Worker] = attrs.field(factory=dict)
    stats: HubStats = attrs.field(factory=HubStats)
    draining: bool = False
    queue: PendingQueue[Ticket] = attrs.field(init=False)
    _named: Counter[str] = attrs.field(factory=Counter)
    _wildcards: int = 0
    _model_seen: dict[str, float] = attrs.field(factory=dict)
    # model -> when a healthy worker serving it disconnected (it may be restarting)
    _model_lost: dict[str, float] = attrs.field(factory=dict)
    _rr: router.RoundRobin = attrs.field(factory=router.RoundRobin)
    _ids: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1))
    # Worker names the router skips (Cordon); kept by name so a cordon lasts
    # across the worker's reconnects. The key store persists them.
    cordons: frozenset[str] = frozenset()

    def __attrs_post_init__(self) -> None:
        self.queue = PendingQueue(self.config.max_queue_len)

    def statistics(self) -> HubStatistics:
        """A snapshot for the admin API and `/metrics` (cost: one record per worker)."""
        return HubStatistics(
            workers=tuple(worker.statistics() for worker in self.workers.values()),
            queued=tuple(ticket.model for ticket in self.queue),
            draining=self.draining,
            counts=HubCounts(**attrs.asdict(self.stats)),
        )

    # ------------------------------------------------------------ models

    def served_models(self) -> list[str]:
        """Every model some connected worker names (not `*`), sorted."""
        return sorted(m for m, n in self._named.items() if n > 0)

    def is_routable(self, model: str) -> bool:
        """Whether a request for `model` should queue rather than get 404.

        True when a worker serves it (or serves `*`), or one did within
        `model_grace` seconds (a worker restarting), or a connected worker
        withdrew it because its backend is down (then `acquire` answers 503
        with Retry-After, not 404: the model is still ours, its server is not up).
        """
        if self._named[model] > 0 or self._wildcards > 0:
            return True
        seen = self._model_seen.get(model)
        if seen is not None and trio.current_time() - seen < self.config.model_grace:
            return True
        return any(model in worker.down_models for worker in self.workers.values())

    def _index(self, worker: Worker, sign: int) -> None:
        now = trio.current_time()
        for model in worker.models:
            if model == router.WILDCARD:
                self._wildcards += sign
            else:
                self._named[model] += sign
                if self._named[model] <= 0:
                    del self._named[model]
            self._model_seen[model] = now

    # ------------------------------------------------------------ dispatch

    async def acquire(
        self,
        ticket: Ticket,
        *,
        keepalive: float = 0.0,
        ping: Callable[[], Awaitable[None]] | None = None,
    ) -> Lease:
        """A lease on a worker for `ticket`: at once if one has a free slot,
        else after waiting in the queue. The caller's scope bounds the wait.

        With `ping` and a `keepalive` period, `ping()` is awaited every
        `keepalive` seconds of waiting (a streamed client kept from giving
        up); the ticket keeps its place meanwhile.

        Raises:
            QueueFull: the queue is at --max-queue-len.
            Unavailable: the relay is draining.
        """
        if self.draining:
            raise Unavailable("the relay is shutting down; retry shortly", retry_after=5)
        candidates: Iterable[Worker] = self.workers.values()
        if self.cordons:
            candidates = [w for w in candidates if w.name not in self.cordons]
        if any(w.saturated for w in self.workers.values()):
            candidates = [w for w in candidates if not w.saturated]
        worker = router.choose(candidates, ticket.model, self._named, self._rr)
        if worker is not None:
            return self._assign(ticket, worker)
        self._check_some_healthy(ticket.model)
        requeued = ticket.requeues > 0 or ticket.bounced
        if not self.queue.push(ticket, requeued=requeued):
            raise QueueFull(
                f"the relay's queue is full ({self.config.max_queue_len} waiting); retry shortly",
                retry_after=1,
            )
        ticket.assigned = assigned = trio.Event()
        try:
            if ping is None or keepalive <= 0:
                await assigned.wait()
            else:
                while not assigned.is_set():
                    with trio.move_on_after(keepalive):
                        await assigned.wait()
                    if not assigned.is_set():
                        await ping()
        except BaseException:
            if ticket.lease is None:
                self.queue.discard(ticket)
            else:  # assigned in the same instant the wait was cancelled
                ticket.lease.close(wire.CancelReason.CLIENT_DISCONNECT)
                ticket.lease = None
            raise
        finally:
            ticket.assigned = None
        if ticket.error is not None:
            raise ticket.error
        assert ticket.lease is not None
        return ticket.lease

    def _assign(self, ticket: Ticket, worker: Worker) -> Lease:
        lease = Lease(
            request_id=ticket.request_id,
            worker=worker,
            max_buffered=self.config.client_buffer_bytes,
            max_total=self.config.max_response_bytes,
        )
        worker.leases[ticket.request_id] = lease
        ticket.lease = lease
        return lease

    def slot_freed(self, worker: Worker) -> None:
        """Give `worker`'s free slots to the oldest queued requests it serves."""
        if (
            worker.unavailable
            or worker.saturated
            or not self.queue
            or worker.id not in self.workers
            or worker.cordoned
        ):
            return
        named = self._named
        while worker.in_flight < worker.max_concurrent:
            ticket = self.queue.take_first(lambda t: router.serves(worker, t.model, named))
            if ticket is None:
                return
            self._assign(ticket, worker)
            assert ticket.assigned is not None
            ticket.assigned.set()

    # ------------------------------------------------------------ worker policy
    # The request's task reports what happened to an attempt; the hub decides
    # what that means for the worker and for the request's next attempt.

    def requeue(self, ticket: Ticket, worker: Worker, why: str, *, refusal: str = "") -> None:
        """Count one more attempt for `ticket`, which lost `worker` (`why`).

        The caller then acquires again: a requeued ticket goes to the front of
        the queue. A `fleet_busy` refusal (`refusal`) is not a failure: the
        agent's budget was taken by other relays' work, so the attempt is not
        counted (the request's deadline still bounds how long it bounces).

        Raises:
            Unavailable: `ticket` was requeued --max-requeues times already.
        """
        if refusal == wire.REFUSED_FLEET_BUSY:
            ticket.bounced = True
            log.debug(
                "request bounced: the worker's budget is taken by other relays",
                extra={"request_id": ticket.request_id, "worker_id": worker.id},
            )
            return
        if ticket.requeues >= self.config.max_requeues:
            raise Unavailable(
                f"the request's worker was {why} {ticket.requeues + 1} times; retry shortly",
                retry_after=1,
            )
        ticket.requeues += 1
        self.stats.requeues += 1
        log.info(
            "request requeued",
            extra={
                "request_id": ticket.request_id,
                "worker_id": worker.id,
                "requeues": ticket.requeues,
                "why": why,
            },
        )

    def worker_refused(self, worker: Worker, code: str) -> None:
        """`worker`'s agent refused a request it was sent (`code`: busy or draining).

        A worker that refuses for capacity claimed more than it honours: its
        capacity here drops to what it carries now, so it is not asked again
        beyond that (contained to that worker, never the client's problem).
        """
        if code == "worker_draining":
            self._set_draining(worker, "it refused a request as draining")
            return
        if code == wire.REFUSED_BACKEND_DOWN:
            self.backend_failed(worker, "its model server did not answer a connect")
            return
        if code == wire.REFUSED_FLEET_BUSY:
            # Its capacity is honest; other relays hold it for now. The
            # reader already marked it saturated, in frame order (_on_complete).
            return
        carried = max(1, worker.in_flight)
        if worker.max_concurrent > carried:
            log.warning(
                "worker refused a request: capacity lowered",
                extra={"worker_id": worker.id, "claimed": worker.max_concurrent, "now": carried},
            )
            worker.max_concurrent = carried

    def backend_failed(self, worker: Worker, why: str) -> None:
        """`worker`'s backend failed a request before its first byte (refused, timed out).

        Its agent says so with a refusal (and withdraws its models itself);
        the hub remembers the models it offered, so that a request for them
        with no healthy worker left gets a 503 at once rather than waiting,
        and ejects the worker after `max_fails` such failures within
        `fail_timeout` seconds, for `fail_timeout` seconds (nginx's
        ``max_fails``/``fail_timeout``): an agent that keeps offering a dead
        backend (an upstream one) stops getting traffic.
        """
        cfg = self.config
        now = trio.current_time()
        self.stats.backend_failures += 1
        worker.unhealthy = why
        # Our agent withdraws its models as it refuses: the two frames may
        # arrive in either order.
        worker.down_models = worker.down_models | worker.models | worker.withdrawn
        failures = worker.backend_failures
        failures.append(now)
        while failures and now - failures[0] > cfg.fail_timeout:
            failures.popleft()
        # No new request until its agent has withdrawn or re-offered its
        # models (our agent does both): without this hold the requeued
        # request could be routed straight back to it.
        worker.ejected_until = max(worker.ejected_until, now + _BACKEND_FAILURE_HOLD)
        if len(failures) >= cfg.max_fails:
            failures.clear()
            worker.ejected_until = max(worker.ejected_until, now + cfg.fail_timeout)
            self.stats.ejections += 1
            log.warning(
                "worker ejected: its backend failed before answering",
                extra={
                    "worker_id": worker.id,
                    "failures": cfg.max_fails,
                    "within_secs": cfg.fail_timeout,
                    "cool_down_secs": cfg.fail_timeout,
                    "why": why,
                },
            )

    def _check_some_healthy(self, model: str) -> None:
        """Raise a 503 when every worker for `model` has a failing backend.

        A request waits in the queue for busy or restarting workers, but not
        for dead backends: when no routable worker serves `model` and some
        worker that did is ejected or withdrew it after a backend failure,
        the client hears it now, with ``Retry-After``.

        Raises:
            Unavailable: as described.
        """
        now = trio.current_time()
        down: list[Worker] = []
        for worker in self.workers.values():
            serves = router.serves(worker, model, self._named)
            if serves and not worker.unavailable:
                return  # a healthy worker serves it: busy, so queue
            if (serves and worker.ejected_until > now) or model in worker.down_models:
                down.append(worker)
        if not down:
            return
        lost = self._model_lost.get(model)
        if lost is not None and now - lost < self.config.model_grace:
            return  # a healthy worker for it left lately: it may be restarting, so queue
        wait = min(
            (w.ejected_until - now for w in down if w.ejected_until > now),
            default=1.0,
        )
        names = ", ".join(w.id for w in down[:5])
        raise Unavailable(
            f"no healthy worker serves model {model!r}: the model server behind "
            f"{names} is not answering; retry shortly",
            retry_after=max(1, math.ceil(wait)),
        )

    def response_fault(self, worker_id: str, request_id: str, why: str) -> None:
        """A worker answered a request with something HTTP cannot carry (`why`).

        The request gets a 502 from the relay; the worker's fault is logged and
        counted with the protocol errors. Its session goes on: the frame was
        well formed, only its content was unusable.
        """
        self.stats.protocol_errors += 1
        log.warning(
            "worker protocol error",
            extra={"worker_id": worker_id, "request_id": request_id, "error": why},
        )

    def _set_draining(self, worker: Worker, why: str) -> None:
        """No new request goes to `worker`; what it carries finishes."""
        if not worker.draining:
            worker.draining = True
            log.info("worker draining", extra={"worker_id": worker.id, "why": why})

    def fail_queued(self, error: Exception) -> None:
        """Answer every queued request with `error` (relay shutdown)."""
        for ticket in self.queue.drain():
            ticket.error = error
            if ticket.assigned is not None:
                ticket.assigned.set()

    # ------------------------------------------------------------ sessions

    def _register(self, reg: wire.Register, peer: str) -> tuple[Worker, wire.RegisterAck]:
        cfg = self.config
        worker_id = f"worker-{next(self._ids)}"
        models, warnings = sanitize_models(reg.models, wire.limits.MAX_MODELS_PER_WORKER)
        name = reg.worker_name.strip()
        if not name:
            warnings.append("worker_name was empty after trimming")
            name = worker_id
        max_concurrent = reg.max_concurrent or 1
        if max_concurrent > cfg.max_worker_concurrency:
            warnings.append(
                f"max_concurrent {max_concurrent} capped to {cfg.max_worker_concurrency}"
            )
            max_concurrent = cfg.max_worker_concurrency
        if not models:
            warnings.append("worker registered without any routable models")
        ours = {
            wire.limits.CAPABILITY_DRAIN,
            wire.limits.CAPABILITY_CACHE_TOKENS,
            wire.limits.CAPABILITY_FLEET,
        }
        agreed = frozenset(ours.intersection(reg.capabilities or ()))
        now = trio.current_time()
        worker = Worker(
            hub=self,
            id=worker_id,
            name=name,
            models=frozenset(models),
            model_list=models,
            max_concurrent=max_concurrent,
            peer=peer,
            connected_since=now,
            last_seen=now,
            capabilities=agreed,
            reported_load=reg.current_load or 0,
        )
        ack = wire.RegisterAck(
            worker_id=worker_id,
            models=models,
            warnings=tuple(warnings) or None,
            protocol_version=reg.protocol_version,
            capabilities=tuple(sorted(agreed)) if reg.capabilities is not None else None,
        )
        return worker, ack

    def _attach(self, worker: Worker) -> None:
        self.workers[worker.id] = worker
        self._index(worker, +1)
        self.stats.workers_registered += 1
        log.info(
            "worker registered",
            extra={
                "worker_id": worker.id,
                "worker_name": worker.name,
                "models": list(worker.model_list),  # a list, as the agent logs it
                "max_concurrent": worker.max_concurrent,
                "peer": worker.peer,
            },
        )
        self.slot_freed(worker)

    def _detach(self, worker: Worker, why: str) -> None:
        if self.workers.pop(worker.id, None) is None:
            return
        self._index(worker, -1)
        self.stats.workers_lost += 1
        if worker.unhealthy is None:
            now = trio.current_time()
            for model in worker.models:
                self._model_lost[model] = now
        lost = list(worker.leases.values())
        worker.leases.clear()
        worker.cancelling.clear()
        for lease in lost:
            lease.lose()
        log.info(
            "worker disconnected",
            extra={"worker_id": worker.id, "reason": why, "in_flight_lost": len(lost)},
        )

    def _update_models(self, worker: Worker, update: wire.ModelsUpdate) -> None:
        models, warnings = sanitize_models(update.models, wire.limits.MAX_MODELS_PER_WORKER)
        self._index(worker, -1)
        if not models and worker.models:
            worker.withdrawn = worker.models
        elif models:
            worker.withdrawn = frozenset()
        worker.models = frozenset(models)
        worker.model_list = models
        self._index(worker, +1)
        worker.reported_load = update.current_load
        if models and worker.unhealthy is not None:
            # The agent offers models again: its backend answers.
            log.info(
                "worker healthy again",
                extra={"worker_id": worker.id, "was": worker.unhealthy},
            )
            worker.unhealthy = None
            worker.down_models = frozenset()
            worker.ejected_until = 0.0
            worker.backend_failures.clear()
        if update.draining:
            self._set_draining(worker, "the agent said so")
        log.info(
            "worker models updated",
            extra={"worker_id": worker.id, "models": list(models), "warnings": warnings},
        )
        self.slot_freed(worker)

    async def run_session(self, transport: Transport, peer: str) -> None:
        """Serve one worker's connection until it ends, for whatever reason.

        Never raises for anything the worker did: a protocol error closes its
        socket with 1002 and a reason, silence past the heartbeat timeout
        closes it with 1001; either way its requests follow the worker-lost
        path (requeue or a stream error event).
        """
        worker: Worker | None = None
        why = "closed by the agent"
        try:
            try:
                with trio.fail_after(self.config.register_timeout):
                    first = await transport.receive()
            except trio.TooSlowError:
                raise wire.ProtocolError(
                    f"no register frame within {self.config.register_timeout:g}s"
                ) from None
            message = wire.decode_agent_frame(first)
            if not isinstance(message, wire.Register):
                raise wire.ProtocolError(
                    f"the first frame must be register, got {_type_name(message)}"
                )
            wire.check_protocol_version(message.protocol_version)
            worker, ack = self._register(message, peer)
            outbox_tx, outbox_rx = trio.open_memory_channel[str](
                2 * min(worker.max_concurrent, 4096) + 64
            )
            worker.outbox = outbox_tx
            # Attached before the ack goes out, so a worker that has its ack
            # is routable; frames posted meanwhile wait in the outbox.
            self._attach(worker)
            await transport.send(wire.encode(ack))
            with worker.session_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write, outbox_rx, transport)
                    nursery.start_soon(self._keepalive, worker)
                    nursery.start_soon(self._reap_cancelled, worker)
                    await self._read(worker, transport)
            if worker.session_scope.cancelled_caught:
                why = "stopped reading its socket"
                await _close(transport, closecodes.POLICY_VIOLATION, "worker stopped reading")
        except* wire.ProtocolError as group:
            exc = _first(group)
            why = f"protocol error: {exc}"
            self.stats.protocol_errors += 1
            log.warning(
                "worker protocol error",
                extra={"worker_id": worker.id if worker else None, "peer": peer, "error": str(exc)},
            )
            await _close(transport, closecodes.PROTOCOL_ERROR, str(exc)[:120])
        except* _WorkerSilent:
            why = f"no frame for {self.config.heartbeat_timeout:g}s"
            self.stats.heartbeat_timeouts += 1
            await _close(transport, closecodes.GOING_AWAY, "heartbeat timeout")
        except* TransportClosed:
            pass
        finally:
            if worker is not None:
                self._detach(worker, why)

    async def _read(self, worker: Worker, transport: Transport) -> None:
        decode = wire.decode_agent_frame
        chunk_type = wire.ResponseChunk
        while True:
            text = await transport.receive()
            worker.last_seen = trio.current_time()
            message = decode(text)
            if type(message) is chunk_type:  # the hot path first
                lease = worker.leases.get(message.request_id)
                if lease is None:
                    self.stats.dropped_frames += 1
                else:
                    lease.feed(message.chunk)
            elif isinstance(message, wire.ResponseComplete):
                self._on_complete(worker, message)
            elif isinstance(message, wire.Pong):
                worker.reported_load = message.current_load
                if worker.saturated and message.current_load < worker.max_concurrent:
                    # A fleet agent's "I have room again" (or a heartbeat saying so).
                    worker.saturated = False
                    self.slot_freed(worker)
            elif isinstance(message, wire.ModelsUpdate):
                self._update_models(worker, message)
            elif isinstance(message, wire.Error):
                self._on_error(worker, message)
            else:
                raise wire.ProtocolError(f"unexpected {_type_name(message)} frame after register")

    def _on_complete(self, worker: Worker, message: wire.ResponseComplete) -> None:
        lease = worker.leases.pop(message.request_id, None)
        # Set here, in frame order, so a pong saying "room again" that the
        # agent sent after this refusal is never overtaken by it.
        fleet_busy = _fleet_busy(message)
        if lease is not None:
            if not fleet_busy:
                worker.requests_served += 1
                if message.status_code >= 500:
                    worker.backend_errors += 1
            lease.finish(message)
        elif worker.cancelling.pop(message.request_id, None) is None:
            self.stats.dropped_frames += 1
            return
        # Any other completion freed a slot of the agent's one budget.
        worker.saturated = fleet_busy
        self.slot_freed(worker)

    def _on_error(self, worker: Worker, message: wire.Error) -> None:
        log.warning(
            "worker sent error frame",
            extra={"worker_id": worker.id, "request_id": message.request_id, "code": message.code},
        )
        if message.request_id is None or message.request_id not in worker.leases:
            return
        body = json.dumps(
            {
                "error": {
                    "message": f"the worker failed this request: {message.message}",
                    "type": "upstream_error",
                    "code": message.code,
                }
            }
        )
        self._on_complete(
            worker,
            wire.ResponseComplete(
                request_id=message.request_id,
                status_code=502,
                headers={"content-type": "application/json"},
                body=body,
            ),
        )

    async def _write(self, outbox: trio.MemoryReceiveChannel[str], transport: Transport) -> None:
        async for frame in outbox:
            await transport.send(frame)

    async def _keepalive(self, worker: Worker) -> None:
        """Ping every interval; end the session after heartbeat_timeout of silence.

        Any frame counts as an answer (the reader stamps `last_seen`).
        """
        interval = self.config.heartbeat_interval
        timeout = self.config.heartbeat_timeout
        next_ping = trio.current_time() + interval
        while True:
            deadline = worker.last_seen + timeout
            now = trio.current_time()
            if now >= deadline:
                log.warning(
                    "worker silent past heartbeat timeout",
                    extra={"worker_id": worker.id, "timeout_s": timeout},
                )
                raise _WorkerSilent
            if now >= next_ping:
                worker.post(wire.encode(wire.Ping(timestamp_unix_ms=_unix_ms())))
                next_ping = now + interval
            await trio.sleep_until(min(deadline, next_ping))

    async def _reap_cancelled(self, worker: Worker) -> None:
        """Free slots whose cancel went unanswered for cancel_grace seconds."""
        while True:
            if not worker.cancelling:
                await worker.wait_for_cancelling()
                continue
            request_id, deadline = next(iter(worker.cancelling.items()))
            await trio.sleep_until(deadline)
            if worker.cancelling.get(request_id) == deadline:
                del worker.cancelling[request_id]
                self.slot_freed(worker)

    def begin_drain(self, drain_timeout: float) -> None:
        """Relay shutdown: refuse new work, tell workers, answer the queue."""
        self.draining = True
        frame = wire.encode(
            wire.GracefulShutdown(
                reason="relay shutting down", drain_timeout_secs=math.ceil(drain_timeout)
            )
        )
        for worker in list(self.workers.values()):
            worker.post(frame)
        self.fail_queued(Unavailable("the relay is shutting down; retry shortly", retry_after=5))

    def refresh_models(self, reason: str | None = None) -> int:
        frame = wire.encode(wire.ModelsRefresh(reason=reason))
        for worker in list(self.workers.values()):
            worker.post(frame)
        return len(self.workers)

    def set_cordons(self, names: frozenset[str]) -> None:
        """Replace the cordoned names; an uncordoned worker takes queued work at once."""
        lifted = self.cordons - names
        self.cordons = names
        for worker in list(self.workers.values()):
            if worker.name in lifted:
                self.slot_freed(worker)

    def drain_worker(self, worker_id: str, reason: str | None = None) -> bool:
        worker = self.workers.get(worker_id)
        if worker is None:
            return False
        self._set_draining(worker, "an operator asked")
        worker.post(
            wire.encode(
                wire.GracefulShutdown(
                    reason=reason or "drained by an operator",
                    drain_timeout_secs=math.ceil(self.config.drain_timeout),
                )
            )
        )
        return True


async def _close(transport: Transport, code: int, reason: str) -> None:
    with trio.move_on_after(2):
        await transport.aclose(code, reason)


def _first(group: BaseExceptionGroup[wire.ProtocolError]) -> wire.ProtocolError:
    for exc in _leaves(group):
        return exc
    raise AssertionError("empty exception group")


def _leaves(group: BaseExceptionGroup[wire.ProtocolError]) -> Iterable[wire.ProtocolError]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def _fleet_busy(message: wire.ResponseComplete) -> bool:
    """Whether `message` is a fleet agent's budget refusal (wire.REFUSED_FLEET_BUSY)."""
    return (
        message.status_code == 503
        and message.headers is not None
        and message.headers.get(wire.REFUSED_HEADER) == wire.REFUSED_FLEET_BUSY
    )


def _type_name(message: object) -> str:
    return type(message).__name__


def _unix_ms() -> int:
    return int(time.time() * 1000)
