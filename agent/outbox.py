"""The session's outbox: one bounded channel, one writer that owns the socket's send side.

Everything the agent sends goes through here, so that no frame is ever cut in
half by a cancelled ``send`` and the socket sees one writer. The writer
coalesces: after one message it takes everything already waiting and merges
the chunks of each request into as few frames as fit (STACK-NOTES: per-frame
I/O, not JSON, is the cost). Under light load nothing waits and nothing is
delayed; under heavy load the cost per event falls.
"""

from collections.abc import Iterator
from typing import TypeAlias

import attrs
import trio

from agent.transport import Transport
from wire import MAX_SEND_FRAME_BYTES, AgentToRelay, ResponseChunk, ResponseComplete, encode

__all__ = [
    "FRAME_HEADROOM",
    "MAX_PIECE_CHARS",
    "Flush",
    "Outbox",
    "Outgoing",
    "coalesce",
    "run_writer",
    "split_text",
]

FRAME_HEADROOM = 64 * 1024
"""Bytes kept free in a frame for the envelope (type, request id, headers)."""

# Compact JSON without ASCII escaping turns one character into at most six
# bytes (a control character becomes \u00XX), so this many characters always
# fit in one frame, whatever they are.
MAX_PIECE_CHARS = (MAX_SEND_FRAME_BYTES - FRAME_HEADROOM) // 6
"""Largest chunk text (in characters) that is sure to fit in one frame."""


def split_text(text: str, limit: int = MAX_PIECE_CHARS) -> Iterator[str]:
    """Cut `text` into pieces of at most `limit` characters (one piece if it fits).

    Args:
        text: Text to send.
        limit: Largest piece.

    Yields:
        The pieces, in order.
    """
    if len(text) <= limit:
        yield text
        return
    for start in range(0, len(text), limit):
        yield text[start : start + limit]


@attrs.frozen(eq=False)
class Flush:
    """A marker: `done` is set once every message queued before it has been sent."""

    done: trio.Event = attrs.field(factory=trio.Event)


Outgoing: TypeAlias = AgentToRelay | Flush
"""What the outbox carries."""

Outbox: TypeAlias = trio.MemorySendChannel[Outgoing]
"""The producers' side of the outbox (jobs, the reader, discovery)."""


def coalesce(batch: list[Outgoing]) -> list[Outgoing]:
    """Merge the chunks of each request in `batch` into as few messages as fit.

    Chunks of one request are joined in order into the position of that
    request's first chunk, as long as the joined text stays under
    `MAX_PIECE_CHARS` (so the frame stays under the 16 MiB send limit). A
    request's `ResponseComplete` closes its run, so it always follows all of
    its chunks; a `Flush` closes every run. Messages of different requests
    may change their relative order, which the protocol does not constrain.

    Args:
        batch: Messages in the order they were queued.

    Returns:
        The messages to send, in order.
    """
    if len(batch) == 1:
        return batch
    out: list[Outgoing] = []
    parts: list[list[str] | None] = []  # per output slot: joined chunk texts, if a run
    open_runs: dict[str, tuple[int, int]] = {}  # request id -> (slot, chars so far)
    for msg in batch:
        if type(msg) is ResponseChunk:
            run = open_runs.get(msg.request_id)
            if run is not None and run[1] + len(msg.chunk) <= MAX_PIECE_CHARS:
                slot, size = run
                texts = parts[slot]
                assert texts is not None
                texts.append(msg.chunk)
                open_runs[msg.request_id] = (slot, size + len(msg.chunk))
                continue
            open_runs[msg.request_id] = (len(out), len(msg.chunk))
            out.append(msg)
            parts.append([msg.chunk])
            continue
        if type(msg) is ResponseComplete:
            open_runs.pop(msg.request_id, None)
        elif isinstance(msg, Flush):
            open_runs.clear()
        out.append(msg)
        parts.append(None)
    for slot, texts in enumerate(parts):
        if texts is not None and len(texts) > 1:
            first = out[slot]
            assert isinstance(first, ResponseChunk)
            out[slot] = ResponseChunk(first.request_id, "".join(texts))
    return out


async def run_writer(outbox: trio.MemoryReceiveChannel[Outgoing], transport: Transport) -> None:
    """Send everything the outbox receives, coalesced, until cancelled or the socket fails.

    Args:
        outbox: The receive side of the session's outbox.
        transport: The connection; only this task calls its `send`.

    Raises:
        SessionError: The connection failed while sending.
    """
    while True:
        batch = [await outbox.receive()]
        while True:
            try:
                batch.append(outbox.receive_nowait())
            except trio.WouldBlock:
                break
        for msg in coalesce(batch):
            if isinstance(msg, Flush):
                msg.done.set()
            else:
                await transport.send(encode(msg))
