"""Token counts read from backend responses, cheaply.

Three shapes of ``usage`` are understood:

- OpenAI chat/completions/embeddings: ``prompt_tokens``, ``completion_tokens``,
  ``total_tokens``;
- Anthropic Messages: ``input_tokens``, ``output_tokens`` (a stream reports
  them in ``message_start.message.usage`` and ``message_delta.usage``);
- OpenAI Responses: ``input_tokens``, ``output_tokens``, ``total_tokens``
  (a stream reports them in ``response.completed``'s ``response.usage``).

Prompt caching: Anthropic's ``input_tokens`` counts only the tokens that
were neither read from nor written to the cache, which it reports apart as
``cache_read_input_tokens`` and ``cache_creation_input_tokens`` (llama.cpp
says ``input_tokens: 1, cache_read_input_tokens: 3031`` on a cached Claude
Code turn). The prompt count here is all three; the two cache counts are
also kept apart. OpenAI's ``prompt_tokens`` already includes cached tokens;
its ``prompt_tokens_details.cached_tokens`` is kept as the cache-read count.

Only text that contains ``"usage"`` is ever parsed, so the hot path costs a
substring search per chunk.
"""

import json
from typing import Any

import attrs

from wire import TokenCounts

__all__ = ["StreamUsage", "counts_from_body"]

_MAX_CARRY = 1 << 20  # an SSE line longer than this is not worth parsing for usage
_U32_MAX = 2**32 - 1


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _U32_MAX:
        return value
    return None


def _usage_object(obj: object) -> dict[str, Any] | None:
    """Find the usage mapping in a response body or SSE event payload."""
    if not isinstance(obj, dict):
        return None
    for holder in (obj, obj.get("message"), obj.get("response")):
        if isinstance(holder, dict):
            usage = holder.get("usage")
            if isinstance(usage, dict):
                return usage
    return None


@attrs.define
class _Tally:
    prompt: int | None = None
    completion: int | None = None
    total: int | None = None
    cache_read: int | None = None
    cache_creation: int | None = None
    # Whether `prompt` is Anthropic's `input_tokens`, which leaves the cache out.
    prompt_excludes_cache: bool = False

    def merge(self, usage: dict[str, Any]) -> None:
        # Later reports win field by field: Anthropic's message_delta carries
        # only output_tokens, so input_tokens from message_start must survive.
        prompt = _count(usage.get("prompt_tokens"))
        excludes_cache = False
        if prompt is None:
            prompt = _count(usage.get("input_tokens"))
            excludes_cache = prompt is not None
        completion = _count(usage.get("completion_tokens"))
        if completion is None:
            completion = _count(usage.get("output_tokens"))
        total = _count(usage.get("total_tokens"))
        read = _count(usage.get("cache_read_input_tokens"))
        created = _count(usage.get("cache_creation_input_tokens"))
        details = usage.get("prompt_tokens_details")
        if read is None and isinstance(details, dict):
            read = _count(details.get("cached_tokens"))
        if prompt is not None:
            self.prompt = prompt
            self.prompt_excludes_cache = excludes_cache
        if completion is not None:
            self.completion = completion
        if total is not None:
            self.total = total
        if read is not None:
            self.cache_read = read
        if created is not None:
            self.cache_creation = created

    def counts(self) -> TokenCounts | None:
        if self.prompt is None and self.completion is None and self.total is None:
            return None
        prompt = self.prompt
        if prompt is not None and self.prompt_excludes_cache:
            prompt = min(prompt + (self.cache_read or 0) + (self.cache_creation or 0), _U32_MAX)
        total = self.total
        if total is None and prompt is not None and self.completion is not None:
            total = min(prompt + self.completion, _U32_MAX)
        return TokenCounts(
            prompt_tokens=prompt,
            completion_tokens=self.completion,
            total_tokens=total,
            cache_read_tokens=self.cache_read,
            cache_creation_tokens=self.cache_creation,
        )


def counts_from_body(body: bytes | bytearray | str) -> TokenCounts | None:
    """Token counts from a whole (non-streaming) JSON response body.

    Args:
        body: The body as received.

    Returns:
        The counts, or None when the body is not JSON or reports no usage.
    """
    if isinstance(body, str):
        if '"usage"' not in body:
            return None
    elif b'"usage"' not in body:
        return None
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    usage = _usage_object(obj)
    if usage is None:
        return None
    tally = _Tally()
    tally.merge(usage)
    return tally.counts()


@attrs.define(eq=False)
class StreamUsage:
    """Accumulates token counts from an SSE stream fed in arbitrary pieces.

    Keeps at most the current unfinished line between pieces, so an event
    split across two backend reads is still seen whole.
    """

    _tally: _Tally = attrs.field(factory=_Tally, init=False)
    _carry: str = attrs.field(default="", init=False)

    def feed(self, text: str) -> None:
        """Scan one piece of the stream.

        Args:
            text: The piece, as decoded.
        """
        buf = self._carry + text if self._carry else text
        cut = buf.rfind("\n")
        if cut < 0:
            self._carry = buf if len(buf) <= _MAX_CARRY else ""
            return
        complete = buf[:cut]
        rest = buf[cut + 1 :]
        self._carry = rest if len(rest) <= _MAX_CARRY else ""
        if '"usage"' not in complete:
            return
        for line in complete.split("\n"):
            if not line.startswith("data:") or '"usage"' not in line:
                continue
            try:
                obj = json.loads(line[5:])
            except ValueError:
                continue
            usage = _usage_object(obj)
            if usage is not None:
                self._tally.merge(usage)

    def counts(self) -> TokenCounts | None:
        """The counts seen so far, or None if the stream reported none."""
        return self._tally.counts()
