"""Tests for wire.codec: golden frames from upstream, round trips, strict decoding."""

import copy
import json
import pickle
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire import (
    PROTOCOL_VERSION,
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
    ProtocolError,
    Register,
    RegisterAck,
    Request,
    ResponseChunk,
    ResponseComplete,
    TokenCounts,
    VersionMismatch,
    WireError,
    check_protocol_version,
    codec,
    decode_agent_frame,
    decode_relay_frame,
    encode,
)

# A copy of spec/golden-frames.jsonl: 38 frames serialised by upstream's Rust
# protocol crate (one JSON object a line: direction, type, frame, source).
GOLDEN_PATH = Path(__file__).with_name("golden-frames.jsonl")
GOLDEN = [json.loads(line) for line in GOLDEN_PATH.read_text("utf-8").splitlines() if line]

Decoder = Callable[[str | bytes], Message]

AGENT_TAGS = {
    "register": Register,
    "models_update": ModelsUpdate,
    "response_chunk": ResponseChunk,
    "response_complete": ResponseComplete,
    "pong": Pong,
    "error": Error,
}
RELAY_TAGS = {
    "register_ack": RegisterAck,
    "request": Request,
    "cancel": Cancel,
    "ping": Ping,
    "graceful_shutdown": GracefulShutdown,
    "models_refresh": ModelsRefresh,
}
TAG_OF = {cls: tag for table in (AGENT_TAGS, RELAY_TAGS) for tag, cls in table.items()}


def decoder_for(msg: Message) -> Decoder:
    return decode_agent_frame if type(msg) in AGENT_TAGS.values() else decode_relay_frame


def golden_id(entry: dict[str, object]) -> str:
    return f"{entry['type']}@{entry['source']}"


def compact(frame: object) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def protocol_error(decode: Decoder, data: str | bytes) -> str:
    with pytest.raises(ProtocolError) as info:
        decode(data)
    return str(info.value)


# --- golden frames ----------------------------------------------------------


def test_golden_file_covers_every_message_type() -> None:
    assert len(GOLDEN) == 38
    seen = {(entry["direction"], entry["type"]) for entry in GOLDEN}
    expected = {("worker_to_server", tag) for tag in AGENT_TAGS} | {
        ("server_to_worker", tag) for tag in RELAY_TAGS
    }
    assert seen == expected


@pytest.mark.parametrize("entry", GOLDEN, ids=golden_id)
def test_golden_frame_decodes_and_reencodes_equal(entry: dict[str, object]) -> None:
    frame = entry["frame"]
    assert isinstance(frame, dict)
    if entry["direction"] == "worker_to_server":
        msg: Message = decode_agent_frame(compact(frame))
        tags: dict[str, type] = AGENT_TAGS
    else:
        assert entry["direction"] == "server_to_worker"
        msg = decode_relay_frame(compact(frame))
        tags = RELAY_TAGS
    assert type(msg) is tags[str(entry["type"])]

    encoded = encode(msg)
    assert json.loads(encoded) == frame
    # "type" first, then the fields in declaration order.
    names = [f.name for f in attrs.fields(type(msg)) if f.name in frame]
    assert list(json.loads(encoded)) == ["type", *names]
    assert encoded.startswith(f'{{"type":"{entry["type"]}"')


@pytest.mark.parametrize("entry", GOLDEN, ids=golden_id)
def test_golden_frame_reencodes_byte_identical_except_error_key_order(
    entry: dict[str, object],
) -> None:
    frame = entry["frame"]
    assert isinstance(frame, dict)
    decode = decode_agent_frame if entry["direction"] == "worker_to_server" else decode_relay_frame
    encoded = encode(decode(compact(frame)))
    if entry["type"] == "error" and "request_id" in frame:
        # Upstream declares request_id first; our Error has it last (it is
        # optional, so it must follow the required fields). Order does not
        # matter to any JSON reader, upstream's included.
        assert encoded != compact(frame)
        assert json.loads(encoded) == frame
    else:
        assert encoded == compact(frame)


@pytest.mark.parametrize("entry", GOLDEN, ids=golden_id)
def test_golden_frame_refused_in_the_wrong_direction(entry: dict[str, object]) -> None:
    wrong = decode_relay_frame if entry["direction"] == "worker_to_server" else decode_agent_frame
    message = protocol_error(wrong, compact(entry["frame"]))
    assert f"frame type '{entry['type']}' may not be sent by" in message


def test_golden_whitespace_model_is_kept_verbatim() -> None:
    # Sanitising (trimming) is the relay's job, not the codec's.
    [entry] = [e for e in GOLDEN if " mistral-large " in compact(e["frame"])]
    msg = decode_agent_frame(compact(entry["frame"]))
    assert isinstance(msg, Register)
    assert msg.models == ("llama-3.1-70b", " mistral-large ")


# --- round trips ------------------------------------------------------------

FULL: list[Message] = [
    Register(
        worker_name="gpu-box-a",
        models=("llama", "qwen"),
        max_concurrent=4,
        protocol_version=PROTOCOL_VERSION,
        current_load=2,
        capabilities=("drain",),
    ),
    ModelsUpdate(models=("llama",), current_load=1, draining=True),
    ResponseChunk(request_id="r-1", chunk='data: {"delta":"hé 🙂"}\n\n'),
    ResponseComplete(
        request_id="r-1",
        status_code=200,
        headers={"content-type": "application/json"},
        body='{"id":"x"}',
        token_counts=TokenCounts(prompt_tokens=1, completion_tokens=2, total_tokens=3),
    ),
    Pong(current_load=3, timestamp_unix_ms=2**64 - 1),
    Error(code="bad", message="worse", request_id="r-2"),
    RegisterAck(
        worker_id="w-1",
        models=("llama",),
        warnings=("dropped ''",),
        protocol_version=PROTOCOL_VERSION,
        capabilities=("drain",),
    ),
    Request(
        request_id="r-1",
        model="llama",
        endpoint_path="/v1/chat/completions",
        is_streaming=True,
        body='{"model":"llama","stream":true}',
        headers={"authorization": "Bearer t"},
    ),
    Cancel(request_id="r-1", reason=OtherReason("admin requested")),
    Ping(timestamp_unix_ms=1712345678901),
    GracefulShutdown(reason="maintenance", drain_timeout_secs=30),
    ModelsRefresh(reason="refresh"),
]

BARE: list[Message] = [
    Register(worker_name="w", models=(), max_concurrent=0),
    ModelsUpdate(models=(), current_load=0),
    ResponseChunk(request_id="", chunk=""),
    ResponseComplete(request_id="r", status_code=499),
    Pong(current_load=0),
    Error(code="c", message="m"),
    RegisterAck(worker_id="w", models=()),
    Request(request_id="r", model="m", endpoint_path="/", is_streaming=False, body=""),
    Cancel(request_id="r", reason=CancelReason.TIMEOUT),
    Ping(),
    GracefulShutdown(),
    ModelsRefresh(),
]


def message_id(msg: Message) -> str:
    return type(msg).__name__


def test_round_trip_lists_cover_every_class() -> None:
    assert {type(m) for m in FULL} == set(TAG_OF)
    assert {type(m) for m in BARE} == set(TAG_OF)


@pytest.mark.parametrize("msg", FULL + BARE, ids=message_id)
def test_round_trip(msg: Message) -> None:
    encoded = encode(msg)
    assert decoder_for(msg)(encoded) == msg
    assert json.loads(encoded)["type"] == TAG_OF[type(msg)]
    # Text frames only: the same JSON as a binary frame is refused.
    with pytest.raises(ProtocolError, match="binary frames are not allowed"):
        decoder_for(msg)(encoded.encode())


@pytest.mark.parametrize("msg", FULL, ids=message_id)
def test_encode_with_every_optional_set_emits_every_field(msg: Message) -> None:
    frame = json.loads(encode(msg))
    assert list(frame) == ["type", *(f.name for f in attrs.fields(type(msg)))]


@pytest.mark.parametrize("msg", BARE, ids=message_id)
def test_encode_omits_absent_optionals_and_never_writes_null(msg: Message) -> None:
    encoded = encode(msg)
    assert "null" not in encoded
    required = [f.name for f in attrs.fields(type(msg)) if f.default is attrs.NOTHING]
    assert list(json.loads(encoded)) == ["type", *required]


def test_encode_is_compact_and_keeps_unicode_raw() -> None:
    encoded = encode(ResponseChunk(request_id="r", chunk="hé 🙂\n"))
    assert encoded == '{"type":"response_chunk","request_id":"r","chunk":"hé 🙂\\n"}'


def test_encode_shapes() -> None:
    assert encode(Cancel(request_id="r", reason=CancelReason.CLIENT_DISCONNECT)) == (
        '{"type":"cancel","request_id":"r","reason":"client_disconnect"}'
    )
    assert encode(Cancel(request_id="r", reason=OtherReason("x"))) == (
        '{"type":"cancel","request_id":"r","reason":{"other":"x"}}'
    )
    # False is a value, not absence.
    assert encode(ModelsUpdate(models=("a", "b"), current_load=0, draining=False)) == (
        '{"type":"models_update","models":["a","b"],"current_load":0,"draining":false}'
    )
    assert encode(
        ResponseComplete(request_id="r", status_code=200, body="", token_counts=TokenCounts())
    ) == (
        '{"type":"response_complete","request_id":"r","status_code":200,'
        '"body":"","token_counts":{}}'
    )
    assert encode(ResponseComplete("r", 200, token_counts=TokenCounts(total_tokens=5))) == (
        '{"type":"response_complete","request_id":"r","status_code":200,'
        '"token_counts":{"total_tokens":5}}'
    )


def test_encode_refuses_non_messages() -> None:
    with pytest.raises(TypeError, match="not a wire message: TokenCounts"):
        encode(TokenCounts())  # type: ignore[arg-type]


def test_every_cancel_reason_round_trips() -> None:
    for reason in CancelReason:
        msg = Cancel(request_id="r", reason=reason)
        decoded = decode_relay_frame(encode(msg))
        assert decoded == msg
        assert isinstance(decoded, Cancel)
        assert type(decoded.reason) is CancelReason


# --- leniency on receive ----------------------------------------------------


def test_unknown_fields_are_ignored() -> None:
    frame = {
        "type": "response_complete",
        "request_id": "r",
        "status_code": 200,
        "token_counts": {"prompt_tokens": 1, "cached_tokens": 9},
        "future_field": {"nested": [1, 2, None]},
    }
    assert decode_agent_frame(json.dumps(frame)) == ResponseComplete(
        request_id="r", status_code=200, token_counts=TokenCounts(prompt_tokens=1)
    )
    assert decode_relay_frame('{"type":"ping","x":1}') == Ping()
    assert decode_agent_frame('{"request_id":"r","chunk":"c","type":"response_chunk","x":[]}') == (
        ResponseChunk("r", "c")
    )


@pytest.mark.parametrize("msg", FULL, ids=message_id)
def test_null_optional_fields_count_as_absent(msg: Message) -> None:
    frame = json.loads(encode(msg))
    optional = [f.name for f in attrs.fields(type(msg)) if f.default is None]
    for name in optional:
        frame[name] = None
    fields = attrs.asdict(msg, recurse=False) | dict.fromkeys(optional)
    expected = type(msg)(**fields)
    assert decoder_for(msg)(json.dumps(frame)) == expected


def test_null_inside_token_counts_counts_as_absent() -> None:
    data = (
        '{"type":"response_complete","request_id":"r","status_code":200,'
        '"token_counts":{"prompt_tokens":null,"total_tokens":4}}'
    )
    msg = decode_agent_frame(data)
    assert isinstance(msg, ResponseComplete)
    assert msg.token_counts == TokenCounts(total_tokens=4)


def test_key_order_and_whitespace_do_not_matter() -> None:
    data = '\n { "models" : ["a"] , "current_load" : 0 , "type" : "models_update" } \n'
    assert decode_agent_frame(data) == ModelsUpdate(models=("a",), current_load=0)


def test_valid_escapes_including_surrogate_pairs_decode() -> None:
    data = r'{"type":"response_chunk","request_id":"r\u0031","chunk":"\ud83d\ude42 \u00e9\\u"}'
    assert decode_agent_frame(data) == ResponseChunk("r1", "🙂 é\\u")


def test_integer_bounds_are_inclusive() -> None:
    assert decode_agent_frame(
        '{"type":"response_complete","request_id":"r","status_code":65535}'
    ) == ResponseComplete("r", 65535)
    assert decode_agent_frame(f'{{"type":"pong","current_load":{2**32 - 1}}}') == Pong(2**32 - 1)
    assert decode_relay_frame(f'{{"type":"ping","timestamp_unix_ms":{2**64 - 1}}}') == Ping(
        2**64 - 1
    )


def test_decoded_tuples_and_maps() -> None:
    msg = decode_relay_frame(
        '{"type":"request","request_id":"r","model":"m","endpoint_path":"/p",'
        '"is_streaming":false,"body":"{}","headers":{"a":"1","B":"2"}}'
    )
    assert isinstance(msg, Request)
    assert msg.headers == {"a": "1", "B": "2"}
    ack = decode_relay_frame('{"type":"register_ack","worker_id":"w","models":["a","a"]}')
    assert isinstance(ack, RegisterAck)
    assert ack.models == ("a", "a")


# --- rejection table --------------------------------------------------------

RC = '"type":"response_complete","request_id":"r"'
REG = '"type":"register","worker_name":"w","models":["m"]'

AGENT_REJECTS: list[tuple[str, str | bytes, list[str]]] = [
    ("not-json", "hello", ["not valid JSON"]),
    ("empty", "", ["not valid JSON"]),
    ("truncated", '{"type":"pong"', ["not valid JSON"]),
    ("trailing-garbage", '{"type":"pong","current_load":0} x', ["not valid JSON"]),
    ("nan", '{"type":"pong","current_load":NaN}', ["not valid JSON", "NaN"]),
    ("infinity", '{"type":"pong","current_load":0,"x":-Infinity}', ["not valid JSON"]),
    ("array", '[{"type":"pong","current_load":0}]', ["JSON object", "array"]),
    ("string", '"pong"', ["JSON object", "'pong'"]),
    ("null", "null", ["JSON object", "null"]),
    ("missing-type", '{"current_load":0}', ["no 'type' field"]),
    ("null-type", '{"type":null,"current_load":0}', ["'type'", "string", "null"]),
    ("int-type", '{"type":7}', ["'type'", "string", "7"]),
    ("list-type", '{"type":["pong"]}', ["'type'", "string", "array"]),
    ("unknown-type", '{"type":"hello"}', ["unknown frame type 'hello'"]),
    ("wrong-direction", '{"type":"request","request_id":"r"}', ["'request'", "agent"]),
    ("missing-field", '{"type":"pong"}', ["pong", "missing required field 'current_load'"]),
    ("missing-chunk", '{"type":"response_chunk","request_id":"r"}', ["response_chunk", "'chunk'"]),
    ("float-int", f'{{{RC},"status_code":200.0}}', ["response_complete", "'status_code'", "200.0"]),
    ("one-point-zero", '{"type":"pong","current_load":1.0}', ["pong", "'current_load'", "1.0"]),
    (
        "string-int",
        f'{{{RC},"status_code":"200"}}',
        ["response_complete: field 'status_code' must be an integer 0..65535, got '200'"],
    ),
    ("negative", '{"type":"pong","current_load":-1}', ["'current_load'", "0..4294967295", "-1"]),
    ("bool-int", f'{{{REG},"max_concurrent":true}}', ["register", "'max_concurrent'", "true"]),
    ("u16-overflow", f'{{{RC},"status_code":70000}}', ["'status_code'", "0..65535", "70000"]),
    ("u32-overflow", f'{{{REG},"max_concurrent":{2**32}}}', ["'max_concurrent'", "4294967296"]),
    (
        "u64-overflow",
        f'{{"type":"pong","current_load":0,"timestamp_unix_ms":{2**64}}}',
        ["pong", "'timestamp_unix_ms'", "0..18446744073709551615"],
    ),
    ("huge-int", '{"type":"pong","current_load":' + "9" * 5000 + "}", ["not valid JSON"]),
    ("null-required", f'{{{RC},"status_code":null}}', ["'status_code'", "got null"]),
    (
        "null-required-str",
        '{"type":"response_chunk","request_id":null,"chunk":"c"}',
        ["'request_id'", "got null"],
    ),
    (
        "int-for-str",
        '{"type":"response_chunk","request_id":5,"chunk":"c"}',
        ["'request_id'", "string"],
    ),
    (
        "list-for-str",
        '{"type":"response_chunk","request_id":"r","chunk":["c"]}',
        ["'chunk'", "array"],
    ),
    (
        "str-for-list",
        '{"type":"register","worker_name":"w","models":"m","max_concurrent":1}',
        ["'models'", "array of strings", "'m'"],
    ),
    (
        "obj-for-list",
        '{"type":"models_update","models":{"m":1},"current_load":0}',
        ["models_update", "'models'", "object"],
    ),
    (
        "int-in-list",
        '{"type":"models_update","models":["a",5],"current_load":0}',
        ["models_update", "'models[1]'", "string", "5"],
    ),
    (
        "null-in-list",
        f'{{{REG},"max_concurrent":1,"capabilities":[null]}}',
        ["register", "'capabilities[0]'", "null"],
    ),
    (
        "str-for-bool",
        '{"type":"models_update","models":[],"current_load":0,"draining":"yes"}',
        ["'draining'", "boolean", "'yes'"],
    ),
    (
        "int-for-bool",
        '{"type":"models_update","models":[],"current_load":0,"draining":1}',
        ["'draining'", "boolean", "1"],
    ),
    (
        "header-value-int",
        f'{{{RC},"status_code":200,"headers":{{"content-type":1}}}}',
        ["response_complete", "headers", "content-type", "string", "1"],
    ),
    (
        "header-value-null",
        f'{{{RC},"status_code":200,"headers":{{"x":null}}}}',
        ["headers", "null"],
    ),
    (
        "headers-list",
        f'{{{RC},"status_code":200,"headers":[["a","b"]]}}',
        ["'headers'", "object of strings", "array"],
    ),
    (
        "token-counts-str",
        f'{{{RC},"status_code":200,"token_counts":"abc"}}',
        ["'token_counts'", "object", "'abc'"],
    ),
    (
        "token-counts-list",
        f'{{{RC},"status_code":200,"token_counts":[1]}}',
        ["'token_counts'", "object"],
    ),
    (
        "token-count-float",
        f'{{{RC},"status_code":200,"token_counts":{{"total_tokens":1.5}}}}',
        ["'token_counts.total_tokens'", "1.5"],
    ),
    (
        "error-missing-message",
        '{"type":"error","code":"c"}',
        ["error", "missing required field 'message'"],
    ),
    (
        "lone-surrogate",
        r'{"type":"response_chunk","request_id":"r","chunk":"a\ud800b"}',
        ["response_chunk", "'chunk'", "surrogate"],
    ),
    (
        "lone-surrogate-list",
        r'{"type":"models_update","models":["\udc00"],"current_load":0}',
        ["models_update", "'models'", "surrogate"],
    ),
    (
        "lone-surrogate-header",
        r'{"type":"response_complete","request_id":"r","status_code":200,"headers":{"\ud800":"x"}}',
        ["'headers'", "surrogate"],
    ),
    ("binary", b'{"type":"pong","current_load":0}', ["binary frames are not allowed"]),
    ("invalid-utf8", b"\xff\xfe\xfd", ["binary frames are not allowed"]),
    ("deep-nesting", "[" * 100_000 + "]" * 100_000, ["not valid JSON"]),
]


@pytest.mark.parametrize(
    ("data", "fragments"),
    [pytest.param(data, fragments, id=name) for name, data, fragments in AGENT_REJECTS],
)
def test_decode_agent_frame_rejects(data: str | bytes, fragments: list[str]) -> None:
    message = protocol_error(decode_agent_frame, data)
    for fragment in fragments:
        assert fragment in message


REQ_HEAD = '"type":"request","request_id":"r","model":"m","endpoint_path":"/p"'
REQ = REQ_HEAD + ',"body":"{}"'

RELAY_REJECTS: list[tuple[str, str | bytes, list[str]]] = [
    ("not-json", "{", ["not valid JSON"]),
    ("array", "[]", ["JSON object", "array"]),
    ("missing-type", "{}", ["no 'type' field"]),
    ("unknown-type", '{"type":"Ping"}', ["unknown frame type 'Ping'"]),
    ("wrong-direction", '{"type":"pong","current_load":0}', ["'pong'", "relay"]),
    (
        "wrong-direction-chunk",
        '{"type":"response_chunk","request_id":"r","chunk":"c"}',
        ["'response_chunk'"],
    ),
    (
        "missing-field",
        '{"type":"request","request_id":"r"}',
        ["request", "missing required field 'model'"],
    ),
    (
        "str-bool",
        f'{{{REQ},"is_streaming":"true"}}',
        ["request", "'is_streaming'", "boolean", "'true'"],
    ),
    ("int-bool", f'{{{REQ},"is_streaming":0}}', ["'is_streaming'", "boolean"]),
    ("null-bool", f'{{{REQ},"is_streaming":null}}', ["'is_streaming'", "null"]),
    (
        "object-body",
        f'{{{REQ_HEAD},"is_streaming":false,"body":{{"model":"m"}}}}',
        ["request", "'body'", "string", "object"],
    ),
    (
        "header-value-list",
        f'{{{REQ},"is_streaming":false,"headers":{{"a":["b"]}}}}',
        ["request", "headers", "string", "array"],
    ),
    (
        "bad-reason",
        '{"type":"cancel","request_id":"r","reason":"bored"}',
        ["cancel", "'reason'", "'bored'"],
    ),
    (
        "reason-case",
        '{"type":"cancel","request_id":"r","reason":"Timeout"}',
        ["cancel", "'reason'", "'Timeout'"],
    ),
    (
        "reason-other-int",
        '{"type":"cancel","request_id":"r","reason":{"other":5}}',
        ["cancel", "'reason'", "object"],
    ),
    (
        "reason-other-missing",
        '{"type":"cancel","request_id":"r","reason":{"timeout":null}}',
        ["cancel", "'reason'"],
    ),
    (
        "reason-null",
        '{"type":"cancel","request_id":"r","reason":null}',
        ["cancel", "'reason'", "null"],
    ),
    (
        "reason-missing",
        '{"type":"cancel","request_id":"r"}',
        ["cancel", "missing required field 'reason'"],
    ),
    ("ping-float", '{"type":"ping","timestamp_unix_ms":1.5e12}', ["ping", "'timestamp_unix_ms'"]),
    (
        "drain-negative",
        '{"type":"graceful_shutdown","drain_timeout_secs":-5}',
        ["graceful_shutdown", "'drain_timeout_secs'", "-5"],
    ),
    (
        "drain-string",
        '{"type":"graceful_shutdown","drain_timeout_secs":"30"}',
        ["'drain_timeout_secs'", "'30'"],
    ),
    (
        "warnings-str",
        '{"type":"register_ack","worker_id":"w","models":[],"warnings":"x"}',
        ["register_ack", "'warnings'"],
    ),
    (
        "models-refresh-reason",
        '{"type":"models_refresh","reason":5}',
        ["models_refresh", "'reason'", "5"],
    ),
    ("binary", b"{}", ["binary frames are not allowed"]),
    ("invalid-utf8", b"\xc3\x28", ["binary frames are not allowed"]),
]


@pytest.mark.parametrize(
    ("data", "fragments"),
    [pytest.param(data, fragments, id=name) for name, data, fragments in RELAY_REJECTS],
)
def test_decode_relay_frame_rejects(data: str | bytes, fragments: list[str]) -> None:
    message = protocol_error(decode_relay_frame, data)
    for fragment in fragments:
        assert fragment in message


def test_rejection_keeps_the_cause_for_logs() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_agent_frame('{"type":"pong","current_load":"1"}')
    assert info.value.__cause__ is not None


def test_other_binary_buffers_are_refused_too() -> None:
    with pytest.raises(ProtocolError, match="binary frames are not allowed"):
        decode_relay_frame(bytearray(b"{}"))  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="binary frames are not allowed"):
        decode_agent_frame(memoryview(b"{}"))  # type: ignore[arg-type]


def test_non_text_non_bytes_input_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="frame must be text, got int"):
        decode_agent_frame(5)  # type: ignore[arg-type]


def test_error_messages_stay_short() -> None:
    long = "x" * 10_000
    messages = [
        protocol_error(decode_agent_frame, json.dumps({"type": long})),
        protocol_error(decode_agent_frame, json.dumps({"type": "pong", "current_load": long})),
        protocol_error(
            decode_agent_frame,
            json.dumps(
                {
                    "type": "response_complete",
                    "request_id": "r",
                    "status_code": 200,
                    "headers": {long: 1},
                }
            ),
        ),
    ]
    for message in messages:
        assert len(message) < 160, message


def test_chunk_fast_path_falls_back_for_precise_errors() -> None:
    # The fast path only accepts; anything odd goes through the full decoder.
    message = protocol_error(
        decode_agent_frame, '{"type":"response_chunk","request_id":"r","chunk":null}'
    )
    assert message == "response_chunk: field 'chunk' must be a string, got null"


def test_decoded_frames_do_not_alias_between_calls() -> None:
    data = encode(FULL[3])
    first = decode_agent_frame(data)
    second = decode_agent_frame(data)
    assert first == second
    assert isinstance(first, ResponseComplete)
    assert isinstance(second, ResponseComplete)
    assert first.headers is not second.headers


# --- protocol version -------------------------------------------------------


def test_check_protocol_version_accepts_ours_and_legacy() -> None:
    check_protocol_version(PROTOCOL_VERSION)
    check_protocol_version(None)


@pytest.mark.parametrize("theirs", ["1", "", "2026-04-bridge-v2", PROTOCOL_VERSION + " "])
def test_check_protocol_version_refuses_others(theirs: str) -> None:
    with pytest.raises(VersionMismatch) as info:
        check_protocol_version(theirs)
    error = info.value
    assert isinstance(error, ProtocolError)
    assert isinstance(error, WireError)
    assert error.theirs == theirs
    assert error.ours == PROTOCOL_VERSION
    assert repr(theirs) in str(error)
    assert PROTOCOL_VERSION in str(error)


def test_version_mismatch_message_is_bounded_and_pickles() -> None:
    error = VersionMismatch(theirs="v" * 1000, ours=PROTOCOL_VERSION)
    assert len(str(error)) < 123
    assert PROTOCOL_VERSION in str(error)
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.theirs, clone.ours, str(clone)) == (error.theirs, error.ours, str(error))
    assert str(copy.copy(error)) == str(error)


# --- hot-path decoders agree with the general path ---------------------------

# Values a peer might put in any field: right and wrong types, edges of ranges.
_EDGE_INT = st.sampled_from([0, 1, 200, 65535, 65536, 2**32 - 1, 2**32, -1])
_ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    _EDGE_INT,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.one_of(st.text(max_size=3), st.integers()), max_size=2),
)
# Well-formed frames of the two per-request types; a test edits one or two
# fields of one (drops it, or puts any value there), the case where a fast
# path could disagree with the general one.
_VALID: dict[str, dict[str, object]] = {
    "response_complete": {
        "type": "response_complete",
        "request_id": "r1",
        "status_code": 200,
        "headers": {"content-type": "application/json"},
        "body": '{"ok":true}',
        "token_counts": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    },
    "request": {
        "type": "request",
        "request_id": "r1",
        "model": "m",
        "endpoint_path": "/v1/chat/completions",
        "is_streaming": False,
        "body": '{"model":"m"}',
        "headers": {"accept": "*/*"},
    },
}
_DROP = object()
_EDIT = st.one_of(st.just(_DROP), _EDGE_INT, _ANY_VALUE)


def _frame(tag: str, data: st.DataObject) -> dict[str, object]:
    frame = copy.deepcopy(_VALID[tag])
    places = [("", name) for name in frame if name != "type"]
    places += [
        (name, key) for name, value in frame.items() if isinstance(value, dict) for key in value
    ]
    places.append(("", "unknown"))
    for holder, name in data.draw(
        st.sets(st.sampled_from(places), min_size=1, max_size=2), label="edits"
    ):
        target = frame.get(holder) if holder else frame
        if not isinstance(target, dict):  # the other edit replaced or dropped it
            continue
        edit = data.draw(_EDIT, label=f"{holder}.{name}")
        if edit is _DROP:
            target.pop(name, None)
        else:
            target[name] = edit
    return frame


def _general_path(frame: dict[str, object], text: str) -> Message | str:
    """What the cattrs path alone makes of `frame`: the message, or the error text."""
    tag = str(frame["type"])
    hooks = codec._AGENT_HOOKS if tag in AGENT_TAGS else codec._RELAY_HOOKS
    try:
        msg = codec._run_hook(hooks[tag], frame, tag)
        if "\\u" in text:
            codec._refuse_lone_surrogates(tag, msg)
    except ProtocolError as exc:
        return str(exc)
    return msg


def _assert_decoded_as_by_the_general_path(frame: dict[str, object], text: str) -> None:
    """The public decoder (fast path included) says of `text` what cattrs alone says."""
    decode: Decoder = decode_agent_frame if frame["type"] in AGENT_TAGS else decode_relay_frame
    try:
        got: Message | str = decode(text)
    except ProtocolError as exc:
        got = str(exc)
    assert got == _general_path(frame, text)


@pytest.mark.parametrize("tag", sorted(_VALID))
@settings(max_examples=1000, deadline=None)
@given(data=st.data())
def test_fast_decoders_match_the_general_path(tag: str, data: st.DataObject) -> None:
    frame = _frame(tag, data)
    _assert_decoded_as_by_the_general_path(
        frame, json.dumps(frame, ensure_ascii=data.draw(st.booleans()))
    )


@pytest.mark.parametrize(
    ("tag", "holder", "name", "value"),
    [
        ("response_complete", "", "status_code", 65535),
        ("response_complete", "", "status_code", 65536),
        ("response_complete", "", "status_code", -1),
        ("response_complete", "", "status_code", True),
        ("response_complete", "", "status_code", 200.0),
        ("response_complete", "", "request_id", 1),
        ("response_complete", "", "body", None),
        ("response_complete", "", "body", 1),
        ("response_complete", "", "headers", None),
        ("response_complete", "", "headers", []),
        ("response_complete", "headers", "content-type", 1),
        ("response_complete", "headers", "content-type", None),
        ("response_complete", "", "token_counts", None),
        ("response_complete", "", "token_counts", "3"),
        ("response_complete", "", "token_counts", {}),
        ("response_complete", "token_counts", "prompt_tokens", 2**32 - 1),
        ("response_complete", "token_counts", "prompt_tokens", 2**32),
        ("response_complete", "token_counts", "total_tokens", -1),
        ("response_complete", "token_counts", "completion_tokens", None),
        ("response_complete", "token_counts", "completion_tokens", False),
        ("request", "", "is_streaming", 0),
        ("request", "", "is_streaming", None),
        ("request", "", "model", None),
        ("request", "", "endpoint_path", ["/v1"]),
        ("request", "", "body", {"model": "m"}),
        ("request", "", "headers", None),
        ("request", "headers", "accept", ["*/*"]),
        ("request", "", "unknown", [1]),
    ],
)
def test_fast_decoders_match_the_general_path_at_the_edges(
    tag: str, holder: str, name: str, value: object
) -> None:
    frame = copy.deepcopy(_VALID[tag])
    target = frame[holder] if holder else frame
    assert isinstance(target, dict)
    target[name] = value
    _assert_decoded_as_by_the_general_path(frame, json.dumps(frame))


_OPTIONAL_COUNT = st.one_of(st.none(), st.integers(0, 2**32 - 1))
_HEADERS = st.one_of(
    st.none(), st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3)
)


@settings(max_examples=300, deadline=None)
@given(
    msg=st.one_of(
        st.builds(
            ResponseComplete,
            request_id=st.text(max_size=8),
            status_code=st.integers(0, 65535),
            headers=_HEADERS,
            body=st.one_of(st.none(), st.text(max_size=8)),
            token_counts=st.one_of(
                st.none(),
                st.builds(TokenCounts, _OPTIONAL_COUNT, _OPTIONAL_COUNT, _OPTIONAL_COUNT),
            ),
        ),
        st.builds(
            Request,
            request_id=st.text(max_size=8),
            model=st.text(max_size=8),
            endpoint_path=st.text(max_size=8),
            is_streaming=st.booleans(),
            body=st.text(max_size=8),
            headers=_HEADERS,
        ),
    )
)
def test_fast_encoders_match_the_general_path(msg: Message) -> None:
    general = codec._encode_json(codec._UNSTRUCTURE_HOOKS[type(msg)](msg))
    assert encode(msg) == general
