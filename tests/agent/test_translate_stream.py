"""agent/translate.py's stream translator: golden files, any split, and the SDK's own parser.

Golden files live in tests/agent/golden/: ``<case>.openai.sse`` is what a
backend sent (``llamacpp_*`` were recorded from llama.cpp's server; the
others follow OpenAI's, vLLM's and llama.cpp's documented shapes), and
``<case>.anthropic.sse`` is what we must produce. After a deliberate change,
regenerate them with ``UPDATE_GOLDEN=1 pytest tests/agent/test_translate_stream.py``
and review the diff.
"""

import itertools
import json
import os
import re
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.translate import ChatStreamTranslator, chat_to_message, message_to_sse

GOLDEN = Path(__file__).parent / "golden"
MODEL = "claude-test"

# case -> the request's stop_sequences (the translator's only other input)
CASES: dict[str, list[str]] = {
    "llamacpp_text": [],
    "llamacpp_tool_call": [],
    "openai_text_then_tools": [],
    "no_usage_no_done_crlf": [],
    "error_mid_stream": [],
    "vllm_stop_sequence": ["END"],
    "empty_answer": [],
    "reasoning_and_comments": [],
}

_EVENT = re.compile(r"event: ([a-z_]+)\ndata: (\{[^\n]*\})\n\n")
_STOP_REASONS = {"end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"}


def translate_all(data: bytes, stops: list[str], cuts: list[int] | None = None) -> str:
    """Feed `data` cut at `cuts` (or whole), then close; return everything produced."""
    translator = ChatStreamTranslator(model=MODEL, stop_sequences=stops)
    out: list[str] = []
    start = 0
    for cut in sorted(set(cuts or [])):
        out.append(translator.feed(data[start:cut]))
        start = cut
    out.append(translator.feed(data[start:]))
    out.append(translator.close())
    assert translator.finished
    return "".join(out)


def parse_events(text: str) -> list[dict[str, Any]]:
    """Anthropic SSE text as its data objects, checking the framing on the way."""
    events: list[dict[str, Any]] = []
    position = 0
    while position < len(text):
        match = _EVENT.match(text, position)
        assert match is not None, f"bad framing at {position}: {text[position : position + 80]!r}"
        data = json.loads(match.group(2))
        assert data["type"] == match.group(1)
        events.append(data)
        position = match.end()
    return events


def check_event_order(
    events: list[dict[str, Any]], model: str | None = MODEL, *, ours: bool = True
) -> None:
    """Anthropic's stream grammar: start, blocks one after another, delta, stop (or an error).

    Args:
        events: The stream's events, parsed.
        model: The model ``message_start`` must name, if checked.
        ours: Our translation (ids start with ``msg_``); False for another server's stream.
    """
    if events[-1]["type"] == "error":
        assert all(e["type"] != "error" for e in events[:-1])
        events = events[:-1]
        if not events:
            return
        finished = False
    else:
        assert [e["type"] for e in events[-2:]] == ["message_delta", "message_stop"]
        finished = True
    assert events[0]["type"] == "message_start"
    message = events[0]["message"]
    assert message["id"].startswith("msg_") or not ours
    if model is not None:
        assert message["model"] == model
    assert message["content"] == []
    kinds: list[str] = []
    open_block: int | None = None
    for event in events[1 : -2 if finished else None]:
        kind = event["type"]
        if kind == "content_block_start":
            assert open_block is None
            assert event["index"] == len(kinds)
            kinds.append(event["content_block"]["type"])
            open_block = event["index"]
            if kinds[-1] == "tool_use":
                assert event["content_block"]["id"]
                assert event["content_block"]["input"] == {}
        elif kind == "content_block_delta":
            assert event["index"] == open_block
            expected = "text_delta" if kinds[event["index"]] == "text" else "input_json_delta"
            assert event["delta"]["type"] == expected
        elif kind == "content_block_stop":
            assert event["index"] == open_block
            open_block = None
        else:
            pytest.fail(f"unexpected {kind} inside the message")
    if finished:
        assert open_block is None
        assert kinds, "a finished message holds at least one block"
        delta = events[-2]
        assert delta["delta"]["stop_reason"] in _STOP_REASONS
        assert isinstance(delta["usage"]["output_tokens"], int)


def reference_blocks(data: bytes) -> list[dict[str, Any]]:
    """What the OpenAI stream says, accumulated naively: the blocks a client must end up with."""
    text = ""
    tools: dict[int, dict[str, Any]] = {}
    body = data.decode().replace("\r\n", "\n")
    for event in body.split("\n\n"):
        payload = "\n".join(line[6:] for line in event.split("\n") if line.startswith("data: "))
        if not payload or payload == "[DONE]":
            continue
        chunk = json.loads(payload)
        if "error" in chunk:
            break
        for choice in chunk.get("choices", []):
            delta = choice.get("delta", {})
            text += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                tool = tools.setdefault(call["index"], {"id": None, "name": "", "args": ""})
                tool["id"] = tool["id"] or call.get("id")
                tool["name"] += call.get("function", {}).get("name") or ""
                tool["args"] += call.get("function", {}).get("arguments") or ""
    blocks: list[dict[str, Any]] = []
    if text or not tools:
        blocks.append({"type": "text", "text": text})
    for _, tool in sorted(tools.items()):
        args = json.loads(tool["args"]) if tool["args"] else {}
        blocks.append({"type": "tool_use", "id": tool["id"], "name": tool["name"], "input": args})
    return blocks


def sdk_final_message(stream_text: str) -> anthropic.types.Message:
    """Serve `stream_text` to the anthropic SDK and return what its stream parser accumulated."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, content=stream_text.encode()
        )

    client = anthropic.Anthropic(
        api_key="test-key",
        base_url="http://relay.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        _strict_response_validation=True,
    )
    with client.messages.stream(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        for _ in stream:
            pass
        return stream.get_final_message()


def sdk_blocks(message: anthropic.types.Message) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for block in message.content:
        if block.type == "text":
            out.append({"type": "text", "text": block.text})
        else:
            assert block.type == "tool_use"
            out.append(
                {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
            )
    return out


# --- golden files ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    data = (GOLDEN / f"{case}.openai.sse").read_bytes()
    produced = translate_all(data, CASES[case])
    expected_file = GOLDEN / f"{case}.anthropic.sse"
    if os.environ.get("UPDATE_GOLDEN"):
        expected_file.write_text(produced, encoding="utf-8", newline="")
    assert produced == expected_file.read_text(encoding="utf-8")
    check_event_order(parse_events(produced))


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_byte_by_byte(case: str) -> None:
    data = (GOLDEN / f"{case}.openai.sse").read_bytes()
    whole = translate_all(data, CASES[case])
    assert translate_all(data, CASES[case], list(range(1, len(data)))) == whole


@settings(max_examples=200, database=None)
@given(st.sampled_from(sorted(CASES)), st.data())
def test_golden_any_split(case: str, data: st.DataObject) -> None:
    raw = (GOLDEN / f"{case}.openai.sse").read_bytes()
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=20))
    assert translate_all(raw, CASES[case], cuts) == translate_all(raw, CASES[case])


@pytest.mark.parametrize("case", sorted(c for c in CASES if c != "error_mid_stream"))
def test_the_sdk_accumulates_the_same_blocks(case: str) -> None:
    data = (GOLDEN / f"{case}.openai.sse").read_bytes()
    message = sdk_final_message(translate_all(data, CASES[case]))
    assert sdk_blocks(message) == reference_blocks(data)
    assert message.model == MODEL


def test_the_sdk_parses_the_usage_and_stop_reason() -> None:
    data = (GOLDEN / "openai_text_then_tools.openai.sse").read_bytes()
    message = sdk_final_message(translate_all(data, []))
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (81, 42)
    stop = (GOLDEN / "vllm_stop_sequence.openai.sse").read_bytes()
    message = sdk_final_message(translate_all(stop, ["END"]))
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")


def test_the_sdk_raises_on_a_mid_stream_error() -> None:
    data = (GOLDEN / "error_mid_stream.openai.sse").read_bytes()
    with pytest.raises(anthropic.APIStatusError, match="context window is full"):
        sdk_final_message(translate_all(data, []))


# --- incremental ---------------------------------------------------------------------------------


def test_each_event_is_translated_as_soon_as_it_is_complete() -> None:
    data = (GOLDEN / "openai_text_then_tools.openai.sse").read_text()
    events = [e + "\n\n" for e in data.split("\n\n") if e]
    translator = ChatStreamTranslator(model=MODEL)
    for event in events:
        # Everything but the event's last byte: nothing new can be complete yet.
        assert translator.feed(event[:-1]) == ""
        out = translator.feed(event[-1])
        payload = event[6:-2]
        if payload == "[DONE]":
            assert out == ""  # the usage chunk already finished the message
            continue
        assert out, f"nothing produced for {payload[:80]}"
        chunk = json.loads(payload)
        expected: list[dict[str, str]] = []
        for choice in chunk["choices"]:
            delta = choice["delta"]
            if delta.get("content"):
                expected.append({"type": "text_delta", "text": delta["content"]})
            for call in delta.get("tool_calls", ()):
                if call["function"].get("arguments"):
                    fragment = call["function"]["arguments"]
                    expected.append({"type": "input_json_delta", "partial_json": fragment})
        produced = parse_events(out)
        assert [e["delta"] for e in produced if e["type"] == "content_block_delta"] == expected
        if chunk.get("usage"):
            assert "event: message_stop" in out
    assert translator.close() == ""


def test_finish_closes_the_blocks_at_once_and_usage_ends_the_message() -> None:
    translator = ChatStreamTranslator(model=MODEL)
    translator.feed('data: {"id":"x","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n')
    out = translator.feed(
        'data: {"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    )
    assert [e["type"] for e in parse_events(out)] == ["content_block_stop"]
    out = translator.feed(
        'data: {"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
    )
    assert [e["type"] for e in parse_events(out)] == ["message_delta", "message_stop"]
    assert parse_events(out)[0]["usage"] == {"input_tokens": 3, "output_tokens": 1}
    assert (translator.input_tokens, translator.output_tokens) == (3, 1)


def test_a_tool_name_that_comes_late_is_waited_for() -> None:
    translator = ChatStreamTranslator(model=MODEL)
    out = translator.feed(
        'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1",'
        '"function":{"arguments":"{\\"a\\""}}]}}]}\n\n'
    )
    assert [e["type"] for e in parse_events(out)] == ["message_start"]
    out = translator.feed(
        'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,'
        '"function":{"name":"f","arguments":": 1}"}}]}}]}\n\n'
    )
    events = parse_events(out + translator.close())
    assert events[0]["content_block"] == {"type": "tool_use", "id": "c1", "name": "f", "input": {}}
    assert [e["delta"]["partial_json"] for e in events[1:3]] == ['{"a"', ": 1}"]
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


def test_an_empty_stream_still_ends_as_a_message() -> None:
    translator = ChatStreamTranslator(model=MODEL)
    events = parse_events(translator.close())
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    check_event_order(events)


# --- properties: any OpenAI stream ---------------------------------------------------------------


def _sse(obj: object) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


def _pieces(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(text) - 1)), max_size=4))))
    bounds = [0, *(c for c in cuts if c < len(text)), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@st.composite
def openai_streams(draw: st.DrawFn) -> bytes:
    cid = "chatcmpl-" + draw(st.text(alphabet="abcXYZ0189", min_size=1, max_size=8))

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    events = [_sse(chunk({"role": "assistant", "content": draw(st.sampled_from(["", None]))}))]
    for piece in draw(st.lists(st.text(min_size=1, max_size=10), max_size=5)):
        events.append(_sse(chunk({"content": piece})))
    calls = draw(st.integers(0, 3))
    for index in range(calls):
        args = json.dumps(
            draw(
                st.dictionaries(
                    st.text(max_size=5), st.integers() | st.text(max_size=8), max_size=3
                )
            )
        )
        fragments = _pieces(draw, args)
        first: dict[str, Any] = {
            "index": index,
            "id": f"call_{index}",
            "type": "function",
            "function": {"name": f"tool{index}", "arguments": ""},
        }
        if draw(st.booleans()):  # llama.cpp: the first delta carries arguments too
            first["function"]["arguments"] = fragments.pop(0) if fragments else ""
        events.append(_sse(chunk({"tool_calls": [first]})))
        for fragment in fragments:
            events.append(
                _sse(chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}))
            )
    finish = "tool_calls" if calls else draw(st.sampled_from(["stop", "length"]))
    events.append(_sse(chunk({}, finish)))
    if draw(st.booleans()):
        usage = {
            "prompt_tokens": draw(st.integers(0, 9999)),
            "completion_tokens": draw(st.integers(0, 999)),
        }
        events.append(_sse({"id": cid, "choices": [], "usage": usage}))
    if draw(st.booleans()):
        events.append(_sse("[DONE]"))
    return "".join(events).encode()


@settings(max_examples=150, database=None, deadline=None)
@given(openai_streams(), st.data())
def test_any_openai_stream_reaches_the_sdk_intact(raw: bytes, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=10))
    produced = translate_all(raw, [], cuts)
    events = parse_events(produced)
    check_event_order(events)
    assert sdk_blocks(sdk_final_message(produced)) == reference_blocks(raw)


def test_an_old_llamacpp_error_field_ends_the_stream_with_an_error_event() -> None:
    translator = ChatStreamTranslator(model=MODEL)
    out = translator.feed('data: {"id":"x","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n')
    out += translator.feed('error: {"code":500,"message":"slot crashed","type":"server_error"}\n\n')
    out += translator.close()
    events = parse_events(out)
    assert events[-1] == {
        "type": "error",
        "error": {"type": "api_error", "message": "slot crashed"},
    }
    check_event_order(events)


def test_a_whole_message_replayed_as_a_stream_parses_to_the_same_message() -> None:
    message = chat_to_message(
        {
            "id": "chatcmpl-1",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": "Checking é.",
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {
                                    "name": "get_weather",
                                    "arguments": '{"city": "Oslo"}',
                                },
                            }
                        ],
                    },
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 9},
        },
        model=MODEL,
    )
    text = message_to_sse(message)
    check_event_order(parse_events(text))
    parsed = sdk_final_message(text)
    assert sdk_blocks(parsed) == message["content"]
    assert parsed.id == message["id"]
    assert parsed.stop_reason == "tool_use"
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens) == (5, 9)
