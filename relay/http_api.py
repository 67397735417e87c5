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
from relay.boundary import HANGUP_EXTENSION, SEND_NOW_EXTENSION, ClientWriter, Sent
from relay.dialects import Dialect, error_body, stream_error_event
from relay.errors import (
    BadRequest,
    GatewayTimeout,
    ModelNotFound,
    PayloadTooLarge,
    RelayError,
    Unavailable,
    UpstreamError,
)
from relay.inflight import Tracked
from relay.worker_hub import LeaseEnd, Ticket

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    from relay.core import Relay
    from relay.worker_hub import Item, Lease

    Scope = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
    Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

__all__ = [
    "CallSummary",
    "Proxy",
]

log = logging.getLogger("relay.http")

_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
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

    def summary(self, now: float) -> CallSummary:
        """What the statistics and the canonical log line need of it, finished at `now`."""
        ticket = self.ticket
        reason = self.tracked.reason
        return CallSummary(
            request_id=ticket.request_id,
            model=ticket.model,
            path=self.path,
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

    request_id: str
    model: str
    path: str
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = trio.current_time()
        path: str = scope["path"]
        dialect = Dialect.for_path(path)
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        request_id = self._request_id(headers)
        model: str | None = None
        key_id: str | None = None
        try:
            try:
                body = await self._read_body(headers, receive)
            except _ClientGone:
                return
            forwarded, key_id = self.relay.client_auth.authorize(headers)
            model, stream = _parse_body(body)
            if self.hub.draining:
                raise Unavailable("the relay is shutting down; retry shortly", retry_after=5)
            if not self.hub.is_routable(model):
                served = self.hub.served_models()
                listing = ", ".join(served) if served else "none (no worker is connected)"
                raise ModelNotFound(
                    f"no worker serves model {model!r}; models served now: {listing}"
                )
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
            await _send_error(send, dialect, exc, request_id)
            self.relay.record_rejected(
                request_id, path, exc, trio.current_time() - start, model=model, key_id=key_id
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
        )
        self.relay.record_started(model, key_id)
        self.relay.inflight.add(call.tracked)
        extensions = scope.get("extensions") or {}
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
            self.relay.inflight.remove(call.tracked)
            self.relay.record_finished(call.summary(trio.current_time()))

    def _request_id(self, headers: list[tuple[bytes, bytes]]) -> str:
        for name, value in headers:
            if name == b"x-request-id":
                text = value.decode("latin-1")
                if _SANE_ID.fullmatch(text) and text not in self.relay.inflight:
                    return text
                break
        return uuid.uuid4().hex

    async def _read_body(self, headers: list[tuple[bytes, bytes]], receive: Receive) -> bytes:
        limit = self.config.max_body_bytes
        for name, value in headers:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise PayloadTooLarge(_too_large(int(value), limit))
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                # A chunked body: `size` is only what arrived so far, not its size.
                raise PayloadTooLarge(
                    f"the request body is over the relay's limit of {limit} bytes"
                )
            parts.append(chunk)
            if not message.get("more_body", False):
                return parts[0] if len(parts) == 1 else b"".join(parts)

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
                        (b"x-request-id", call.ticket.request_id.encode()),
                    ],
                }
            )
            call.started = True
            call.status = 200
        frame = _ANTHROPIC_PING if call.dialect is Dialect.ANTHROPIC else _SSE_KEEPALIVE
        await call.send({"type": "http.response.body", "body": frame, "more_body": True})

    async def _first_items(self, call: _Call, lease: Lease) -> list[Item]:
        """The worker's first items, with keepalives while a streamed client waits for them."""
        period = self.config.stream_keepalive
        if not call.stream or period <= 0:
            return await lease.receive()
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
        items = await self._first_items(call, lease)
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
                    "headers": [*_SSE_HEADERS, (b"x-request-id", call.ticket.request_id.encode())],
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
        payload = body.encode()
        headers = [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in (complete.headers or {}).items()
            if name.lower() not in _DROP_RESPONSE_HEADERS
        ]
        headers.append((b"content-length", str(len(payload)).encode()))
        headers.append((b"x-request-id", call.ticket.request_id.encode()))
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
            await _send_error(call.send, call.dialect, exc, call.ticket.request_id)
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


def _parse_body(body: bytes) -> tuple[str, bool]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("the request body must be a JSON object")
    model = doc.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest('the request body needs a "model" string naming the model to use')
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
