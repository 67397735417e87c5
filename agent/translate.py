"""Pure Anthropic Messages <-> OpenAI chat translation, for backends without `/v1/messages`.

No I/O here: the job (agent/jobs.py) calls the backend and feeds this module
dicts, bytes and strings. What goes where::

    Anthropic request  --request_to_chat()-->      OpenAI chat request
    OpenAI response    --chat_to_message()-->      Anthropic message
    OpenAI SSE bytes   --ChatStreamTranslator-->   Anthropic SSE text (incremental)
    OpenAI error body  --error_to_anthropic()-->   {"type": "error", "error": {...}}
    Anthropic request  --estimate_input_tokens()-> {"input_tokens": N} (chars / 4)

Dropped on the way because OpenAI chat has no place for them: `thinking`
blocks and the `thinking` option, `cache_control`, citations, `metadata`,
server tools (web search, code execution, ...), `container`, `mcp_servers`,
`context_management`, `service_tier`. Top-level fields Anthropic does not
define are passed through unchanged, so backend-specific options still reach
the backend.
"""

import codecs
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

__all__ = [
    "TOKEN_ESTIMATE_HEADER",
    "TOKEN_ESTIMATE_METHOD",
    "ChatStreamTranslator",
    "TranslationError",
    "anthropic_error_body",
    "anthropic_error_type",
    "chat_to_message",
    "error_to_anthropic",
    "estimate_input_tokens",
    "message_to_sse",
    "request_to_chat",
    "sse_event",
    "stop_reason_for",
]

TOKEN_ESTIMATE_HEADER = "x-modelrelay-token-estimate"
"""Response header of a `/v1/messages/count_tokens` answer the agent estimated itself."""

TOKEN_ESTIMATE_METHOD = "chars/4"
"""The header's value: how the estimate was made."""

_CHARS_PER_TOKEN = 4
# An image costs about this many tokens at Anthropic's largest unscaled size
# (1,092 x 1,092 px); without decoding it we cannot know better.
_IMAGE_TOKENS = 1600

# Anthropic request fields that have no OpenAI chat counterpart: dropped.
_DROPPED_FIELDS = frozenset(
    {
        "metadata",
        "thinking",
        "service_tier",
        "container",
        "mcp_servers",
        "context_management",
        "betas",
        "output_config",
        "output_format",
        "inference_geo",
        "speed",
    }
)
# Anthropic request fields translated one by one below.
_TRANSLATED_FIELDS = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
    }
)

_FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_RAW_ARGUMENTS_KEY = "_raw_arguments"
_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")


class TranslationError(ValueError):
    """The request cannot be translated: its shape is not a valid Anthropic Messages request.

    The job answers it with 400 ``invalid_request_error`` and this message.
    """


# --- request: Anthropic -> OpenAI --------------------------------------------------------


def request_to_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI chat completions request equivalent to an Anthropic Messages request.

    Args:
        body: The Anthropic request, parsed.

    Returns:
        The OpenAI chat request (JSON-serialisable; ids and texts kept as they were).

    Raises:
        TranslationError: `body` is not a Messages request (no message list,
            a message without role or content, a block that is not an object).
    """
    if not isinstance(body, Mapping):
        raise TranslationError("the request body must be a JSON object")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list):
        raise TranslationError("`messages` must be a list")
    chat: dict[str, Any] = {}
    if "model" in body:
        chat["model"] = body["model"]
    messages: list[dict[str, Any]] = []
    system = _system_text(body.get("system"))
    if system is not None:
        messages.append({"role": "system", "content": system})
    for position, message in enumerate(raw_messages):
        messages.extend(_message(message, position))
    chat["messages"] = messages
    if body.get("max_tokens") is not None:
        chat["max_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p", "top_k"):
        # llama.cpp, vLLM, LM Studio and Ollama accept `top_k` on this route too.
        if body.get(name) is not None:
            chat[name] = body[name]
    stops = body.get("stop_sequences")
    if isinstance(stops, list) and stops:
        chat["stop"] = [s for s in stops if isinstance(s, str)]
    tools = _tools(body.get("tools"))
    if tools:
        chat["tools"] = tools
        choice, parallel = _tool_choice(body.get("tool_choice"))
        if choice is not None:
            chat["tool_choice"] = choice
        if parallel is not None:
            chat["parallel_tool_calls"] = parallel
    if body.get("stream") is True:
        chat["stream"] = True
        # Without this an OpenAI stream reports no usage at all.
        chat["stream_options"] = {"include_usage": True}
    for name, value in body.items():
        if name not in _TRANSLATED_FIELDS and name not in _DROPPED_FIELDS:
            chat[name] = value
    return chat


def _block_text(block: Mapping[str, Any]) -> str:
    text = block.get("text")
    return text if isinstance(text, str) else ""


def _system_text(system: object) -> str | None:
    if system is None:
        return None
    if isinstance(system, str):
        return system if system else None
    if isinstance(system, list):
        texts = [
            _block_text(b) for b in system if isinstance(b, Mapping) and b.get("type") == "text"
        ]
        joined = "\n\n".join(t for t in texts if t)
        return joined or None
    raise TranslationError("`system` must be a string or a list of text blocks")


def _inline_system_text(content: object, where: str) -> str:
    """A mid-conversation system message's text: a string, or its text blocks joined."""
    if isinstance(content, str):
        return content
    blocks = _blocks(content, where)
    return "\n\n".join(t for t in (_block_text(b) for b in blocks if b["type"] == "text") if t)


def _blocks(content: object, where: str) -> list[Mapping[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise TranslationError(f"{where}: `content` must be a string or a list of blocks")
    for block in content:
        if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
            raise TranslationError(f"{where}: each content block must be an object with a `type`")
    return content


def _message(message: object, position: int) -> list[dict[str, Any]]:
    where = f"messages[{position}]"
    if not isinstance(message, Mapping):
        raise TranslationError(f"{where} must be an object")
    role = message.get("role")
    if role == "system":
        # Claude Code sends a system message mid-conversation (behind an
        # `anthropic-beta` flag): OpenAI chat has the same thing, in place.
        return [{"role": "system", "content": _inline_system_text(message.get("content"), where)}]
    if role not in ("user", "assistant"):
        raise TranslationError(f"{where}: `role` must be 'user', 'assistant' or 'system'")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    blocks = _blocks(content, where)
    if role == "assistant":
        return [_assistant(blocks)]
    return _user(blocks)


def _assistant(blocks: list[Mapping[str, Any]]) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in blocks:
        kind = block["type"]
        if kind == "text":
            texts.append(_block_text(block))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": _tool_id(block.get("id")),
                    "type": "function",
                    "function": {
                        "name": str(block.get("name", "")),
                        "arguments": _json(block.get("input", {})),
                    },
                }
            )
        # thinking, redacted_thinking, server_tool_use and the results of
        # server tools have no OpenAI counterpart: dropped.
    # Adjacent text blocks are pieces of one generated text (split around
    # citations or tool calls): joined as they were produced.
    out: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if calls:
        out["tool_calls"] = calls
        if not out["content"]:
            out["content"] = None
    return out


def _user(blocks: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    late_images: list[dict[str, Any]] = []
    for block in blocks:
        kind = block["type"]
        if kind == "tool_result":
            text, images = _tool_result(block)
            tool_messages.append(
                {
                    "role": "tool",
                    "tool_call_id": _tool_id(block.get("tool_use_id")),
                    "content": text,
                }
            )
            late_images.extend(images)
        else:
            part = _user_part(block)
            if part is not None:
                parts.append(part)
    # OpenAI wants every tool message right after the assistant's tool calls;
    # Anthropic puts tool results first in the user turn anyway. Images a tool
    # returned can only travel in a user message, so they follow.
    parts.extend(late_images)
    out: list[dict[str, Any]] = list(tool_messages)
    if parts or not tool_messages:
        out.append({"role": "user", "content": _user_content(parts)})
    return out


def _user_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if all(p["type"] == "text" for p in parts):
        # Plain text is what every server's chat template understands.
        return "\n\n".join(p["text"] for p in parts)
    return parts


def _user_part(block: Mapping[str, Any]) -> dict[str, Any] | None:
    kind = block["type"]
    if kind == "text":
        return {"type": "text", "text": _block_text(block)}
    if kind == "image":
        return _image(block.get("source"))
    if kind == "document":
        source = block.get("source")
        if isinstance(source, Mapping) and source.get("type") == "text":
            data = source.get("data")
            return {"type": "text", "text": data if isinstance(data, str) else ""}
        title = block.get("title")
        label = f" {title!r}" if isinstance(title, str) and title else ""
        return {"type": "text", "text": f"[document{label} omitted: not supported by this backend]"}
    return None  # thinking and other assistant-only or server-side blocks


def _image(source: object) -> dict[str, Any]:
    if isinstance(source, Mapping):
        if source.get("type") == "base64":
            media = source.get("media_type") or "image/png"
            data = source.get("data") or ""
            return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
        if source.get("type") == "url" and isinstance(source.get("url"), str):
            return {"type": "image_url", "image_url": {"url": source["url"]}}
    return {
        "type": "text",
        "text": "[image omitted: this source type cannot be sent to the backend]",
    }


def _tool_result(block: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    content = block.get("content")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for item in content:
            if not isinstance(item, Mapping):
                continue
            if item.get("type") == "text":
                texts.append(_block_text(item))
            elif item.get("type") == "image":
                images.append(_image(item.get("source")))
                texts.append("[image: see the next user message]")
    text = "\n\n".join(texts)
    if block.get("is_error") is True:
        text = f"Error: {text}" if text else "Error"
    return text, images


def _tool_id(value: object) -> str:
    return value if isinstance(value, str) and value else f"toolu_{uuid.uuid4().hex[:24]}"


def _json(value: object) -> str:
    return json.dumps(value if value is not None else {}, ensure_ascii=False)


def _tools(tools: object) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        return []
    out: list[dict[str, Any]] = []
    for tool in tools:
        if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
            continue
        kind = tool.get("type")
        if kind not in (None, "custom"):
            continue  # a server tool (web search, bash, editor, ...): Anthropic runs those
        schema = tool.get("input_schema")
        function: dict[str, Any] = {
            "name": tool["name"],
            "parameters": schema if isinstance(schema, Mapping) else {"type": "object"},
        }
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: object) -> tuple[object, bool | None]:
    if not isinstance(choice, Mapping):
        return None, None
    kind = choice.get("type")
    parallel = False if choice.get("disable_parallel_tool_use") is True else None
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", None
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    return None, parallel


# --- response: OpenAI -> Anthropic -------------------------------------------------------


def stop_reason_for(
    finish_reason: object, matched: object = None, stop_sequences: Sequence[str] = ()
) -> tuple[str, str | None]:
    """Anthropic's ``stop_reason`` and ``stop_sequence`` for an OpenAI ``finish_reason``.

    OpenAI's ``"stop"`` covers both the end of the turn and a matched stop
    sequence; only servers that name the match (vLLM's ``stop_reason``
    field) let us tell them apart.

    Args:
        finish_reason: The choice's ``finish_reason``.
        matched: The choice's ``stop_reason`` (vLLM: the stop string that matched), if any.
        stop_sequences: The request's ``stop_sequences``.

    Returns:
        ``(stop_reason, stop_sequence)``.
    """
    if finish_reason == "stop" and isinstance(matched, str) and matched in stop_sequences:
        return "stop_sequence", matched
    reason = (
        _FINISH_TO_STOP.get(finish_reason, "end_turn")
        if isinstance(finish_reason, str)
        else "end_turn"
    )
    return reason, None


def _message_id(backend_id: object) -> str:
    if isinstance(backend_id, str):
        bare = _ID_CHARS.sub("", backend_id.removeprefix("chatcmpl-"))[:64]
        if bare:
            return f"msg_{bare}"
    return f"msg_{uuid.uuid4().hex[:24]}"


def _tool_input(arguments: object) -> dict[str, Any]:
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if not isinstance(arguments, str):
        return {_RAW_ARGUMENTS_KEY: arguments}
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return {_RAW_ARGUMENTS_KEY: arguments}
    # Anthropic's `input` is always an object.
    return parsed if isinstance(parsed, dict) else {_RAW_ARGUMENTS_KEY: arguments}


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers answer with content parts
        return "".join(
            p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)
        )
    return ""


def _usage_numbers(usage: object) -> tuple[int | None, int | None]:
    if not isinstance(usage, Mapping):
        return None, None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) and not isinstance(prompt, bool) else None,
        completion if isinstance(completion, int) and not isinstance(completion, bool) else None,
    )


def chat_to_message(
    chat: Mapping[str, Any], *, model: str, stop_sequences: Sequence[str] = ()
) -> dict[str, Any]:
    """An Anthropic Messages response equivalent to an OpenAI chat completion.

    Args:
        chat: The backend's chat completion, parsed.
        model: The model the client asked for (echoed, as Anthropic does).
        stop_sequences: The request's ``stop_sequences``.

    Returns:
        The Anthropic message. Tool call arguments that are not a JSON object
        are kept as a string under ``"_raw_arguments"``.

    Raises:
        TranslationError: `chat` has no ``choices[0].message``.
    """
    choices = chat.get("choices") if isinstance(chat, Mapping) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise TranslationError("the backend's answer has no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, Mapping):
        raise TranslationError("the backend's answer has no message")
    blocks: list[dict[str, Any]] = []
    text = _content_text(message.get("content"))
    calls = message.get("tool_calls")
    calls = [c for c in calls if isinstance(c, Mapping)] if isinstance(calls, list) else []
    if text or not calls:
        blocks.append({"type": "text", "text": text})
    for call in calls:
        function = call.get("function")
        function = function if isinstance(function, Mapping) else {}
        blocks.append(
            {
                "type": "tool_use",
                "id": _tool_id(call.get("id")),
                "name": str(function.get("name") or ""),
                "input": _tool_input(function.get("arguments")),
            }
        )
    stop_reason, stop_sequence = stop_reason_for(
        choice.get("finish_reason"), choice.get("stop_reason"), stop_sequences
    )
    if calls and stop_reason == "end_turn":
        stop_reason = "tool_use"  # some servers say "stop" after a tool call
    prompt, completion = _usage_numbers(chat.get("usage"))
    return {
        "id": _message_id(chat.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {"input_tokens": prompt or 0, "output_tokens": completion or 0},
    }


# --- errors -------------------------------------------------------------------------------


def anthropic_error_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status."""
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def anthropic_error_body(status: int, message: str) -> str:
    """An Anthropic error body: ``{"type": "error", "error": {"type", "message"}}``."""
    return json.dumps(
        {"type": "error", "error": {"type": anthropic_error_type(status), "message": message}},
        ensure_ascii=False,
    )


def _error_message(payload: object) -> str | None:
    if isinstance(payload, str):
        return payload
    if not isinstance(payload, Mapping):
        return None
    error = payload.get("error")
    if isinstance(error, Mapping):
        message = error.get("message")
        if isinstance(message, str):
            return message
    if isinstance(error, str):
        return error
    for key in ("message", "detail"):  # FastAPI and friends
        value = payload.get(key)
        if isinstance(value, str):
            return value
        if value is not None:
            return json.dumps(value, ensure_ascii=False)
    return None


def error_to_anthropic(status: int, body: bytes | str) -> str:
    """A backend's error answer (OpenAI-style or anything else) as an Anthropic error body.

    Args:
        status: The backend's HTTP status (kept by the caller).
        body: The backend's error body.

    Returns:
        ``{"type": "error", "error": {"type": <for status>, "message": <backend's words>}}``.
    """
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    try:
        message = _error_message(json.loads(text))
    except ValueError:
        message = None
    if message is None:
        message = text.strip()[:2000] or f"the backend answered HTTP {status}"
    return anthropic_error_body(status, message)


# --- count_tokens ------------------------------------------------------------------------


def _chars(value: object) -> tuple[int, int]:
    """(characters of text, images) in an Anthropic content value."""
    if isinstance(value, str):
        return len(value), 0
    if not isinstance(value, list):
        return 0, 0
    chars = images = 0
    for block in value:
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind == "image":
            images += 1
        elif kind == "tool_use":
            chars += len(str(block.get("name", ""))) + len(_json(block.get("input", {})))
        elif kind == "tool_result":
            c, i = _chars(block.get("content"))
            chars, images = chars + c, images + i
        elif kind == "document":
            source = block.get("source")
            if isinstance(source, Mapping) and isinstance(source.get("data"), str):
                chars += len(source["data"]) if source.get("type") == "text" else 0
        else:
            for key in ("text", "thinking"):
                if isinstance(block.get(key), str):
                    chars += len(block[key])
    return chars, images


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """An honest guess at a Messages request's input tokens, for backends that cannot count.

    Four characters of text per token over the system prompt, every message
    (tool inputs and results included) and the tools' JSON; a flat
    1,600 tokens per image.

    Args:
        body: An Anthropic ``count_tokens`` (or Messages) request, parsed.

    Returns:
        At least 1.
    """
    chars, images = _chars(body.get("system"))
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, Mapping):
            c, i = _chars(message.get("content"))
            chars, images = chars + c, images + i
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        chars += len(json.dumps(tool, ensure_ascii=False, separators=(",", ":")))
    return max(1, math.ceil(chars / _CHARS_PER_TOKEN) + images * _IMAGE_TOKENS)


# --- streaming ---------------------------------------------------------------------------


def sse_event(payload: Mapping[str, Any]) -> str:
    """One Anthropic SSE event: ``event: <type>\\ndata: <json>\\n\\n``."""
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"event: {payload['type']}\ndata: {data}\n\n"


def message_to_sse(message: Mapping[str, Any]) -> str:
    """A whole Anthropic message as the stream of events that would have produced it.

    For a backend that answers a streaming request with one JSON body.

    Args:
        message: An Anthropic message (`chat_to_message`'s result).

    Returns:
        Anthropic SSE text, ``message_start`` to ``message_stop``.
    """
    usage = message.get("usage") or {}
    start = dict(message, content=[], stop_reason=None, stop_sequence=None)
    start["usage"] = {"input_tokens": 0, "output_tokens": 0}
    out = [sse_event({"type": "message_start", "message": start})]
    for index, block in enumerate(message.get("content") or ()):
        if block.get("type") == "tool_use":
            opening = dict(block, input={})
            delta = {"type": "input_json_delta", "partial_json": _json(block.get("input", {}))}
        else:
            opening = dict(block, text="")
            delta = {"type": "text_delta", "text": block.get("text", "")}
        out.append(
            sse_event({"type": "content_block_start", "index": index, "content_block": opening})
        )
        out.append(sse_event({"type": "content_block_delta", "index": index, "delta": delta}))
        out.append(sse_event({"type": "content_block_stop", "index": index}))
    stop = {
        "stop_reason": message.get("stop_reason"),
        "stop_sequence": message.get("stop_sequence"),
    }
    out.append(sse_event({"type": "message_delta", "delta": stop, "usage": dict(usage)}))
    out.append(sse_event({"type": "message_stop"}))
    return "".join(out)


@attrs.define
class _ToolCall:
    """One streamed OpenAI tool call, by its index."""

    id: str | None = None
    name: str = ""
    pending: list[str] = attrs.field(factory=list)  # arguments seen before the name
    block: int | None = None  # its Anthropic content block, once started


@attrs.define(eq=False)
class ChatStreamTranslator:
    """Owns one OpenAI chat stream's translation into Anthropic's stream events.

    Feed it the backend's bytes (or text) as they arrive; every call returns
    the Anthropic SSE text that has become complete, at once: an OpenAI event
    is translated as soon as its blank line arrives. The one thing that waits
    is ``message_delta``: OpenAI reports usage in a chunk *after* the one
    with ``finish_reason``, so ``message_delta`` and ``message_stop`` go out
    with that usage chunk, with ``[DONE]``, or at `close`.

    Event order (as Anthropic sends it): ``message_start``; for each block
    ``content_block_start``, its deltas (``text_delta``, or
    ``input_json_delta`` for a tool's arguments), ``content_block_stop``;
    ``message_delta`` (stop reason, usage); ``message_stop``. A backend error
    inside the stream becomes an ``error`` event and ends the translation.

    Attributes:
        model: Echoed in ``message_start`` (the model the client asked for).
        stop_sequences: The request's, to name a matched one when the backend says.
        input_tokens: The backend's ``prompt_tokens``, once reported.
        output_tokens: The backend's ``completion_tokens``, once reported.
        finished: Whether ``message_stop`` (or an ``error`` event) has been produced.
    """

    model: str
    stop_sequences: Sequence[str] = ()
    input_tokens: int | None = attrs.field(default=None, init=False)
    output_tokens: int | None = attrs.field(default=None, init=False)
    finished: bool = attrs.field(default=False, init=False)
    _decoder: codecs.IncrementalDecoder = attrs.field(
        factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"), init=False
    )
    _line: str = attrs.field(default="", init=False)  # an unfinished line
    _data: list[str] = attrs.field(factory=list, init=False)  # data lines of the current event
    _started: bool = attrs.field(default=False, init=False)
    _blocks: int = attrs.field(default=0, init=False)  # content blocks started so far
    _open: int | None = attrs.field(default=None, init=False)  # the open block's index
    _open_is_text: bool = attrs.field(default=False, init=False)
    _tools: dict[int, _ToolCall] = attrs.field(factory=dict, init=False)
    _stop: tuple[str, str | None] | None = attrs.field(default=None, init=False)

    def feed(self, data: bytes | str) -> str:
        """Translate what the backend sent next.

        Args:
            data: The next piece of the backend's SSE body, cut anywhere.

        Returns:
            Anthropic SSE text (complete events only), possibly empty.
        """
        text = self._decoder.decode(data) if isinstance(data, bytes) else data
        if not text:
            return ""
        out: list[str] = []
        buf = self._line + text
        lines = buf.split("\n")
        self._line = lines.pop()
        for line in lines:
            self._line_in(line.removesuffix("\r"), out)
        return "".join(out)

    def close(self) -> str:
        """The backend's stream ended: translate what is left and finish the message.

        Returns:
            The last Anthropic SSE text; empty if the message was already finished.
        """
        out: list[str] = []
        tail = self._line + self._decoder.decode(b"", final=True)
        self._line = ""
        if tail:
            self._line_in(tail.removesuffix("\r"), out)
        self._dispatch(out)
        self._finish(out)
        return "".join(out)

    # --- SSE parsing ---

    def _line_in(self, line: str, out: list[str]) -> None:
        if not line:
            self._dispatch(out)
        elif line.startswith("data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(" ") else value)
        elif line.startswith("error:") and not self.finished:
            # Older llama.cpp servers end a failed stream with an `error:` field.
            try:
                payload: object = json.loads(line[6:])
            except ValueError:
                payload = line[6:].strip()
            message = _error_message(payload) or "the backend reported an error mid-stream"
            out.append(
                sse_event({"type": "error", "error": {"type": "api_error", "message": message}})
            )
            self.finished = True
        # `event:`, `id:`, `retry:` and comments carry nothing we use.

    def _dispatch(self, out: list[str]) -> None:
        if not self._data:
            return
        payload = "\n".join(self._data)
        self._data.clear()
        if self.finished:
            return
        if payload.strip() == "[DONE]":
            self._finish(out)
            return
        try:
            chunk = json.loads(payload)
        except ValueError:
            return  # not an event we understand (a keep-alive, a comment in data)
        if isinstance(chunk, Mapping):
            self._chunk(chunk, out)

    # --- translation ---

    def _chunk(self, chunk: Mapping[str, Any], out: list[str]) -> None:
        if "error" in chunk and not chunk.get("choices"):
            message = _error_message(chunk) or "the backend reported an error mid-stream"
            out.append(
                sse_event({"type": "error", "error": {"type": "api_error", "message": message}})
            )
            self.finished = True
            return
        self._start(chunk, out)
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
            self._choice(choices[0], out)
        prompt, completion = _usage_numbers(chunk.get("usage"))
        if prompt is not None:
            self.input_tokens = prompt
        if completion is not None:
            self.output_tokens = completion
        if (prompt is not None or completion is not None) and self._stop is not None:
            self._finish(out)

    def _start(self, chunk: Mapping[str, Any], out: list[str]) -> None:
        if self._started:
            return
        self._started = True
        message: dict[str, Any] = {
            "id": _message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # OpenAI reports the prompt's size only at the end (message_delta).
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        out.append(sse_event({"type": "message_start", "message": message}))

    def _choice(self, choice: Mapping[str, Any], out: list[str]) -> None:
        if self._stop is not None:
            return  # the choice already finished; only usage may follow
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            text = _content_text(delta.get("content"))
            if text:
                self._text(text, out)
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    if isinstance(call, Mapping):
                        self._tool_delta(call, out)
        finish = choice.get("finish_reason")
        if finish is not None:
            reason = stop_reason_for(finish, choice.get("stop_reason"), self.stop_sequences)
            if self._tools and reason[0] == "end_turn":
                reason = ("tool_use", None)
            self._stop = reason
            self._close_blocks(out)

    def _text(self, text: str, out: list[str]) -> None:
        if self._open is None or not self._open_is_text:
            self._close_open(out)
            self._begin({"type": "text", "text": ""}, is_text=True, out=out)
        out.append(
            sse_event(
                {
                    "type": "content_block_delta",
                    "index": self._open,
                    "delta": {"type": "text_delta", "text": text},
                }
            )
        )

    def _tool_delta(self, call: Mapping[str, Any], out: list[str]) -> None:
        index = call.get("index")
        if not isinstance(index, int):
            index = len(self._tools) - 1 if self._tools and "id" not in call else len(self._tools)
        tool = self._tools.setdefault(index, _ToolCall())
        if isinstance(call.get("id"), str) and tool.id is None:
            tool.id = call["id"]
        function = call.get("function")
        function = function if isinstance(function, Mapping) else {}
        name = function.get("name")
        if isinstance(name, str) and name and tool.block is None:
            tool.name += name
        arguments = function.get("arguments")
        fragment = arguments if isinstance(arguments, str) else ""
        if tool.block is None:
            if not tool.name:
                # Anthropic's block starts with the tool's name: wait for it.
                if fragment:
                    tool.pending.append(fragment)
                return
            self._open_tool(tool, out)
        if fragment:
            self._json_delta(tool, fragment, out)

    def _open_tool(self, tool: _ToolCall, out: list[str]) -> None:
        self._close_open(out)
        tool.id = _tool_id(tool.id)
        block = {"type": "tool_use", "id": tool.id, "name": tool.name, "input": {}}
        tool.block = self._begin(block, is_text=False, out=out)
        pending, tool.pending = "".join(tool.pending), []
        if pending:
            self._json_delta(tool, pending, out)

    def _json_delta(self, tool: _ToolCall, fragment: str, out: list[str]) -> None:
        # A fragment for a tool call whose block was closed (a server that
        # interleaves calls) still goes to that block's index: the SDKs
        # accumulate by index.
        out.append(
            sse_event(
                {
                    "type": "content_block_delta",
                    "index": tool.block,
                    "delta": {"type": "input_json_delta", "partial_json": fragment},
                }
            )
        )

    def _begin(self, block: Mapping[str, Any], *, is_text: bool, out: list[str]) -> int:
        index = self._blocks
        self._blocks += 1
        self._open = index
        self._open_is_text = is_text
        out.append(
            sse_event({"type": "content_block_start", "index": index, "content_block": block})
        )
        return index

    def _close_open(self, out: list[str]) -> None:
        if self._open is not None:
            out.append(sse_event({"type": "content_block_stop", "index": self._open}))
            self._open = None

    def _close_blocks(self, out: list[str]) -> None:
        for tool in self._tools.values():
            if tool.block is None:  # never named: start it now, nameless
                self._open_tool(tool, out)
        if self._blocks == 0:
            # Anthropic's answers always hold a block; an empty text one here.
            self._begin({"type": "text", "text": ""}, is_text=True, out=out)
        self._close_open(out)

    def _finish(self, out: list[str]) -> None:
        if self.finished:
            return
        self._start({}, out)
        if self._stop is None:
            # The stream ended without a finish_reason: end the turn cleanly.
            self._stop = ("tool_use", None) if self._tools else ("end_turn", None)
            self._close_blocks(out)
        reason, sequence = self._stop
        usage: dict[str, int] = {}
        if self.input_tokens is not None:
            usage["input_tokens"] = self.input_tokens
        usage["output_tokens"] = self.output_tokens or 0
        out.append(
            sse_event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": reason, "stop_sequence": sequence},
                    "usage": usage,
                }
            )
        )
        out.append(sse_event({"type": "message_stop"}))
        self.finished = True
