"""The inference paths: POST /v1/* in, SSE or JSON out.

This is the relay's hot path, so it is a raw ASGI callable rather than a
Quart view: one function owns the whole request, and its two nested cancel
scopes map one-to-one onto the design (DESIGN-SKETCH.md):

    client scope          cancelled when the client disconnects (the front's
    │                     `HangupWatch` reports it, or, where the server
    │                     offers no `HANGUP_EXTENSION` (relay/boundary.py),
    │                     a task watches `receive()` for `http.disconnect`)
    └── request scope     deadline = queue timeout, then request timeout;
        │                 relay shutdown cancels it
        └── attempt scope one per dispatch (the lease); the worker's session
                          cancels it when the worker is lost

A Quart view could not hold a scope across the moment the response starts
(the lazy-status rule needs the first frame before the status is known), and
Quart adds 15-25% per request (STACK-NOTES). Everything else (models, health,
admin, the worker socket) stays in Quart.

What an attempt's outcome means for the worker (refused: draining, or less
capacity than it claimed) and whether the request may try again (requeue
accounting) is the hub's to decide (`Hub.worker_refused`, `Hub.requeue`);
who may write the client's socket while a stream runs is the rule of
relay/boundary.py (`ClientWriter`).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import uuid
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import trio

import wire
from relay.boundary import (
    HANGUP_EXTENSION,
    SEND_NOW_EXTENSION,
    WHOLE_BODY_EXTENSION,
    ClientWriter,
    Sent,
)
from relay.dialects import Dialect, error_body, stream_error_event
from relay.errors import (
    BadRequest,
    GatewayTimeout,
    ModelNotFound,
    PayloadTooLarge,
    RelayError,
    RequestTimeout,
    Unavailable,
    UpstreamError,
)
from relay.inflight import Tracked
from relay.proxies import bind_request
from relay.worker_hub import LeaseEnd, Ticket

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from relay.asgi import Receive, Scope, Send
    from relay.core import Relay
    from relay.worker_hub import Item, Lease

__all__ = [
    "MAX_ECHO",
    "CallSummary",
    "Proxy",
    "clip",
]

log = logging.getLogger("relay.http")

_SANE_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
# A header value that holds a control character (HTAB aside) is bad input: it
# could not reach a backend, and it must not reach a log (h11 lets them by).
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# In a raw path: an encoded "/", "?" or "#", which would change the path's
# shape once a backend (or its proxy) decodes it.
_ENCODED_DELIMITERS = (b"%2f", b"%3f", b"%23")
# Client strings (model names, paths) echoed in an answer or written to a log
# are cut to this many characters.
MAX_ECHO = 200
# Model names longer than this are not names of models: refused with 400, so
# that no log line, statistic or metric label ever holds one.
MAX_MODEL_CHARS = 512
# Never passed from a worker's response to the client: hop-by-hop, or
# recomputed here (the agent's httpx already decoded any content-encoding).
_DROP_RESPONSE_HEADERS = frozenset(
    {
        wire.REFUSED_HEADER,
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "x-request-id",
        "upgrade",
        "proxy-connection",
        "te",
        "trailer",
    }
)
_ANTHROPIC_PING = b'event: ping\ndata: {"type": "ping"}\n\n'
_SSE_KEEPALIVE = b": keepalive\n\n"
_NO_EXTENSIONS: dict[str, Any] = {}
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    # A TLS proxy in front (contrib/nginx) must not buffer the stream.
    (b"x-accel-buffering", b"no"),
]


@attrs.define(eq=False)
class _Call:
    """One client request as the proxy handles it."""

    tracked: Tracked
    ticket: Ticket
    dialect: Dialect
    path: str
    stream: bool
    frame: str
    start: float
    # The server's ASGI send; once a stream has started with `send_now`, the
    # `ClientWriter`'s guarded send (relay/boundary.py).
    send: Send
    queued: bool = True
    started: bool = False  # response status sent to the client (by a keepalive, maybe)
    relayed: bool = False  # some of the worker's response went to the client
    status: int = 0
    first_byte_at: float | None = None
    dispatched_at: float | None = None  # first time a worker took it (queue wait)
    worker_id: str | None = None
    token_counts: wire.TokenCounts | None = None
    key_id: str | None = None  # the client API key's id, never the key
    error: str | None = None  # code of the error the relay answered with
    completed: bool = False  # the last byte of the response was handed to the server
    send_now: Callable[[bytes], Sent] | None = None  # the server's SEND_NOW_EXTENSION
    shown_id: str = ""  # the response's x-request-id: the client's label, else request_id
    label: str | None = None  # the client's own sane x-request-id, for the logs
    held: int = 0  # body bytes counted against the proxy's budget until dispatch

    def summary(self, now: float) -> CallSummary:
        """What the statistics and the canonical log line need of it, finished at `now`."""
        ticket = self.ticket
        reason = self.tracked.reason
        return CallSummary(
            request_id=ticket.request_id,
            client_request_id=self.label,
            model=ticket.model,
            path=clip(self.path),
            worker_id=self.worker_id,
            status=self.status or 499,
            stream=self.stream,
            requeues=ticket.requeues,
            duration=now - self.start,
            ttfb=self.first_byte_at - self.start if self.first_byte_at is not None else None,
            queue_wait=(
                self.dispatched_at - self.start if self.dispatched_at is not None else None
            ),
            cancel_reason=reason if not self.completed else None,
            error=self.error,
            key_id=self.key_id,
            token_counts=self.token_counts,
        )


@attrs.frozen
class CallSummary:
    """One finished request: what `Relay.record_finished` counts and logs."""

    request_id: str  # the relay's own, unique
    client_request_id: str | None  # the client's x-request-id, a label only
    model: str
    path: str  # clipped to MAX_ECHO characters
    worker_id: str | None
    status: int  # what the client got; 499 when it left before a status was sent
    stream: bool
    requeues: int
    duration: float  # seconds from arrival to the end
    ttfb: float | None  # seconds from arrival to the worker's first frame
    queue_wait: float | None  # seconds from arrival to the first dispatch, if there was one
    # why it was cancelled before its response was complete, if it was
    cancel_reason: wire.CancelReason | wire.OtherReason | None
    error: str | None  # code of the error the relay answered with
    key_id: str | None  # the client API key's id, never the key
    token_counts: wire.TokenCounts | None

    @property
    def client_gone(self) -> bool:
        """The client left before the response was complete."""
        return self.cancel_reason is wire.CancelReason.CLIENT_DISCONNECT

    def log_fields(self) -> dict[str, object]:
        """The canonical log line's fields (milliseconds, names as operators query them)."""
        reason = self.cancel_reason
        fields: dict[str, object] = {
            "request_id": self.request_id,
            "client_request_id": self.client_request_id,
            "model": self.model,
            "path": self.path,
            "worker_id": self.worker_id,
            "status": self.status,
            "stream": self.stream,
            "requeues": self.requeues,
            "duration_ms": round(self.duration * 1000, 2),
            "ttfb_ms": round(self.ttfb * 1000, 2) if self.ttfb is not None else None,
            "queue_ms": round(self.queue_wait * 1000, 2) if self.queue_wait is not None else None,
            "cancelled": reason is not None,
            "cancel_reason": str(reason) if reason is not None else None,
            "error": self.error,
            "key_id": self.key_id,
        }
        counts = self.token_counts
        if counts is not None:
            fields["prompt_tokens"] = counts.prompt_tokens
            fields["completion_tokens"] = counts.completion_tokens
            if counts.cache_read_tokens is not None:
                fields["cache_read_tokens"] = counts.cache_read_tokens
            if counts.cache_creation_tokens is not None:
                fields["cache_creation_tokens"] = counts.cache_creation_tokens
        return fields


class Proxy:
    """ASGI app for POST /v1/*: queue, dispatch, relay the response."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.config = relay.config
        self.hub = relay.hub
        # Request ids: this process's random prefix and a counter (unique,
        # and cheaper than a uuid per request).
        self._id_prefix = uuid.uuid4().hex[:12]
        self._ids = itertools.count(1)
        # Body bytes read and not yet dispatched, across every request; past
        # the budget, a request being read is refused with 503.
        self.held_body_bytes = 0
        self.body_budget = max(relay.config.max_pending_body_bytes, relay.config.max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = trio.current_time()
        bind_request(scope)  # the client's address and user agent, should a line be logged
        path: str = scope["path"]
        dialect = Dialect.for_path(path)
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        extensions = scope.get("extensions") or _NO_EXTENSIONS
        # The relay's own id, unique: the worker's frame and every lease are
        # keyed by it. The client's x-request-id is a label only.
        request_id = f"{self._id_prefix}{next(self._ids):x}"
        label, declared, bad_header = _scan_head(headers)
        shown_id = label or request_id  # the x-request-id the client gets back
        model: str | None = None
        key_id: str | None = None
        held = 0  # body bytes this request counts against the relay's budget
        try:
            if bad_header is not None:
                raise BadRequest(
                    f"the {bad_header} header holds a control character; "
                    "header values must be visible characters, spaces or tabs"
                )
            _check_path(path, scope.get("raw_path"))
            # From the head, before any body byte is read (and so before any
            # `100 Continue`): a client without a key holds nothing.
            forwarded, key_id = self.relay.client_auth.authorize(headers)
            limit = self.config.max_body_bytes
            if declared is not None and declared > limit:
                raise PayloadTooLarge(_too_large(declared, limit))
            whole: bytes | None = extensions.get(WHOLE_BODY_EXTENSION)
            if whole is not None:  # it came with the head: nothing to wait for
                held = len(whole)  # counted from here on (released below if refused)
                self._hold(held, held)
                body = whole
            else:
                try:
                    body = await self._read_body(receive, start)
                except _ClientGone:
                    return
                held = len(body)
            model, stream = _parse_body(body)
            if self.hub.draining:
                raise Unavailable("the relay is shutting down; retry shortly", retry_after=5)
            if not self.hub.is_routable(model):
                served = self.hub.served_models()
                listing = ", ".join(clip(m) for m in served[:20]) if served else ""
                if len(served) > 20:
                    listing += f" and {len(served) - 20} more"
                raise ModelNotFound(
                    f"no worker serves model {clip(model)!r}; models served now: "
                    + (listing or "none (no worker is connected)")
                )
            if label is not None:
                # The agent logs the client's label next to the relay's id; it
                # is not on the backend allowlist, so the agent drops it there.
                forwarded["x-request-id"] = label
            frame = wire.encode(
                wire.Request(
                    request_id=request_id,
                    model=model,
                    endpoint_path=_with_query(path, scope.get("query_string", b"")),
                    is_streaming=stream,
                    body=_text(body),
                    headers=forwarded or None,
                )
            )
            if len(frame) > wire.limits.MAX_SEND_FRAME_BYTES:  # encode() output is ASCII
                raise PayloadTooLarge(
                    f"the request is {len(body)} bytes; a request must fit in one "
                    f"{wire.limits.MAX_SEND_FRAME_BYTES // (1024 * 1024)} MiB frame to a worker"
                )
        except RelayError as exc:
            self.held_body_bytes -= held
            await _send_error(send, dialect, exc, shown_id)
            self.relay.record_rejected(
                request_id,
                clip(path),
                exc,
                trio.current_time() - start,
                model=model,
                key_id=key_id,
                client_request_id=label,
            )
            return

        call = _Call(
            tracked=Tracked(request_id, trio.CancelScope()),
            ticket=Ticket(request_id=request_id, model=model, arrival=start),
            dialect=dialect,
            path=path,
            stream=stream,
            frame=frame,
            start=start,
            send=send,
            key_id=key_id,
            shown_id=shown_id,
            label=label,
            held=held,
        )
        self.relay.record_started(model, key_id)
        self.relay.inflight.add(call.tracked)
        call.send_now = extensions.get(SEND_NOW_EXTENSION)
        watch = extensions.get(HANGUP_EXTENSION)
        try:
            if watch is None:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        _watch_disconnect, receive, nursery.cancel_scope, call.tracked
                    )
                    await self._run(call)
                    nursery.cancel_scope.cancel()
            else:
                with trio.CancelScope() as client_scope:
                    unwatch = watch(partial(_client_left, client_scope, call.tracked))
                    try:
                        await self._run(call)
                    finally:
                        unwatch()
        finally:
            self.held_body_bytes -= call.held
            call.held = 0
            self.relay.inflight.remove(call.tracked)
            self.relay.record_finished(call.summary(trio.current_time()))

    async def _read_body(self, receive: Receive, start: float) -> bytes:
        """The whole body, within `--body-timeout` of the head and the relay's body budget.

        Every byte read counts against `held_body_bytes` until the request is
        dispatched or ends (the caller releases it); what a failed read had
        counted is released here.

        Raises:
            PayloadTooLarge: past `--max-body-bytes`.
            Unavailable: the bodies held across all requests would pass the budget.
            RequestTimeout: the body did not arrive in time.
            _ClientGone: the client left.
        """
        cfg = self.config
        parts: list[bytes] = []
        size = 0
        deadline = start + cfg.body_timeout if cfg.body_timeout > 0 else math.inf
        try:
            with trio.move_on_at(deadline):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _ClientGone
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    self._hold(len(chunk), size)
                    parts.append(chunk)
                    if not message.get("more_body", False):
                        return parts[0] if len(parts) == 1 else b"".join(parts)
        except BaseException:
            self.held_body_bytes -= size
            raise
        self.held_body_bytes -= size
        raise RequestTimeout(
            f"the request body did not arrive within {cfg.body_timeout:g}s of its head"
        )

    def _hold(self, added: int, size: int) -> None:
        """Count `added` body bytes against the relay's budget; `size` is the body's so far.

        Raises (the bytes stay counted: the caller releases what it held):
            PayloadTooLarge: past `--max-body-bytes`.
            Unavailable: the bodies held across all requests would pass the budget.
        """
        self.held_body_bytes += added
        limit = self.config.max_body_bytes
        if size > limit:
            # A chunked body: `size` is only what arrived so far, not its size.
            raise PayloadTooLarge(f"the request body is over the relay's limit of {limit} bytes")
        if self.held_body_bytes > self.body_budget:
            log.warning(
                "request bodies past the relay's budget: refusing one",
                extra={"held_bytes": self.held_body_bytes, "budget": self.body_budget},
            )
            raise Unavailable(
                "the relay is holding too many request bodies; retry shortly", retry_after=1
            )

    async def _run(self, call: _Call) -> None:
        cfg = self.config
        ticket = call.ticket
        queue_deadline = call.start + cfg.queue_timeout if cfg.queue_timeout > 0 else math.inf
        request_deadline = math.inf
        scope = call.tracked.scope
        try:
            with scope:
                while True:
                    call.queued = True
                    scope.deadline = min(queue_deadline, request_deadline)
                    lease = await self.hub.acquire(
                        ticket, keepalive=cfg.stream_keepalive, ping=self._pinger(call)
                    )
                    call.queued = False
                    if call.dispatched_at is None:
                        call.dispatched_at = trio.current_time()
                    call.worker_id = lease.worker.id
                    if request_deadline == math.inf and cfg.request_timeout > 0:
                        request_deadline = trio.current_time() + cfg.request_timeout
                    scope.deadline = request_deadline
                    refused: _WorkerRefused | None = None
                    try:
                        with lease.scope:
                            lease.post_request(call.frame)
                            if call.held:  # dispatched: its body no longer counts
                                self.held_body_bytes -= call.held
                                call.held = 0
                            await self._relay_response(call, lease)
                            return
                    except _WorkerRefused as exc:
                        refused = exc
                    finally:
                        lease.close(self._cancel_reason(call))
                    if refused is not None:
                        # Our agent refused it (busy, draining, its backend
                        # down): nothing ran, so try elsewhere.
                        self.hub.worker_refused(lease.worker, refused.code)
                        self.hub.requeue(
                            ticket, lease.worker, f"refused ({refused.code})", refusal=refused.code
                        )
                    else:
                        self._attempt_ended(call, lease)
            # The request scope caught its own cancellation: deadline or shutdown.
            if call.tracked.reason == wire.CancelReason.SERVER_SHUTDOWN:
                raise Unavailable("the relay shut down before the request finished", retry_after=5)
            if call.queued:
                raise GatewayTimeout(
                    f"no worker took the request within the queue timeout "
                    f"({cfg.queue_timeout:g}s); the workers for {ticket.model!r} are busy"
                )
            raise GatewayTimeout(
                f"the request did not finish within the request timeout "
                f"({cfg.request_timeout:g}s); the worker was told to cancel it"
            )
        except RelayError as exc:
            await self._fail(call, exc)

    def _cancel_reason(self, call: _Call) -> wire.CancelReason | wire.OtherReason:
        if call.tracked.reason is not None:
            return call.tracked.reason
        if trio.current_time() >= call.tracked.scope.deadline:
            return wire.CancelReason.TIMEOUT
        return wire.CancelReason.CLIENT_DISCONNECT

    def _pinger(self, call: _Call) -> Callable[[], Awaitable[None]] | None:
        """What keeps a streamed request's client waiting, if anything (`--stream-keepalive`)."""
        if not call.stream or self.config.stream_keepalive <= 0:
            return None
        return partial(self._keepalive, call)

    async def _keepalive(self, call: _Call) -> None:
        """One keepalive in the client's dialect; the first commits 200 text/event-stream.

        Anthropic's SDKs expect ``event: ping`` (some clients ignore SSE
        comments); the OpenAI endpoints get a comment, which every SSE
        parser skips. After this, a failure is an error event in the stream.
        """
        if not call.started:
            await call.send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        *_SSE_HEADERS,
                        (b"x-request-id", call.shown_id.encode()),
                    ],
                }
            )
            call.started = True
            call.status = 200
        frame = _ANTHROPIC_PING if call.dialect is Dialect.ANTHROPIC else _SSE_KEEPALIVE
        await call.send({"type": "http.response.body", "body": frame, "more_body": True})

    async def _first_items(self, call: _Call, lease: Lease) -> list[Item]:
        """A streamed request's first items from the worker, with keepalives while it waits."""
        period = self.config.stream_keepalive
        while True:
            with trio.move_on_after(period):
                return await lease.receive()
            await self._keepalive(call)

    def _attempt_ended(self, call: _Call, lease: Lease) -> None:
        """The worker side ended this attempt: requeue it or raise why not."""
        if lease.ended is LeaseEnd.WORKER_LOST:
            if call.relayed:
                raise UpstreamError("the worker was lost while streaming the response")
            self.hub.requeue(call.ticket, lease.worker, "lost")
            return
        if lease.ended is LeaseEnd.TOO_LARGE:
            raise UpstreamError(
                f"the response exceeded the relay's limit of {self.config.max_response_bytes} bytes"
            )
        raise UpstreamError("the client read too slowly; the relay stopped buffering for it")

    async def _relay_response(self, call: _Call, lease: Lease) -> None:
        send = call.send
        if call.stream and self.config.stream_keepalive > 0:
            items = await self._first_items(call, lease)
        else:
            items = await lease.receive()
        call.first_byte_at = trio.current_time()
        first = items[0]
        if isinstance(first, wire.ResponseComplete):
            # 503: busy or draining; 502: its backend did not answer (nothing ran).
            if first.status_code in (502, 503) and first.headers:
                code = first.headers.get(wire.REFUSED_HEADER)
                if code is not None:
                    raise _WorkerRefused(code)
            if call.started:  # a keepalive committed a 200 stream already
                await self._whole_into_stream(call, first)
                return
            await self._send_whole(call, first, first.body or "")
            return
        if not call.stream:
            # A body too large for one frame arrives as chunks, then complete.
            parts: list[str] = []
            while True:
                last = items[-1]
                if isinstance(last, wire.ResponseComplete):
                    parts.extend(items[:-1])  # type: ignore[arg-type]
                    parts.append(last.body or "")
                    await self._send_whole(call, last, "".join(parts))
                    return
                parts.extend(items)  # type: ignore[arg-type]
                items = await lease.receive()
        # Lazy status: the first chunk commits a 200 event stream (unless a
        # keepalive did already).
        if not call.started:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [*_SSE_HEADERS, (b"x-request-id", call.shown_id.encode())],
                }
            )
            call.started = True
            call.status = 200
        call.relayed = True
        if call.send_now is not None:
            # From here a chunk that arrives while this task waits goes to the
            # client from the worker's reader, if the socket takes it at once;
            # this task writes through the same guard (relay/boundary.py).
            writer = ClientWriter(send, call.send_now)
            lease.direct = writer
            send = call.send = writer.send
        while True:
            last = items[-1]
            done = isinstance(last, wire.ResponseComplete)
            if isinstance(last, wire.ResponseComplete):
                call.token_counts = last.token_counts
                call.completed = True
                items = items[:-1]
            # After a complete nothing more arrives: every other item is a
            # chunk, or FLUSH (a direct write went out in part: sending, even
            # nothing, writes the rest first).
            chunks = [item for item in items if type(item) is str]
            data = chunks[0] if len(chunks) == 1 else "".join(chunks)
            await send({"type": "http.response.body", "body": data.encode(), "more_body": not done})
            if done:
                return
            items = await lease.receive()

    async def _whole_into_stream(self, call: _Call, complete: wire.ResponseComplete) -> None:
        """A whole answer after keepalives committed a stream: its body, or an error event.

        A success is passed on as the stream's rest (a backend that streamed
        into one frame); an error status can no longer be a status, so it
        becomes the dialect's error event carrying the backend's message.
        """
        call.token_counts = complete.token_counts
        call.relayed = True
        body = complete.body or ""
        if 200 <= complete.status_code < 300:
            call.completed = True
            await call.send(
                {"type": "http.response.body", "body": body.encode(), "more_body": False}
            )
            return
        call.status = complete.status_code
        call.error = "upstream_error"
        call.completed = True
        event = stream_error_event(call.dialect, "upstream_error", _error_message(body))
        await call.send({"type": "http.response.body", "body": event, "more_body": False})

    async def _send_whole(self, call: _Call, complete: wire.ResponseComplete, body: str) -> None:
        status = complete.status_code
        try:
            headers = [
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in (complete.headers or {}).items()
                if name.lower() not in _DROP_RESPONSE_HEADERS
            ]
        except UnicodeEncodeError:
            headers = None
        if headers is None or not 200 <= status <= 599:
            # A 1xx would leave the client waiting for a final answer that
            # never comes; a header HTTP cannot carry cannot be sent.
            why = (
                f"response status {status} outside 200-599"
                if headers is not None
                else "a response header that is not Latin-1"
            )
            assert call.worker_id is not None
            self.hub.response_fault(call.worker_id, call.ticket.request_id, why)
            raise UpstreamError(f"the worker sent an invalid response ({why})")
        payload = body.encode()
        headers.append((b"content-length", str(len(payload)).encode()))
        headers.append((b"x-request-id", call.shown_id.encode()))
        call.status = complete.status_code
        call.token_counts = complete.token_counts
        await call.send(
            {"type": "http.response.start", "status": complete.status_code, "headers": headers}
        )
        call.started = True
        call.completed = True
        await call.send({"type": "http.response.body", "body": payload, "more_body": False})

    async def _fail(self, call: _Call, exc: RelayError) -> None:
        call.status = call.status or exc.status
        call.error = exc.code
        call.completed = True  # the error (response or stream event) ends it
        log.info(
            "request failed",
            extra={
                "request_id": call.ticket.request_id,
                "worker_id": call.worker_id,
                "status": exc.status,
                "error": exc.code,
                "detail": exc.message,
            },
        )
        if not call.started:
            await _send_error(call.send, call.dialect, exc, call.shown_id)
            return
        code = "worker_lost" if isinstance(exc, UpstreamError) else exc.code
        event = stream_error_event(call.dialect, code, exc.message)
        await call.send({"type": "http.response.body", "body": event, "more_body": False})


def _error_message(body: str) -> str:
    """The message inside an error body (OpenAI or Anthropic shape), else a generic one."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    error = doc.get("error") if isinstance(doc, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if isinstance(message, str) and message:
        return message[:2000]
    return "the worker answered with an error"


def _client_left(scope: trio.CancelScope, tracked: Tracked) -> None:
    if tracked.reason is None:
        tracked.reason = wire.CancelReason.CLIENT_DISCONNECT
    scope.cancel()


async def _watch_disconnect(receive: Receive, scope: trio.CancelScope, tracked: Tracked) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            _client_left(scope, tracked)
            return


def _with_query(path: str, query: bytes) -> str:
    """The path the backend should see: a query (Claude Code's `?beta=true`) kept."""
    return f"{path}?{query.decode('latin-1')}" if query else path


class _WorkerRefused(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class _ClientGone(Exception):
    """The client left before its body arrived."""


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the request body must be UTF-8 encoded JSON") from None


def clip(text: str, limit: int = MAX_ECHO) -> str:
    """`text` cut to `limit` characters (marked with an ellipsis), for answers and logs."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _scan_head(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, int | None, str | None]:
    """One pass over the request's headers.

    Returns:
        The client's x-request-id if it is sane (a label), the declared
        content-length if any, and the name of a header whose value holds a
        control character (None when all are clean).
    """
    label = None
    declared = None
    bad = None
    search = _CONTROL.search
    for name, value in headers:
        if search(value) is not None and bad is None:
            bad = clip(name.decode("latin-1"), 64)
        if name == b"x-request-id":
            if label is None and _SANE_ID.fullmatch(value):
                label = value.decode("ascii")
        elif name == b"content-length" and value.isdigit():
            declared = int(value)
    return label, declared, bad


def _check_path(path: str, raw_path: bytes | None) -> None:
    """Refuse a path that is not a normal path under /v1/.

    A dot segment (decoded: ``%2e`` is a dot), an encoded ``/``, ``?`` or ``#``,
    or a ``%`` left after decoding (a second round of decoding downstream
    would turn it into one of those) could take the request somewhere
    else than the path the relay routed: a backend's ``/api/pull``, or
    above an agent's ``--backend-url`` prefix. Cheap on the usual path: two
    substring tests.

    Raises:
        BadRequest: with what is wrong (the path itself clipped).
    """
    if "/." in path or "%" in path or "\\" in path:
        for segment in path.split("/"):
            if segment in (".", ".."):
                raise BadRequest(
                    f"the path {clip(path)!r} has a dot segment; send the normalised path"
                )
        if "%" in path or "\\" in path:
            raise BadRequest(f"the path {clip(path)!r} holds an encoded or unusual character")
    if raw_path is not None and b"%" in raw_path:
        lowered = raw_path.lower()
        for encoded in _ENCODED_DELIMITERS:
            if encoded in lowered:
                raise BadRequest(
                    f"the path {clip(path)!r} holds an encoded '/', '?' or '#'; "
                    "paths must use them unencoded or not at all"
                )
    if not path.startswith("/v1/"):
        raise BadRequest(f"the path {clip(path)!r} is not under /v1/")


def _parse_body(body: bytes) -> tuple[str, bool]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("the request body is nested too deeply to be read as JSON") from None
    if not isinstance(doc, dict):
        raise BadRequest("the request body must be a JSON object")
    model = doc.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest('the request body needs a "model" string naming the model to use')
    if len(model) > MAX_MODEL_CHARS:
        raise BadRequest(
            f'"model" is {len(model)} characters long; model names have at most {MAX_MODEL_CHARS}'
        )
    stream = doc.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequest('"stream" must be true or false')
    return model, stream


def _too_large(size: int, limit: int) -> str:
    return f"the request body is {size} bytes, over the relay's limit of {limit} bytes"


async def _send_error(send: Send, dialect: Dialect, exc: RelayError, request_id: str) -> None:
    payload = error_body(dialect, exc)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})
