"""Error bodies and SSE error events in each client dialect.

The relay speaks in the dialect of the endpoint the client called: OpenAI's
`{"error": {...}}` on OpenAI paths, Anthropic's `{"type": "error", ...}` on
`/v1/messages`, and for a stream it cannot finish, the error event each SDK's
stream parser understands (spec/behavior.md).
"""

from __future__ import annotations

import enum
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relay.errors import RelayError

__all__ = ["Dialect", "error_body", "stream_error_event"]


class Dialect(enum.Enum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    RESPONSES = "responses"

    @classmethod
    def for_path(cls, path: str) -> Dialect:
        if path.startswith("/v1/messages"):
            return cls.ANTHROPIC
        if path.startswith("/v1/responses"):
            return cls.RESPONSES
        return cls.OPENAI


def error_body(dialect: Dialect, error: RelayError) -> bytes:
    """The JSON body of a non-streaming error response."""
    if dialect is Dialect.ANTHROPIC:
        doc: dict[str, object] = {
            "type": "error",
            "error": {"type": error.anthropic_type, "message": error.message},
        }
    else:
        doc = {"error": {"message": error.message, "type": error.openai_type, "code": error.code}}
    return json.dumps(doc).encode()


def stream_error_event(dialect: Dialect, code: str, message: str) -> bytes:
    """The SSE event that ends a stream the relay cannot finish.

    No `data: [DONE]` follows it: the chunked body simply ends.
    """
    if dialect is Dialect.ANTHROPIC:
        data = {"type": "error", "error": {"type": "api_error", "message": message}}
        return b"event: error\ndata: " + json.dumps(data).encode() + b"\n\n"
    if dialect is Dialect.RESPONSES:
        data = {"type": "error", "code": code, "message": message}
        return b"event: error\ndata: " + json.dumps(data).encode() + b"\n\n"
    data = {"error": {"message": message, "type": code, "code": code}}
    return b"data: " + json.dumps(data).encode() + b"\n\n"
