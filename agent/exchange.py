"""What a job calls to answer one request: the `Exchange` interface, `Reply`, and pass-through.

A job (agent/jobs.py) checks the request, then hands it to an `Exchange`
together with a `Reply` and waits. The exchange runs it against the backend
and answers through the `Reply`; the job never learns which dialect the
backend speaks. Implementations:

- `PassThrough` (here): the request goes to the backend as it is, and the
  answer comes back as it is, streamed read by read or whole;
- `agent.anthropic_over_openai.AnthropicOverOpenAI`: Anthropic requests
  translated for a backend that speaks only OpenAI chat;
- `agent.dialect_exchange.DialectExchange`: the one a session gives its jobs,
  choosing between the two per request from ``--backend-dialect``.

`Reply` owns the job's side of the answer: every frame goes into the
session's bounded outbox (never onto the socket: a cancelled send would
leave half a frame), and what was sent is counted for the job's log line.
"""

import codecs
from collections.abc import Callable
from typing import Protocol

import attrs
import trio

from agent.backend import Backend, BackendResponse
from agent.dialects import error_body, json_headers, sse_error_event
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

__all__ = ["NO_ROUTE", "Exchange", "PassThrough", "Reply", "backend_headers", "route_of"]

# The client's credentials are the relay's business; the backend's
# credential, if any, is ours (`--backend-api-key`).
_CLIENT_CREDENTIALS = frozenset({"authorization", "x-api-key"})

NO_ROUTE = frozenset({404, 405, 501})
"""What a server without a route answers (FastAPI/Go muxes: 404 or 405; some proxies: 501)."""


def route_of(request: Request) -> str:
    """The request's path without its query string."""
    return request.endpoint_path.split("?", 1)[0]


def backend_headers(request: Request) -> dict[str, str]:
    """The client's headers as the backend gets them: no client credential, a content type."""
    headers = filter_headers((request.headers or {}).items(), drop=_CLIENT_CREDENTIALS)
    headers.setdefault("content-type", "application/json")
    return headers


@attrs.define(eq=False)
class Reply:
    """Owns one job's answer to the relay: the frames it queues and what they amounted to.

    Every method queues frames for the session's writer; they wait only when
    the outbox is full. Exactly one `ResponseComplete` ends an answer
    (`completed` says whether it has been queued).

    Attributes:
        request: The request being answered.
        outbox: The session's outbox.
        status: The status sent (or about to be), for the log.
        backend_status: The backend's status, once it answered.
        bytes_in: Body bytes read from the backend.
        chunks: `ResponseChunk` frames queued.
        completed: The `ResponseComplete` has been queued.
        error: What went wrong, for the log.
        notes: Log fields an exchange adds (e.g. ``translated=openai-chat``).
        cache_tokens: The relay takes cache token counts (it echoed
            `CAPABILITY_CACHE_TOKENS`); otherwise they are left out of the frame.
    """

    request: Request
    outbox: Outbox
    status: int | None = None
    backend_status: int | None = None
    bytes_in: int = 0
    chunks: int = 0
    completed: bool = False
    error: str | None = None
    notes: dict[str, str] = attrs.field(factory=dict)
    cache_tokens: bool = False

    async def emit(self, message: AgentToRelay) -> None:
        """Queue `message`; wait only when the outbox is full.

        ``MemorySendChannel.send`` yields to trio's run loop even when there
        is room (one more loop iteration per message on the hot path); this
        does not. A full outbox still pushes back.
        """
        try:
            self.outbox.send_nowait(message)
        except trio.WouldBlock:
            await self.outbox.send(message)

    async def chunk(self, text: str) -> None:
        """Queue `text` as chunks, cut so each fits in a frame; nothing for empty text."""
        if not text:
            return
        rid = self.request.request_id
        for piece in split_text(text):
            await self.emit(ResponseChunk(rid, piece))
            self.chunks += 1

    async def complete(
        self,
        status: int,
        headers: dict[str, str] | None = None,
        *,
        body: str | None = None,
        counts: TokenCounts | None = None,
    ) -> None:
        """End the answer with one `ResponseComplete` (after any chunks)."""
        await self._end(
            ResponseComplete(
                self.request.request_id, status, headers=headers, body=body, token_counts=counts
            )
        )

    async def whole(
        self,
        status: int,
        headers: dict[str, str],
        body: str,
        counts: TokenCounts | None = None,
    ) -> None:
        """End the answer with a whole body: in the complete frame when it fits,
        otherwise as chunks and then an empty complete."""
        rid = self.request.request_id
        complete = ResponseComplete(rid, status, headers=headers, body=body, token_counts=counts)
        if len(body) <= MAX_PIECE_CHARS or len(encode(complete).encode()) <= MAX_SEND_FRAME_BYTES:
            await self._end(complete)
            return
        await self.chunk(body)
        await self.complete(status, headers, body="", counts=counts)

    async def _end(self, complete: ResponseComplete) -> None:
        counts = complete.token_counts
        if (
            not self.cache_tokens
            and counts is not None
            and (counts.cache_read_tokens is not None or counts.cache_creation_tokens is not None)
        ):
            # A relay that did not ask for them may not know the fields.
            complete = attrs.evolve(
                complete,
                token_counts=attrs.evolve(
                    counts, cache_read_tokens=None, cache_creation_tokens=None
                ),
            )
        self.status = complete.status_code
        await self.emit(complete)
        self.completed = True

    async def fail(self, status: int, code: str, message: str) -> None:
        """End the answer with an error the client can read, in the endpoint's dialect.

        The message is also the job's log line's ``error`` (unless an error is
        already recorded): a refused request logs why, not just its status.
        """
        if self.error is None:
            self.error = message
        path = self.request.endpoint_path
        if not self.chunks:
            await self.complete(
                status, json_headers(), body=error_body(path, status, message, code)
            )
            return
        if self.request.is_streaming:
            # The client already has a 200 and part of a stream: end it with
            # an error event rather than a silent truncation.
            await self.chunk(sse_error_event(path, message, code))
        await self.complete(status)


class Exchange(Protocol):
    """One way of running a request against the backend and answering it."""

    async def answer(self, request: Request, headers: dict[str, str], reply: Reply) -> None:
        """Run `request` and answer it through `reply`, ending with one `ResponseComplete`.

        Args:
            request: The request, its path already checked.
            headers: The headers for the backend (`backend_headers`).
            reply: Where the answer goes.

        Raises:
            BackendError: The backend failed; the job answers 502.
        """
        ...


@attrs.frozen
class PassThrough:
    """Sends requests to the backend as they are and forwards its answers as they are.

    Attributes:
        backend: The backend client.
    """

    backend: Backend

    async def answer(self, request: Request, headers: dict[str, str], reply: Reply) -> None:
        """Forward the request and the backend's answer, whatever its status."""
        await self.answer_unless_missing(request, headers, reply, forward_missing=True)

    async def answer_unless_missing(
        self,
        request: Request,
        headers: dict[str, str],
        reply: Reply,
        *,
        forward_missing: bool = False,
        on_status: Callable[[int], None] | None = None,
    ) -> bool:
        """Forward the request, and the answer unless the backend lacks the route.

        Args:
            request: The request.
            headers: The headers for the backend.
            reply: Where the answer goes.
            forward_missing: Forward a 404/405/501 too (then this always answers).
            on_status: Called with the backend's status as soon as it is known,
                before the body is read.

        Returns:
            False when the backend answered 404, 405 or 501 and nothing was
            sent (the caller's fallback answers); True when the answer was forwarded.
        """
        async with self.backend.post(
            request.endpoint_path, request.body.encode("utf-8"), headers
        ) as response:
            reply.backend_status = response.status_code
            if on_status is not None:
                on_status(response.status_code)
            if response.status_code in NO_ROUTE and not forward_missing:
                return False  # leaving the block closes the answer unread
            if request.is_streaming and response.is_success:
                await _stream(response, reply)
            else:
                await _whole(response, reply)
        return True


async def _stream(response: BackendResponse, reply: Reply) -> None:
    """Forward what each backend read returns as one chunk; then complete."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    usage = StreamUsage()
    async for data in response.iter_bytes():
        reply.bytes_in += len(data)
        # Holds back at most the bytes of one incomplete UTF-8 character.
        text = decoder.decode(data)
        if text:
            usage.feed(text)
            await reply.chunk(text)
    await reply.chunk(decoder.decode(b"", final=True))
    await reply.complete(response.status_code, response.headers, counts=usage.counts())


async def _whole(response: BackendResponse, reply: Reply) -> None:
    """Forward a whole body in one frame, or as chunks when it cannot fit in one."""
    buffered = bytearray()
    decoder: codecs.IncrementalDecoder | None = None
    async for data in response.iter_bytes():
        reply.bytes_in += len(data)
        if decoder is None:
            buffered += data
            if len(buffered) <= MAX_SEND_FRAME_BYTES - FRAME_HEADROOM:
                continue
            # Too big for one frame whatever its content: stream it as chunks
            # and keep memory bounded instead of buffering the rest.
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            data = bytes(buffered)
            buffered.clear()
        await reply.chunk(decoder.decode(data))
    if decoder is None:
        body = buffered.decode("utf-8", errors="replace")
        counts = counts_from_body(body) if response.is_success else None
        await reply.whole(response.status_code, response.headers, body, counts)
        return
    await reply.chunk(decoder.decode(b"", final=True))
    await reply.complete(response.status_code, response.headers, body="")
