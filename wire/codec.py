"""Encode messages into JSON text frames and decode received frames, strictly.

This module builds the package's only cattrs converter, once, at import
(`_build_converter`); nothing changes it afterwards. Decoding is strict about
what the spec requires and lenient about the rest:

- a frame is one JSON object with a string ``"type"`` known *for that
  direction*; binary frames, invalid JSON (``NaN`` included) and lone
  surrogate escapes are refused;
- required fields must be present with the exact JSON type: strings are
  strings, booleans are booleans, integers are JSON integers within their
  wire width (``1.0``, ``"1"``, ``true`` and negatives are refused);
- unknown fields are ignored and an explicit ``null`` for an optional field
  counts as absent (a newer or sloppier peer keeps working);
- every failure is a `wire.ProtocolError` whose message names the frame
  type and the field. Nothing else escapes `decode_agent_frame` or
  `decode_relay_frame`.

Encoding writes compact JSON with ``"type"`` first, then the fields in
declaration order, leaving out every optional field that is `None` (an
upstream peer refuses ``null`` for some of them).

``response_chunk`` is the per-token hot path in both daemons, and
``request`` and ``response_complete`` are the per-request one, so the
decoders and `encode` handle those three without cattrs when the frame is
well formed; anything else (or anything doubtful) takes the general path,
which finds and names the problem.
"""

import json
import typing
from collections.abc import Callable, Mapping
from typing import TypeAlias, TypeVar

import attrs
import cattrs
from cattrs.errors import ClassValidationError, IterableValidationError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn

from .errors import ProtocolError, VersionMismatch
from .messages import (
    PROTOCOL_VERSION,
    AgentToRelay,
    Cancel,
    CancelReason,
    Error,
    GracefulShutdown,
    Message,
    ModelsRefresh,
    ModelsUpdate,
    OtherReason,
    Ping,
    Pong,
    Register,
    RegisterAck,
    RelayToAgent,
    Request,
    ResponseChunk,
    ResponseComplete,
    TokenCounts,
    UInt,
)

__all__ = [
    "check_protocol_version",
    "decode_agent_frame",
    "decode_relay_frame",
    "encode",
]

_T = TypeVar("_T")

_AGENT_TYPES: Mapping[str, type[AgentToRelay]] = {
    "register": Register,
    "models_update": ModelsUpdate,
    "response_chunk": ResponseChunk,
    "response_complete": ResponseComplete,
    "pong": Pong,
    "error": Error,
}
_RELAY_TYPES: Mapping[str, type[RelayToAgent]] = {
    "register_ack": RegisterAck,
    "request": Request,
    "cancel": Cancel,
    "ping": Ping,
    "graceful_shutdown": GracefulShutdown,
    "models_refresh": ModelsRefresh,
}
_TAG_OF: Mapping[type, str] = {
    cls: tag for table in (_AGENT_TYPES, _RELAY_TYPES) for tag, cls in table.items()
}
_U16_MAX = UInt(16).max
_U32_MAX = UInt(32).max
_CANCEL_REASONS: Mapping[str, CancelReason] = {reason.value: reason for reason in CancelReason}


def check_protocol_version(version: str | None) -> None:
    """Accept a peer's announced protocol version, or refuse it.

    Args:
        version: What the peer sent (`Register.protocol_version` or
            `RegisterAck.protocol_version`); `None` when it sent none.

    Raises:
        VersionMismatch: `version` is neither `None` (a legacy peer) nor
            `PROTOCOL_VERSION`.
    """
    if version is not None and version != PROTOCOL_VERSION:
        raise VersionMismatch(theirs=version, ours=PROTOCOL_VERSION)


# --- structuring hooks ------------------------------------------------------


class _Invalid(Exception):
    """A value that does not fit its field; `_describe` turns it into prose.

    Attributes:
        expected: What the field needs, as a noun phrase ("a string").
        value: What arrived.
        where: Position inside the field, e.g. ``[2]`` for a list item.
    """

    def __init__(self, expected: str, value: object, where: str = "") -> None:
        super().__init__(expected, where)
        self.expected = expected
        self.value = value
        self.where = where


def _structure_str(value: object, _type: object) -> str:
    if type(value) is str:
        return value
    raise _Invalid("a string", value)


def _structure_bool(value: object, _type: object) -> bool:
    if type(value) is bool:
        return value
    raise _Invalid("a boolean", value)


def _structure_int(value: object, _type: object) -> int:
    # `type(...) is int` keeps out bool (an int subclass) and float alike.
    if type(value) is int:
        return value
    raise _Invalid("an integer", value)


def _uint_of(annotated: object) -> UInt | None:
    """The `UInt` marker of ``Annotated[int, UInt(n)]``, else `None`."""
    if typing.get_origin(annotated) is not typing.Annotated:
        return None
    return next((m for m in typing.get_args(annotated)[1:] if isinstance(m, UInt)), None)


def _structure_uint_factory(annotated: object) -> Callable[[object, object], int]:
    width = _uint_of(annotated)
    if width is None:  # pragma: no cover - the predicate already matched
        raise TypeError(f"not an unsigned integer type: {annotated!r}")
    top = width.max
    expected = f"an integer 0..{top}"

    def structure_uint(value: object, _type: object) -> int:
        if type(value) is int and 0 <= value <= top:
            return value
        raise _Invalid(expected, value)

    return structure_uint


def _structure_str_tuple(value: object, _type: object) -> tuple[str, ...]:
    if type(value) is not list:
        raise _Invalid("an array of strings", value)
    for index, item in enumerate(value):
        if type(item) is not str:
            raise _Invalid("a string", item, f"[{index}]")
    return tuple(value)


def _structure_str_map(value: object, _type: object) -> dict[str, str]:
    if type(value) is not dict:
        raise _Invalid("an object of strings", value)
    for key, item in value.items():
        if type(item) is not str:
            raise _Invalid("a string", item, f"[{json.dumps(key[:40])}]")
    # A fresh dict from json.loads: nobody else holds it, no copy needed.
    return value


def _structure_cancel_reason(value: object, _type: object) -> CancelReason | OtherReason:
    if type(value) is str:
        reason = _CANCEL_REASONS.get(value)
        if reason is not None:
            return reason
    elif type(value) is dict:
        text = value.get("other")
        if type(text) is str:
            return OtherReason(text)
    raise _Invalid('a known cancel reason or {"other": string}', value)


def _unstructure_other_reason(reason: OtherReason) -> dict[str, str]:
    return {"other": reason.text}


def _tagged_unstructure(
    cls: type[_T], tag: str, converter: cattrs.Converter
) -> Callable[[_T], dict[str, object]]:
    """An unstructure hook that puts ``"type"`` before the fields of `cls`.

    Not `cattrs.strategies.configure_tagged_union`: it appends the tag after
    the fields, raises a bare `KeyError` on an unknown tag and knows nothing
    of directions. The decoders dispatch on ``"type"`` themselves, with one
    table per direction, so an error can say what was wrong with the tag.
    """
    fields_of = make_dict_unstructure_fn(cls, converter, _cattrs_omit_if_default=True)

    def unstructure_tagged(msg: _T) -> dict[str, object]:
        frame: dict[str, object] = {"type": tag}
        frame.update(fields_of(msg))
        return frame

    return unstructure_tagged


def _is(expected: object) -> Callable[[object], bool]:
    """A hook predicate matching one exact type expression."""
    return lambda candidate: candidate == expected


def _build_converter() -> cattrs.Converter:
    """Build the codec's converter: strict scalar hooks, lenient about unknown keys."""
    converter = cattrs.Converter(
        omit_if_default=True,  # every default is None: omitted, never `null`
        forbid_extra_keys=False,  # unknown fields from a newer peer are ignored
        detailed_validation=True,  # errors carry the field path for `_describe`
    )
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook_factory(
        lambda t: _uint_of(t) is not None, _structure_uint_factory
    )
    # Generic aliases and unions cannot go through functools.singledispatch:
    # they need predicate hooks, matched by equality.
    converter.register_structure_hook_func(_is(tuple[str, ...]), _structure_str_tuple)
    converter.register_structure_hook_func(_is(dict[str, str]), _structure_str_map)
    converter.register_structure_hook_func(
        _is(CancelReason | OtherReason), _structure_cancel_reason
    )

    def structure_attrs_factory(cls: type) -> Callable[[object, object], object]:
        generated: Callable[[Mapping[str, object], object], object]
        generated = make_dict_structure_fn(cls, converter)

        def structure_object(value: object, _type: object) -> object:
            # Without this a string would pass as an object whose fields are
            # all absent, and a number would raise a bare TypeError.
            if type(value) is not dict:
                raise _Invalid("an object", value)
            return generated(value, cls)

        return structure_object

    converter.register_structure_hook_factory(attrs.has, structure_attrs_factory)

    converter.register_unstructure_hook_func(_is(tuple[str, ...]), list)
    converter.register_unstructure_hook_func(_is(dict[str, str]), dict)
    converter.register_unstructure_hook(OtherReason, _unstructure_other_reason)
    for cls, tag in _TAG_OF.items():
        converter.register_unstructure_hook(cls, _tagged_unstructure(cls, tag, converter))
    return converter


_CONVERTER = _build_converter()

_AgentHook: TypeAlias = Callable[[object, object], AgentToRelay]
_RelayHook: TypeAlias = Callable[[object, object], RelayToAgent]
_AGENT_HOOKS: Mapping[str, _AgentHook] = {
    tag: _CONVERTER.get_structure_hook(cls) for tag, cls in _AGENT_TYPES.items()
}
_RELAY_HOOKS: Mapping[str, _RelayHook] = {
    tag: _CONVERTER.get_structure_hook(cls) for tag, cls in _RELAY_TYPES.items()
}
_UNSTRUCTURE_HOOKS: Mapping[type, Callable[[Message], dict[str, object]]] = {
    cls: _CONVERTER.get_unstructure_hook(cls) for cls in _TAG_OF
}


# --- JSON -------------------------------------------------------------------


class _NotJson(ValueError):
    """A JSON extension Python's parser accepts but the spec does not."""


def _refuse_constant(name: str) -> object:
    raise _NotJson(f"{name} is not valid JSON")


# Reusable instances: `json.loads`/`json.dumps` with keyword arguments would
# build a new decoder/encoder per call. Both use the C accelerator.
_decode_json = json.JSONDecoder(parse_constant=_refuse_constant).decode
_encode_json = json.JSONEncoder(
    ensure_ascii=False,  # raw UTF-8 like upstream's serde_json: smaller frames
    check_circular=False,
    allow_nan=False,
    separators=(",", ":"),
).encode


def _show(value: object) -> str:
    """A short, JSON-flavoured rendering of a received value for an error message."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _text_of(data: str | bytes) -> str:
    if isinstance(data, str):
        return data
    if isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError("binary frames are not allowed")
    raise ProtocolError(f"frame must be text, got {type(data).__name__}")


def _parse(text: str) -> dict[str, object]:
    try:
        frame = _decode_json(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"frame is not valid JSON: {exc.msg} at char {exc.pos}") from exc
    except _NotJson as exc:
        raise ProtocolError(f"frame is not valid JSON: {exc}") from exc
    except ValueError as exc:  # an integer literal past int_max_str_digits
        raise ProtocolError("frame is not valid JSON: number too long") from exc
    except RecursionError as exc:
        raise ProtocolError("frame is not valid JSON: nested too deeply") from exc
    if not isinstance(frame, dict):
        raise ProtocolError(f"frame must be a JSON object, got {_show(frame)}")
    return frame


# --- errors -----------------------------------------------------------------


def _describe(exc: BaseException, path: str) -> str:
    """Describe the first failure in a cattrs error tree, with its field path."""
    if isinstance(exc, ClassValidationError):
        with_notes, without = exc.group_exceptions()
        if with_notes:
            sub, note = with_notes[0]
            return _describe(sub, f"{path}.{note.name}" if path else note.name)
        if without:
            return _describe(without[0], path)
    elif isinstance(exc, IterableValidationError):
        with_index, without = exc.group_exceptions()
        if with_index:
            sub, item = with_index[0]
            return _describe(sub, f"{path}[{item.index!r}]")
        if without:
            return _describe(without[0], path)
    where = f"field '{path}'" if path else "frame"
    if isinstance(exc, _Invalid):
        if exc.where:
            where = f"field '{path}{exc.where}'"
        return f"{where} must be {exc.expected}, got {_show(exc.value)}"
    if isinstance(exc, KeyError):
        return f"missing required field '{path}'"
    return f"{where} is invalid ({type(exc).__name__})"


def _has_lone_surrogate(value: object) -> bool:
    if isinstance(value, str):
        if value.isascii():
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, tuple):
        return any(_has_lone_surrogate(item) for item in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, OtherReason):
        return _has_lone_surrogate(value.text)
    return False


def _refuse_lone_surrogates(tag: str, msg: Message) -> None:
    """Refuse strings that cannot be UTF-8 encoded (``"\\ud800"`` is valid JSON syntax).

    Upstream's serde_json refuses such a frame, and passing one on would make
    the next UTF-8 encode (a WebSocket send, an HTTP write) raise far away.
    """
    for field in attrs.fields(type(msg)):
        if _has_lone_surrogate(getattr(msg, field.name)):
            raise ProtocolError(f"{tag}: field '{field.name}' holds a lone surrogate escape")


def _frame_tag(frame: dict[str, object]) -> str:
    if "type" not in frame:
        raise ProtocolError("frame has no 'type' field")
    tag = frame["type"]
    if type(tag) is not str:
        raise ProtocolError(f"frame field 'type' must be a string, got {_show(tag)}")
    return tag


def _unknown_tag(tag: str, sender: str) -> ProtocolError:
    if tag in _AGENT_TYPES or tag in _RELAY_TYPES:
        return ProtocolError(f"frame type {_show(tag)} may not be sent by {sender}")
    return ProtocolError(f"unknown frame type {_show(tag)}")


def _run_hook(hook: Callable[[object, object], _T], frame: object, tag: str) -> _T:
    try:
        return hook(frame, None)
    except Exception as exc:  # any structuring failure is the peer's fault
        raise ProtocolError(f"{tag}: {_describe(exc, '')}") from exc


# --- hot-path fast decoders -------------------------------------------------
#
# Each returns the message when every field it reads has exactly the type and
# range the general path would accept, and None otherwise (the general path
# then decides, and names the problem if there is one). Same leniency as the
# general path: unknown fields are ignored, ``null`` counts as absent.


def _str_map_or_none(value: object) -> bool:
    """True for an absent map or a map of strings to strings (keys are str in JSON)."""
    if value is None:
        return True
    if type(value) is not dict:
        return False
    return all(type(item) is str for item in value.values())


def _fast_counts(value: object) -> TokenCounts | bool | None:
    """The token counts, None when absent, False when the general path must decide."""
    if value is None:
        return None
    if type(value) is not dict:
        return False
    prompt = value.get("prompt_tokens")
    completion = value.get("completion_tokens")
    total = value.get("total_tokens")
    read = value.get("cache_read_tokens")
    created = value.get("cache_creation_tokens")
    for count in (prompt, completion, total, read, created):
        if count is not None and (type(count) is not int or not 0 <= count <= _U32_MAX):
            return False
    return TokenCounts(prompt, completion, total, read, created)


def _fast_response_complete(frame: dict[str, object]) -> ResponseComplete | None:
    request_id = frame.get("request_id")
    status = frame.get("status_code")
    if type(request_id) is not str or type(status) is not int or not 0 <= status <= _U16_MAX:
        return None
    headers = frame.get("headers")
    body = frame.get("body")
    if not _str_map_or_none(headers) or (body is not None and type(body) is not str):
        return None
    counts = _fast_counts(frame.get("token_counts"))
    if counts is False:
        return None
    return ResponseComplete(request_id, status, headers, body, counts)  # type: ignore[arg-type]


def _fast_request(frame: dict[str, object]) -> Request | None:
    request_id = frame.get("request_id")
    model = frame.get("model")
    path = frame.get("endpoint_path")
    streaming = frame.get("is_streaming")
    body = frame.get("body")
    headers = frame.get("headers")
    if (
        type(request_id) is not str
        or type(model) is not str
        or type(path) is not str
        or type(streaming) is not bool
        or type(body) is not str
        or not _str_map_or_none(headers)
    ):
        return None
    return Request(request_id, model, path, streaming, body, headers)  # type: ignore[arg-type]


def _fast_frame(msg: ResponseComplete | Request) -> dict[str, object]:
    """What the unstructure hook makes of `msg`, the same keys in the same order."""
    if type(msg) is ResponseComplete:
        frame: dict[str, object] = {
            "type": "response_complete",
            "request_id": msg.request_id,
            "status_code": msg.status_code,
        }
        if msg.headers is not None:
            frame["headers"] = msg.headers
        if msg.body is not None:
            frame["body"] = msg.body
        counts = msg.token_counts
        if counts is not None:
            frame["token_counts"] = {
                name: value
                for name, value in (
                    ("prompt_tokens", counts.prompt_tokens),
                    ("completion_tokens", counts.completion_tokens),
                    ("total_tokens", counts.total_tokens),
                    ("cache_read_tokens", counts.cache_read_tokens),
                    ("cache_creation_tokens", counts.cache_creation_tokens),
                )
                if value is not None
            }
        return frame
    assert type(msg) is Request
    frame = {
        "type": "request",
        "request_id": msg.request_id,
        "model": msg.model,
        "endpoint_path": msg.endpoint_path,
        "is_streaming": msg.is_streaming,
        "body": msg.body,
    }
    if msg.headers is not None:
        frame["headers"] = msg.headers
    return frame


# --- public codec -----------------------------------------------------------


def encode(msg: Message) -> str:
    """Serialise one message as the text of one WebSocket frame.

    Args:
        msg: Any message of either direction.

    Returns:
        Compact JSON: ``"type"`` first, then the fields in declaration order;
        optional fields that are `None` are left out, tuples become arrays,
        `OtherReason` becomes ``{"other": text}``. Non-ASCII stays raw UTF-8.

    Raises:
        TypeError: `msg` is not a message class of this module.
    """
    if type(msg) is ResponseChunk:  # hot path: one frame per backend read
        return _encode_json(
            {"type": "response_chunk", "request_id": msg.request_id, "chunk": msg.chunk}
        )
    if type(msg) is ResponseComplete or type(msg) is Request:  # hot path: one per request
        return _encode_json(_fast_frame(msg))
    hook = _UNSTRUCTURE_HOOKS.get(type(msg))
    if hook is None:
        raise TypeError(f"not a wire message: {type(msg).__name__}")
    return _encode_json(hook(msg))


def decode_agent_frame(data: str | bytes) -> AgentToRelay:
    """Decode one frame an agent sent (what the relay receives).

    Args:
        data: The frame as received: `str` for a text frame, `bytes` for a
            binary one (always refused).

    Returns:
        The message.

    Raises:
        ProtocolError: The frame breaks the protocol; the message names the
            frame type and field. Nothing else is raised.
    """
    text = _text_of(data)
    frame = _parse(text)
    fast_tag = frame.get("type")
    if fast_tag == "response_chunk":  # hot path: one frame per backend read
        request_id = frame.get("request_id")
        chunk = frame.get("chunk")
        if type(request_id) is str and type(chunk) is str and "\\u" not in text:
            return ResponseChunk(request_id, chunk)
        # Otherwise the general path finds the precise problem, if there is one.
    elif fast_tag == "response_complete":  # hot path: one frame per request
        complete = _fast_response_complete(frame)
        if complete is not None and "\\u" not in text:
            return complete
    tag = _frame_tag(frame)
    hook = _AGENT_HOOKS.get(tag)
    if hook is None:
        raise _unknown_tag(tag, "an agent")
    msg = _run_hook(hook, frame, tag)
    if "\\u" in text:
        _refuse_lone_surrogates(tag, msg)
    return msg


def decode_relay_frame(data: str | bytes) -> RelayToAgent:
    """Decode one frame a relay sent (what the agent receives).

    Args:
        data: The frame as received: `str` for a text frame, `bytes` for a
            binary one (always refused).

    Returns:
        The message.

    Raises:
        ProtocolError: The frame breaks the protocol; the message names the
            frame type and field. Nothing else is raised.
    """
    text = _text_of(data)
    frame = _parse(text)
    if frame.get("type") == "request" and "\\u" not in text:  # hot path: one per request
        request = _fast_request(frame)
        if request is not None:
            return request
    tag = _frame_tag(frame)
    hook = _RELAY_HOOKS.get(tag)
    if hook is None:
        raise _unknown_tag(tag, "the relay")
    msg = _run_hook(hook, frame, tag)
    if "\\u" in text:
        _refuse_lone_surrogates(tag, msg)
    return msg
