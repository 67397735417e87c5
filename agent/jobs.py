"""One request from the relay, run against the backend: a job.

A job owns a cancel scope (`Job.cancel_scope`) that the session's reader
cancels when the relay sends `cancel`. Cancelling it cancels the backend
call, which closes its HTTP connection, so the backend stops generating;
the job then sends exactly one ``response_complete`` with status 499.

Jobs never touch the socket: every frame goes into the session's bounded
outbox, which one writer task drains (a cancelled ``send_message`` would
leave half a frame on the wire). A job's failure becomes a
``response_complete`` with an error status and a JSON body in the endpoint's
dialect; it never ends the session.
"""

import codecs
import logging

import attrs
import trio

from agent.backend import Backend, BackendResponse
from agent.dialects import error_body, json_headers, sse_error_event
from agent.errors import BackendError
from agent.logging import bind_log_context
from agent.outbox import FRAME_HEADROOM, MAX_PIECE_CHARS, Outbox, split_text
from agent.usage import StreamUsage, counts_from_body
from wire import (
    MAX_SEND_FRAME_BYTES,
    AgentToRelay,
    Request,
    ResponseChunk,
    ResponseComplete,
    encode,
    filter_headers,
)

__all__ = ["Job", "run_job"]

log = logging.getLogger(__name__)

# The client's credentials are the relay's business; the backend's
# credential, if any, is ours (`--backend-api-key`).
_CLIENT_CREDENTIALS = frozenset({"authorization", "x-api-key"})


@attrs.define(eq=False)
class Job:
    """Owns one in-flight request's cancel scope.

    Attributes:
        request: The request as the relay sent it.
        started_at: `trio.current_time()` when the job was accepted.
        cancel_scope: Cancelled when the relay sends `cancel` for this request.
        cancel_reason: Why it was cancelled, for the log.
    """

    request: Request
    started_at: float
    cancel_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    cancel_reason: str | None = None

    def cancel(self, reason: str) -> None:
        """Cancel the backend call; the job answers 499 once it has stopped."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self.cancel_scope.cancel()


@attrs.define(eq=False)
class _Meter:
    """What one job did, for its log line."""

    status: int | None = None
    backend_status: int | None = None
    bytes_in: int = 0
    chunks: int = 0
    completed: bool = False
    error: str | None = None


def _fits_one_frame(msg: AgentToRelay) -> bool:
    return len(encode(msg).encode("utf-8")) <= MAX_SEND_FRAME_BYTES


async def run_job(job: Job, *, backend: Backend, outbox: Outbox) -> None:
    """Run one request against the backend and answer the relay through `outbox`.

    Never raises for a failed request (the relay gets an error status
    instead); only cancellation of the whole session propagates.

    Args:
        job: The job; its cancel scope is entered here.
        backend: The backend client.
        outbox: The session's outbox.
    """
    request = job.request
    meter = _Meter()
    with bind_log_context(request_id=request.request_id):
        try:
            with job.cancel_scope:
                await _forward(request, backend, outbox, meter)
            if job.cancel_scope.cancelled_caught and not meter.completed:
                # The relay cancelled: no more chunks, one 499, no body. The
                # job's own scope has exited, so this send is not cancelled.
                # (A cancel that lands after the answer was queued, e.g. while
                # the backend response closes, changes nothing.)
                meter.status = 499
                await outbox.send(ResponseComplete(request.request_id, 499))
                meter.completed = True
        except BackendError as exc:
            meter.error = str(exc)
            if meter.completed:  # the answer is already out: only the log learns of it
                return
            await _fail(
                request,
                outbox,
                meter,
                502,
                "backend_unreachable" if meter.backend_status is None else "backend_error",
                f"The worker's backend failed: {exc}. Check that the model "
                "server is running and reachable from the agent.",
            )
        except Exception as exc:
            # A bug in the agent must cost one request, never the session.
            log.exception("request crashed inside the agent")
            meter.error = f"{type(exc).__name__}: {exc}"
            if meter.completed:
                return
            await _fail(
                request,
                outbox,
                meter,
                500,
                "agent_error",
                f"The worker's agent failed on this request ({type(exc).__name__}).",
            )
        finally:
            _log_finished(job, meter)


async def _fail(
    request: Request, outbox: Outbox, meter: _Meter, status: int, code: str, message: str
) -> None:
    """End the request with an error the client can read, in the endpoint's dialect."""
    path = request.endpoint_path
    meter.status = status
    if meter.chunks:
        if request.is_streaming:
            # The client already has a 200 and part of a stream: end it with
            # an error event rather than a silent truncation.
            event = sse_error_event(path, message, code)
            await outbox.send(ResponseChunk(request.request_id, event))
        await outbox.send(ResponseComplete(request.request_id, status))
    else:
        await outbox.send(
            ResponseComplete(
                request.request_id,
                status,
                headers=json_headers(),
                body=error_body(path, status, message, code),
            )
        )
    meter.completed = True


def _log_finished(job: Job, meter: _Meter) -> None:
    request = job.request
    fields = {
        "model": request.model,
        "endpoint": request.endpoint_path,
        "streaming": request.is_streaming,
        "status": meter.status,
        "duration_ms": round((trio.current_time() - job.started_at) * 1000, 1),
        "bytes": meter.bytes_in,
        "chunks": meter.chunks,
        "cancelled": job.cancel_reason is not None,
    }
    if job.cancel_reason is not None:
        fields["cancel_reason"] = job.cancel_reason
    if meter.error is not None:
        fields["error"] = meter.error
    if meter.completed:
        log.info("request finished", extra=fields)
    else:
        log.warning("request abandoned: session ended or drain deadline passed", extra=fields)


async def _forward(request: Request, backend: Backend, outbox: Outbox, meter: _Meter) -> None:
    path = request.endpoint_path
    if not path.startswith("/") or "://" in path:
        await _fail(
            request, outbox, meter, 400, "invalid_request", f"Invalid endpoint path {path[:100]!r}."
        )
        return
    headers = filter_headers((request.headers or {}).items(), drop=_CLIENT_CREDENTIALS)
    headers.setdefault("content-type", "application/json")
    # --backend-dialect: this is where `/v1/messages` would be translated for an
    # OpenAI-only backend. Until that translation exists every dialect passes
    # the request through unchanged, so the backend answers it as it can.
    async with backend.post(path, request.body.encode("utf-8"), headers) as response:
        meter.backend_status = response.status_code
        if request.is_streaming and response.is_success:
            await _stream(request, response, outbox, meter)
        else:
            await _whole(request, response, outbox, meter)


async def _stream(
    request: Request, response: BackendResponse, outbox: Outbox, meter: _Meter
) -> None:
    """Forward what each backend read returns as one chunk; then complete."""
    rid = request.request_id
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    usage = StreamUsage()
    async for data in response.iter_bytes():
        meter.bytes_in += len(data)
        # Holds back at most the bytes of one incomplete UTF-8 character.
        text = decoder.decode(data)
        if not text:
            continue
        usage.feed(text)
        for piece in split_text(text):
            await outbox.send(ResponseChunk(rid, piece))
            meter.chunks += 1
    tail = decoder.decode(b"", final=True)
    if tail:
        await outbox.send(ResponseChunk(rid, tail))
        meter.chunks += 1
    meter.status = response.status_code
    await outbox.send(
        ResponseComplete(
            rid, response.status_code, headers=response.headers, token_counts=usage.counts()
        )
    )
    meter.completed = True


async def _whole(
    request: Request, response: BackendResponse, outbox: Outbox, meter: _Meter
) -> None:
    """Forward a whole body in one frame, or as chunks when it cannot fit in one."""
    rid = request.request_id
    buffered = bytearray()
    decoder: codecs.IncrementalDecoder | None = None
    async for data in response.iter_bytes():
        meter.bytes_in += len(data)
        if decoder is None:
            buffered += data
            if len(buffered) <= MAX_SEND_FRAME_BYTES - FRAME_HEADROOM:
                continue
            # Too big for one frame whatever its content: stream it as chunks
            # and keep memory bounded instead of buffering the rest.
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            data = bytes(buffered)
            buffered.clear()
        for piece in split_text(decoder.decode(data)):
            if piece:
                await outbox.send(ResponseChunk(rid, piece))
                meter.chunks += 1
    meter.status = response.status_code
    if decoder is None:
        body = buffered.decode("utf-8", errors="replace")
        counts = counts_from_body(buffered) if response.is_success else None
        complete = ResponseComplete(
            rid, response.status_code, headers=response.headers, body=body, token_counts=counts
        )
        if len(body) <= MAX_PIECE_CHARS or _fits_one_frame(complete):
            await outbox.send(complete)
            meter.completed = True
            return
        for piece in split_text(body):
            await outbox.send(ResponseChunk(rid, piece))
            meter.chunks += 1
        await outbox.send(
            ResponseComplete(
                rid, response.status_code, headers=response.headers, body="", token_counts=counts
            )
        )
    else:
        tail = decoder.decode(b"", final=True)
        if tail:
            await outbox.send(ResponseChunk(rid, tail))
            meter.chunks += 1
        await outbox.send(
            ResponseComplete(rid, response.status_code, headers=response.headers, body="")
        )
    meter.completed = True
