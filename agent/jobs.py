"""One request from the relay, run against the backend: a job.

A job owns a cancel scope (`Job.cancel_scope`) that the session's reader
cancels when the relay sends `cancel`. Cancelling it cancels the backend
call, which closes its HTTP connection, so the backend stops generating;
the job then sends exactly one ``response_complete`` with status 499.

`/v1/messages` meets the backend's dialect here (``--backend-dialect``):
``anthropic`` passes it through; ``openai`` translates it to
``/v1/chat/completions`` and the answer back (agent/translate.py); ``auto``
sends the first one as it is, and a 404, 405 or 501 answer means the backend
lacks the route: the backend is remembered as ``openai`` for the agent's
lifetime and that same request goes again, translated. Any other answer
means ``anthropic``. ``/v1/messages/count_tokens`` on a backend without it
is answered with an estimate (4 characters a token) that says so in a header.

Jobs never touch the socket: every frame goes into the session's bounded
outbox, which one writer task drains (a cancelled ``send_message`` would
leave half a frame on the wire). A job's failure becomes a
``response_complete`` with an error status and a JSON body in the endpoint's
dialect; it never ends the session.
"""

import codecs
import json
import logging
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from agent import metrics as agent_metrics
from agent import translate
from agent.backend import Backend, BackendResponse
from agent.config import BackendDialect, redact_url
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
    TokenCounts,
    encode,
    filter_headers,
)

__all__ = ["Job", "run_job"]

log = logging.getLogger(__name__)

# The client's credentials are the relay's business; the backend's
# credential, if any, is ours (`--backend-api-key`).
_CLIENT_CREDENTIALS = frozenset({"authorization", "x-api-key"})

_MESSAGES = "/v1/messages"
_COUNT_TOKENS = "/v1/messages/count_tokens"
_CHAT = "/v1/chat/completions"
# What a server without a route answers (FastAPI/Go muxes: 404 or 405; some
# proxies: 501).
_NO_ROUTE = frozenset({404, 405, 501})
# A non-streaming OpenAI answer is read whole to be translated: at most this
# much of it (LLM answers are a few KiB; this only bounds a broken backend).
_MAX_TRANSLATED_BODY = 64 * 1024 * 1024
_U32_MAX = 2**32 - 1


async def _emit(outbox: Outbox, message: AgentToRelay) -> None:
    """Queue `message` for the writer; wait only when the outbox is full.

    ``MemorySendChannel.send`` yields to trio's run loop even when there is
    room (one more loop iteration per message on the hot path); this does not.
    A full outbox still pushes back.
    """
    try:
        outbox.send_nowait(message)
    except trio.WouldBlock:
        await outbox.send(message)


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
    translated: bool = False
    estimated: bool = False


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
    agent_metrics.job_started()
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
                await _emit(outbox, ResponseComplete(request.request_id, 499))
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
            await _emit(outbox, ResponseChunk(request.request_id, event))
        await _emit(outbox, ResponseComplete(request.request_id, status))
    else:
        await _emit(
            outbox,
            ResponseComplete(
                request.request_id,
                status,
                headers=json_headers(),
                body=error_body(path, status, message, code),
            ),
        )
    meter.completed = True


def _log_finished(job: Job, meter: _Meter) -> None:
    agent_metrics.job_finished(  # --metrics-listen (agent/metrics.py); a no-op without it
        job.request.model, meter.status, meter.error, trio.current_time() - job.started_at
    )
    if not log.isEnabledFor(logging.INFO if meter.completed else logging.WARNING):
        return  # e.g. --log-level warning: not even the fields are built
    request = job.request
    fields = {
        "model": request.model,
        # The same names as the relay's line for the same request.
        "path": request.endpoint_path,
        "stream": request.is_streaming,
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
    if meter.translated:
        fields["translated"] = "openai-chat"
    if meter.estimated:
        fields["token_estimate"] = translate.TOKEN_ESTIMATE_METHOD
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
    route = path.split("?", 1)[0]
    if route == _MESSAGES:
        if backend.dialect is BackendDialect.OPENAI or not await _pass_through(
            request, backend, outbox, meter, headers, probe=backend.dialect is BackendDialect.AUTO
        ):
            await _translated(request, backend, outbox, meter, headers)
    elif route == _COUNT_TOKENS:
        if backend.dialect is BackendDialect.OPENAI or not await _pass_through(
            request, backend, outbox, meter, headers, missing_route_ok=True
        ):
            await _estimate_tokens(request, outbox, meter)
    else:
        await _pass_through(request, backend, outbox, meter, headers)


async def _pass_through(
    request: Request,
    backend: Backend,
    outbox: Outbox,
    meter: _Meter,
    headers: dict[str, str],
    *,
    probe: bool = False,
    missing_route_ok: bool = False,
) -> bool:
    """Send the request as it is and forward the answer.

    Args:
        request: The request.
        backend: The backend.
        outbox: The session's outbox.
        meter: The job's meter.
        headers: Filtered request headers.
        probe: This `/v1/messages` request decides the ``auto`` dialect.
        missing_route_ok: A 404/405/501 is not forwarded: the caller has a fallback.

    Returns:
        False when the backend lacks the route and the caller's fallback
        should answer (nothing was sent); True when the answer was forwarded.
    """
    async with backend.post(
        request.endpoint_path, request.body.encode("utf-8"), headers
    ) as response:
        meter.backend_status = response.status_code
        missing = response.status_code in _NO_ROUTE
        if probe and backend.dialect is BackendDialect.AUTO:
            _learn_dialect(
                backend,
                BackendDialect.OPENAI if missing else BackendDialect.ANTHROPIC,
                response.status_code,
            )
        if missing and (probe or missing_route_ok):
            return False  # leaving the block closes the answer unread
        if request.is_streaming and response.is_success:
            await _stream(request, response, outbox, meter)
        else:
            await _whole(request, response, outbox, meter)
    return True


def _learn_dialect(backend: Backend, dialect: BackendDialect, status: int) -> None:
    backend.dialect = dialect
    fields = {
        "backend": redact_url(backend.base_url),
        "backend_dialect": dialect.value,
        "backend_status": status,
    }
    if dialect is BackendDialect.OPENAI:
        log.info(
            "the backend has no /v1/messages (HTTP %d): translating Anthropic requests to "
            "/v1/chat/completions from now on",
            status,
            extra=fields,
        )
    else:
        log.info("the backend serves /v1/messages itself: passing it through", extra=fields)


def _parse_anthropic(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(request.body)
    except (ValueError, RecursionError):
        raise translate.TranslationError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise translate.TranslationError("the request body must be a JSON object")
    return body


def _token_counts(prompt: int | None, completion: int | None) -> TokenCounts | None:
    prompt = prompt if prompt is not None and 0 <= prompt <= _U32_MAX else None
    completion = completion if completion is not None and 0 <= completion <= _U32_MAX else None
    if prompt is None and completion is None:
        return None
    total = (
        min(prompt + completion, _U32_MAX)
        if prompt is not None and completion is not None
        else None
    )
    return TokenCounts(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


async def _read_capped(response: BackendResponse, meter: _Meter, limit: int) -> bytes | None:
    """The whole body, or None (and the rest left unread) once it passes `limit` bytes."""
    buffered = bytearray()
    async for data in response.iter_bytes():
        meter.bytes_in += len(data)
        buffered += data
        if len(buffered) > limit:
            return None
    return bytes(buffered)


async def _translated(
    request: Request, backend: Backend, outbox: Outbox, meter: _Meter, headers: dict[str, str]
) -> None:
    """Run an Anthropic `/v1/messages` request as OpenAI chat, and translate the answer back."""
    meter.translated = True
    try:
        anthropic = _parse_anthropic(request)
        chat = translate.request_to_chat(anthropic)
    except translate.TranslationError as exc:
        await _fail(request, outbox, meter, 400, "invalid_request", f"Invalid request: {exc}.")
        return
    # The relay decided streaming from the same body; its word is the one the
    # client's response follows.
    if request.is_streaming:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    else:
        chat.pop("stream", None)
        chat.pop("stream_options", None)
    model = anthropic.get("model")
    model = model if isinstance(model, str) else request.model
    stops = anthropic.get("stop_sequences")
    stops = [s for s in stops if isinstance(s, str)] if isinstance(stops, list) else []
    # Anthropic's version and beta headers mean nothing to an OpenAI server.
    sent = {k: v for k, v in headers.items() if not k.startswith("anthropic-")}
    sent["content-type"] = "application/json"
    body = json.dumps(chat, ensure_ascii=False).encode("utf-8")
    async with backend.post(_CHAT, body, sent) as response:
        meter.backend_status = response.status_code
        if not response.is_success:
            raw = await _read_capped(response, meter, _MAX_TRANSLATED_BODY)
            meter.status = response.status_code
            await _send_whole(
                request,
                outbox,
                meter,
                response.status_code,
                json_headers(),
                translate.error_to_anthropic(response.status_code, raw or b""),
                None,
            )
            return
        streamed = response.headers.get("content-type", "").startswith("text/event-stream")
        if request.is_streaming and streamed:
            await _stream_translated(request, response, outbox, meter, model, stops)
            return
        # Not streaming, or a server that answered a stream request with one
        # JSON body (it ignored `stream`): translate it whole.
        raw = await _read_capped(response, meter, _MAX_TRANSLATED_BODY)
    if raw is None:
        raise BackendError(
            f"the backend's answer is larger than {_MAX_TRANSLATED_BODY // (1024 * 1024)} MiB "
            "and cannot be translated",
            redact_url(backend.url(_CHAT)),
        )
    try:
        parsed = json.loads(raw)
        if not isinstance(parsed, Mapping):
            raise translate.TranslationError("the answer is not a JSON object")
        message = translate.chat_to_message(parsed, model=model, stop_sequences=stops)
    except (ValueError, RecursionError) as exc:
        raise BackendError(
            f"the backend's chat completion could not be translated ({exc})",
            redact_url(backend.url(_CHAT)),
        ) from None
    usage = parsed.get("usage")
    prompt = completion = None
    if isinstance(usage, Mapping):
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    counts = _token_counts(
        prompt if isinstance(prompt, int) else None,
        completion if isinstance(completion, int) else None,
    )
    headers_out = dict(response.headers)
    if request.is_streaming:
        # The client waits for events: the whole answer as one stream.
        headers_out["content-type"] = "text/event-stream"
        for piece in split_text(translate.message_to_sse(message)):
            await _emit(outbox, ResponseChunk(request.request_id, piece))
            meter.chunks += 1
        meter.status = 200
        await _emit(
            outbox,
            ResponseComplete(request.request_id, 200, headers=headers_out, token_counts=counts),
        )
        meter.completed = True
        return
    headers_out["content-type"] = "application/json"
    text = json.dumps(message, ensure_ascii=False)
    await _send_whole(request, outbox, meter, 200, headers_out, text, counts)


async def _stream_translated(
    request: Request,
    response: BackendResponse,
    outbox: Outbox,
    meter: _Meter,
    model: str,
    stops: list[str],
) -> None:
    """Translate an OpenAI chat stream into Anthropic events as each backend read arrives."""
    rid = request.request_id
    translator = translate.ChatStreamTranslator(model=model, stop_sequences=stops)
    async for data in response.iter_bytes():
        meter.bytes_in += len(data)
        text = translator.feed(data)
        for piece in split_text(text) if text else ():
            await _emit(outbox, ResponseChunk(rid, piece))
            meter.chunks += 1
    text = translator.close()
    for piece in split_text(text) if text else ():
        await _emit(outbox, ResponseChunk(rid, piece))
        meter.chunks += 1
    headers = dict(response.headers)
    headers["content-type"] = "text/event-stream"
    meter.status = response.status_code
    await _emit(
        outbox,
        ResponseComplete(
            rid,
            response.status_code,
            headers=headers,
            token_counts=_token_counts(translator.input_tokens, translator.output_tokens),
        ),
    )
    meter.completed = True


async def _estimate_tokens(request: Request, outbox: Outbox, meter: _Meter) -> None:
    """Answer `count_tokens` for a backend that cannot: 4 characters a token, and say so."""
    try:
        body = _parse_anthropic(request)
    except translate.TranslationError as exc:
        await _fail(request, outbox, meter, 400, "invalid_request", f"Invalid request: {exc}.")
        return
    meter.estimated = True
    headers = json_headers()
    headers[translate.TOKEN_ESTIMATE_HEADER] = translate.TOKEN_ESTIMATE_METHOD
    meter.status = 200
    await _emit(
        outbox,
        ResponseComplete(
            request.request_id,
            200,
            headers=headers,
            body=json.dumps({"input_tokens": translate.estimate_input_tokens(body)}),
        ),
    )
    meter.completed = True


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
            await _emit(outbox, ResponseChunk(rid, piece))
            meter.chunks += 1
    tail = decoder.decode(b"", final=True)
    if tail:
        await _emit(outbox, ResponseChunk(rid, tail))
        meter.chunks += 1
    meter.status = response.status_code
    await _emit(
        outbox,
        ResponseComplete(
            rid, response.status_code, headers=response.headers, token_counts=usage.counts()
        ),
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
                await _emit(outbox, ResponseChunk(rid, piece))
                meter.chunks += 1
    meter.status = response.status_code
    if decoder is None:
        body = buffered.decode("utf-8", errors="replace")
        counts = counts_from_body(body) if response.is_success else None
        await _send_whole(
            request, outbox, meter, response.status_code, response.headers, body, counts
        )
        return
    tail = decoder.decode(b"", final=True)
    if tail:
        await _emit(outbox, ResponseChunk(rid, tail))
        meter.chunks += 1
    await _emit(
        outbox, ResponseComplete(rid, response.status_code, headers=response.headers, body="")
    )
    meter.completed = True


async def _send_whole(
    request: Request,
    outbox: Outbox,
    meter: _Meter,
    status: int,
    headers: dict[str, str],
    body: str,
    counts: TokenCounts | None,
) -> None:
    """Send a whole body in the complete frame, or as chunks and then an empty complete."""
    rid = request.request_id
    meter.status = status
    complete = ResponseComplete(rid, status, headers=headers, body=body, token_counts=counts)
    if len(body) <= MAX_PIECE_CHARS or _fits_one_frame(complete):
        await _emit(outbox, complete)
        meter.completed = True
        return
    for piece in split_text(body):
        await _emit(outbox, ResponseChunk(rid, piece))
        meter.chunks += 1
    await _emit(
        outbox, ResponseComplete(rid, status, headers=headers, body="", token_counts=counts)
    )
    meter.completed = True
