"""Error bodies and SSE error events the agent produces, in the endpoint's dialect.

OpenAI paths get ``{"error": {"message", "type", "code"}}``; Anthropic
``/v1/messages*`` gets ``{"type": "error", "error": {"type", "message"}}``;
the Responses API's stream error event is ``{"type": "error", "code", "message"}``.
"""

import json

__all__ = ["error_body", "is_anthropic_path", "json_headers", "sse_error_event"]

# Anthropic's error types for the statuses the agent produces itself.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    429: "rate_limit_error",
    499: "api_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
}


def is_anthropic_path(path: str) -> bool:
    """Whether `path` is an Anthropic Messages endpoint (``/v1/messages``, ``/v1/messages/...``)."""
    bare = path.split("?", 1)[0]
    return bare == "/v1/messages" or bare.startswith("/v1/messages/")


def json_headers() -> dict[str, str]:
    """Headers of an error body the agent writes itself."""
    return {"content-type": "application/json"}


def error_body(path: str, status: int, message: str, code: str) -> str:
    """A JSON error body for `path`'s dialect.

    Args:
        path: The endpoint path of the request.
        status: The HTTP status the body goes with.
        message: Plain words: what happened and what to do.
        code: A short machine-readable code, e.g. ``backend_unreachable``.

    Returns:
        The body text.
    """
    if is_anthropic_path(path):
        kind = _ANTHROPIC_TYPES.get(status, "api_error")
        return json.dumps({"type": "error", "error": {"type": kind, "message": message}})
    return json.dumps({"error": {"message": message, "type": code, "code": code}})


def sse_error_event(path: str, message: str, code: str) -> str:
    """An SSE event that ends a stream the agent cannot finish, in `path`'s dialect.

    Args:
        path: The endpoint path of the request.
        message: Plain words: what happened.
        code: A short machine-readable code.

    Returns:
        The event text, ending with a blank line.
    """
    if is_anthropic_path(path):
        data = json.dumps({"type": "error", "error": {"type": "api_error", "message": message}})
        return f"event: error\ndata: {data}\n\n"
    if path.split("?", 1)[0].startswith("/v1/responses"):
        data = json.dumps({"type": "error", "code": code, "message": message})
        return f"event: error\ndata: {data}\n\n"
    data = json.dumps({"error": {"message": message, "type": code, "code": code}})
    return f"data: {data}\n\n"
