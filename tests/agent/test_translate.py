"""agent/translate.py without streams: requests, whole responses, errors, the token estimate.

Property tests (hypothesis) generate valid Anthropic Messages requests and
check that the translation never raises and is valid OpenAI chat: roles,
tool calls answered by tool messages right after them, JSON-serialisable,
nothing Anthropic-only left over, no text lost. The anthropic SDK itself
parses our translated answers with strict validation.
"""

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.translate import (
    TOKEN_ESTIMATE_HEADER,
    TOKEN_ESTIMATE_METHOD,
    TranslationError,
    anthropic_error_type,
    chat_to_message,
    error_to_anthropic,
    estimate_input_tokens,
    request_to_chat,
    stop_reason_for,
)

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "cache_control": {"type": "ephemeral"},
}


def sdk_client(handler: Callable[[httpx2.Request], httpx2.Response]) -> anthropic.Anthropic:
    """An Anthropic client whose HTTP answers come from `handler` (our translated bytes)."""
    return anthropic.Anthropic(
        api_key="test-key",
        base_url="http://relay.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        _strict_response_validation=True,
    )


# --- requests: examples ---------------------------------------------------------------------


def test_claude_code_shaped_request() -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 512,
        "system": [
            {
                "type": "text",
                "text": "You are Claude Code.",
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "text", "text": "Be brief."},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                    {
                        "type": "text",
                        "text": "Weather in Paris?",
                        "cache_control": {"type": "ephemeral"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "call the tool", "signature": "sig"},
                    {"type": "text", "text": "Checking."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": "21 C, sunny"},
                    {"type": "text", "text": "Thanks!"},
                ],
            },
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "auto"},
        "metadata": {"user_id": "u-1"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "temperature": 0.2,
        "stream": True,
    }
    chat = request_to_chat(body)
    assert chat == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 512,
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "You are Claude Code.\n\nBe brief."},
            {
                "role": "user",
                "content": "<system-reminder>ctx</system-reminder>\n\nWeather in Paris?",
            },
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "toolu_01",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_01", "content": "21 C, sunny"},
            {"role": "user", "content": "Thanks!"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": WEATHER_TOOL["input_schema"],
                    "description": "Current weather in a city.",
                },
            }
        ],
        "tool_choice": "auto",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_system_as_string_and_sampling_options() -> None:
    chat = request_to_chat(
        {
            "model": "m",
            "system": "Be terse.",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 5,
            "stop_sequences": ["\n\nHuman:", "END"],
            "top_p": 0.9,
            "top_k": 40,
        }
    )
    assert chat["messages"][0] == {"role": "system", "content": "Be terse."}
    assert chat["stop"] == ["\n\nHuman:", "END"]
    assert chat["top_p"] == 0.9
    assert chat["top_k"] == 40  # llama.cpp, vLLM, LM Studio and Ollama take it on this route
    assert "stream" not in chat
    assert "stream_options" not in chat


def test_images_base64_and_url() -> None:
    chat = request_to_chat(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/jpeg",
                                "data": "AAAA",
                            },
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                        {"type": "text", "text": "What is this?"},
                    ],
                }
            ]
        }
    )
    assert chat["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                {"type": "text", "text": "What is this?"},
            ],
        }
    ]


def test_tool_results_blocks_errors_and_images() -> None:
    chat = request_to_chat(
        {
            "messages": [
                {"role": "user", "content": "go"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "t1", "name": "a", "input": {}},
                        {"type": "tool_use", "id": "t2", "name": "b", "input": {"x": [1, "é"]}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [
                                {"type": "text", "text": "one"},
                                {"type": "text", "text": "two"},
                            ],
                        },
                        {
                            "type": "tool_result",
                            "tool_use_id": "t2",
                            "is_error": True,
                            "content": [
                                {"type": "text", "text": "no such file"},
                                {
                                    "type": "image",
                                    "source": {
                                        "type": "base64",
                                        "media_type": "image/png",
                                        "data": "QQ==",
                                    },
                                },
                            ],
                        },
                    ],
                },
            ]
        }
    )
    assistant, first, second, user = chat["messages"][1:]
    assert assistant["content"] is None
    assert [c["function"]["arguments"] for c in assistant["tool_calls"]] == [
        "{}",
        '{"x": [1, "é"]}',
    ]
    assert first == {"role": "tool", "tool_call_id": "t1", "content": "one\n\ntwo"}
    assert second["tool_call_id"] == "t2"
    assert second["content"].startswith("Error: no such file")
    # OpenAI tool messages carry text only: the image follows in a user message.
    assert user == {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,QQ=="}}],
    }


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any"}, "required", None),
        ({"type": "none"}, "none", None),
        (
            {"type": "tool", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
            None,
        ),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: object, parallel: bool | None) -> None:
    chat = request_to_chat(
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": [WEATHER_TOOL],
            "tool_choice": choice,
        }
    )
    assert chat["tool_choice"] == expected
    assert chat.get("parallel_tool_calls") == parallel


def test_server_tools_are_dropped_and_tool_choice_needs_tools() -> None:
    chat = request_to_chat(
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}],
            "tool_choice": {"type": "any"},
        }
    )
    assert "tools" not in chat
    assert "tool_choice" not in chat


def test_unknown_fields_pass_through_and_anthropic_only_fields_are_dropped() -> None:
    chat = request_to_chat(
        {
            "messages": [{"role": "user", "content": "x"}],
            "metadata": {"user_id": "u"},
            "service_tier": "auto",
            "context_management": {"edits": []},
            "fake": {"chunks": 2},
            "seed": 7,
        }
    )
    assert chat["fake"] == {"chunks": 2}
    assert chat["seed"] == 7
    for key in ("metadata", "service_tier", "context_management"):
        assert key not in chat


def test_documents_and_unsupported_sources_leave_a_visible_note() -> None:
    chat = request_to_chat(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {"type": "text", "media_type": "text/plain", "data": "notes"},
                        },
                        {
                            "type": "document",
                            "title": "spec.pdf",
                            "source": {"type": "base64", "data": "JVBE"},
                        },
                        {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
                    ],
                }
            ]
        }
    )
    content = chat["messages"][0]["content"]
    assert content.startswith("notes\n\n[document 'spec.pdf' omitted")
    assert "[image omitted" in content


def test_mid_conversation_system_message_stays_in_place() -> None:
    """Claude Code sends ``{"role": "system"}`` between turns: an OpenAI system message there."""
    chat = request_to_chat(
        {
            "system": "Top.",
            "messages": [
                {"role": "user", "content": "hi"},
                {
                    "role": "system",
                    "content": [
                        {"type": "text", "text": "Mid.", "cache_control": {"type": "ephemeral"}},
                        {"type": "text", "text": "More."},
                    ],
                },
                {"role": "assistant", "content": "ok"},
                {"role": "system", "content": "Plain."},
            ],
        }
    )
    assert chat["messages"] == [
        {"role": "system", "content": "Top."},
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "Mid.\n\nMore."},
        {"role": "assistant", "content": "ok"},
        {"role": "system", "content": "Plain."},
    ]


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"model": "m"},
        {"messages": "hi"},
        {"messages": [{"role": "developer", "content": "x"}]},
        {"messages": [{"role": "system", "content": 5}]},
        {"messages": [{"role": "user"}]},
        {"messages": [{"role": "user", "content": ["text"]}]},
        {"messages": [{"role": "user", "content": "x"}], "system": 5},
    ],
)
def test_invalid_shapes_raise_translation_error(body: object) -> None:
    with pytest.raises(TranslationError):
        request_to_chat(body)  # type: ignore[arg-type]


# --- requests: properties ----------------------------------------------------------------------

_texts = st.text(max_size=40)
_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=8,
)
_cache = st.sampled_from([{}, {"cache_control": {"type": "ephemeral"}}])


def _text_block(text: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {"type": "text", "text": text, **extra}


_text_blocks = st.builds(_text_block, _texts, _cache)
_images = st.one_of(
    st.builds(
        lambda mt, data: {
            "type": "image",
            "source": {"type": "base64", "media_type": mt, "data": data},
        },
        st.sampled_from(["image/png", "image/jpeg", "image/gif", "image/webp"]),
        st.text(alphabet="ABCDEFabcdef0123456789+/=", max_size=20),
    ),
    st.builds(
        lambda url: {"type": "image", "source": {"type": "url", "url": url}},
        st.sampled_from(["https://example.test/cat.png", "http://h/x.jpg"]),
    ),
)
_user_blocks = st.lists(st.one_of(_text_blocks, _images), max_size=3)
_tool_result_content = st.one_of(
    _texts, st.lists(st.one_of(_text_blocks, _images), max_size=3), st.none()
)


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Valid Anthropic message lists: alternating turns, every tool_use answered next turn."""
    messages: list[dict[str, Any]] = []
    pending: list[str] = []
    used_ids: set[str] = set()
    turns = draw(st.integers(1, 6))
    for turn in range(turns):
        if turn % 2 == 0:  # user
            content: list[dict[str, Any]] = []
            for tool_id in pending:
                result: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_id}
                value = draw(_tool_result_content)
                if value is not None:
                    result["content"] = value
                if draw(st.booleans()):
                    result["is_error"] = draw(st.booleans())
                content.append(result)
            pending = []
            content.extend(draw(_user_blocks))
            if not content:
                messages.append({"role": "user", "content": draw(_texts)})
            else:
                messages.append({"role": "user", "content": content})
        else:  # assistant
            if draw(st.booleans()):
                messages.append({"role": "assistant", "content": draw(_texts)})
                continue
            blocks: list[dict[str, Any]] = []
            if draw(st.booleans()):
                blocks.append({"type": "thinking", "thinking": draw(_texts), "signature": "sig"})
            blocks.extend(draw(st.lists(_text_blocks, max_size=2)))
            is_last = turn == turns - 1
            for _ in range(0 if is_last else draw(st.integers(0, 3))):
                tool_id = "toolu_" + draw(_ids.filter(lambda i: "toolu_" + i not in used_ids))
                used_ids.add(tool_id)
                pending.append(tool_id)
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": tool_id,
                        "name": draw(st.sampled_from(["get_weather", "bash", "read_file"])),
                        "input": draw(st.dictionaries(_texts, _json_values, max_size=3)),
                    }
                )
            messages.append({"role": "assistant", "content": blocks})
    return messages


_tools = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(["get_weather", "bash", "read_file"]),
            "input_schema": st.just({"type": "object", "properties": {"x": {"type": "string"}}}),
        },
        optional={"description": _texts, "cache_control": st.just({"type": "ephemeral"})},
    ),
    max_size=3,
    unique_by=lambda t: str(t["name"]),
)


@st.composite
def anthropic_requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": draw(st.sampled_from(["claude-sonnet-4-5", "smollm2", "m"])),
        "messages": draw(conversations()),
        "max_tokens": draw(st.integers(1, 100_000)),
    }
    system = draw(st.one_of(st.none(), _texts, st.lists(_text_blocks, max_size=3)))
    if system is not None:
        body["system"] = system
    tools = draw(_tools)
    if tools:
        body["tools"] = tools
        body["tool_choice"] = draw(
            st.one_of(
                st.just({"type": "auto"}),
                st.just({"type": "any"}),
                st.just({"type": "none"}),
                st.sampled_from([{"type": "tool", "name": t["name"]} for t in tools]),
            )
        )
    optional = {
        "stop_sequences": st.lists(st.text(min_size=1, max_size=5), max_size=3),
        "temperature": st.floats(0, 1),
        "top_p": st.floats(0, 1),
        "top_k": st.integers(1, 100),
        "stream": st.booleans(),
        "metadata": st.just({"user_id": "user-1"}),
        "thinking": st.just({"type": "enabled", "budget_tokens": 1024}),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    return body


def _input_texts(body: dict[str, Any]) -> Iterator[str]:
    """Every text a model should still see after translation (thinking excepted)."""
    system = body.get("system")
    if isinstance(system, str):
        yield system
    elif isinstance(system, list):
        yield from (b["text"] for b in system)
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):
            yield content
            continue
        for block in content:
            if block["type"] == "text":
                yield block["text"]
            elif block["type"] == "tool_result":
                inner = block.get("content")
                if isinstance(inner, str):
                    yield inner
                elif isinstance(inner, list):
                    yield from (b["text"] for b in inner if b["type"] == "text")


def _output_text(chat: dict[str, Any]) -> str:
    pieces: list[str] = []
    for message in chat["messages"]:
        content = message.get("content")
        if isinstance(content, str):
            pieces.append(content)
        elif isinstance(content, list):
            pieces.extend(p["text"] for p in content if p["type"] == "text")
    return "\x00".join(pieces)


def assert_valid_openai_chat(chat: dict[str, Any]) -> None:
    """The structural rules an OpenAI-compatible server checks."""
    assert json.loads(json.dumps(chat)) == chat
    messages = chat["messages"]
    assert isinstance(messages, list)
    assert messages
    open_calls: list[str] = []  # tool calls of the last assistant message not yet answered
    for position, message in enumerate(messages):
        role = message["role"]
        assert role in {"system", "user", "assistant", "tool"}
        if role == "system":
            assert position == 0
            assert isinstance(message["content"], str)
        if role != "tool":
            # Every tool call is answered before anything else is said.
            assert not open_calls, (position, open_calls)
        if role == "user":
            content = message["content"]
            if isinstance(content, list):
                for part in content:
                    assert part["type"] in {"text", "image_url"}
                    if part["type"] == "image_url":
                        assert isinstance(part["image_url"]["url"], str)
                    else:
                        assert isinstance(part["text"], str)
            else:
                assert isinstance(content, str)
        elif role == "assistant":
            calls = message.get("tool_calls")
            if message["content"] is None:
                assert calls
            else:
                assert isinstance(message["content"], str)
            for call in calls or ():
                assert call["type"] == "function"
                assert isinstance(call["id"], str)
                assert call["id"]
                assert isinstance(call["function"]["name"], str)
                assert isinstance(json.loads(call["function"]["arguments"]), dict)
            open_calls = [c["id"] for c in calls or ()]
        elif role == "tool":
            assert message["tool_call_id"] in open_calls, (position, message, open_calls)
            open_calls.remove(message["tool_call_id"])
            assert isinstance(message["content"], str)
    names = {t["function"]["name"] for t in chat.get("tools", ())}
    for tool in chat.get("tools", ()):
        assert tool["type"] == "function"
        assert isinstance(tool["function"]["parameters"], dict)
        assert "cache_control" not in tool
    if "tool_choice" in chat:
        assert names
        choice = chat["tool_choice"]
        assert choice in ("auto", "required", "none") or choice["function"]["name"] in names
    if chat.get("stream"):
        assert chat["stream_options"] == {"include_usage": True}
    for key in ("system", "stop_sequences", "metadata", "thinking"):
        assert key not in chat
    assert '"cache_control"' not in json.dumps(chat["messages"])


@settings(max_examples=300, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(anthropic_requests())
def test_any_valid_request_translates_to_valid_openai_chat(body: dict[str, Any]) -> None:
    before = json.dumps(body)
    chat = request_to_chat(body)
    assert json.dumps(body) == before  # the input is not modified
    assert_valid_openai_chat(chat)
    assert chat["model"] == body["model"]
    assert chat["max_tokens"] == body["max_tokens"]
    assert chat.get("stop", []) == body.get("stop_sequences", [])
    output = _output_text(chat)
    for text in _input_texts(body):
        assert text in output
    # Every tool_use of the input is a tool call with the same id and input.
    calls = {
        call["id"]: json.loads(call["function"]["arguments"])
        for message in chat["messages"]
        for call in message.get("tool_calls", ())
    }
    for message in body["messages"]:
        if isinstance(message["content"], list):
            for block in message["content"]:
                if block["type"] == "tool_use":
                    assert calls[block["id"]] == block["input"]


@settings(max_examples=100, database=None)
@given(anthropic_requests())
def test_estimate_is_positive_and_grows_with_text(body: dict[str, Any]) -> None:
    base = estimate_input_tokens(body)
    assert base >= 1
    longer = dict(body, messages=[*body["messages"], {"role": "user", "content": "x" * 400}])
    assert estimate_input_tokens(longer) >= base + 99


# --- responses -------------------------------------------------------------------------------


def chat_completion(
    message: dict[str, Any], finish: str | None = "stop", **extra: object
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1,
        "model": "backend-name",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, **extra}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


def test_text_answer() -> None:
    message = chat_to_message(
        chat_completion({"role": "assistant", "content": "Hello!"}), model="claude-x"
    )
    assert message == {
        "id": "msg_abc123",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": 7},
    }


def test_tool_calls_answer_with_good_and_bad_arguments() -> None:
    message = chat_to_message(
        chat_completion(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "bash", "arguments": '{"cmd": "ls'},
                    },
                    {
                        "id": "call_3",
                        "type": "function",
                        "function": {"name": "noop", "arguments": ""},
                    },
                    {
                        "id": "call_4",
                        "type": "function",
                        "function": {"name": "list", "arguments": "[1, 2]"},
                    },
                ],
            },
            finish="tool_calls",
        ),
        model="m",
    )
    assert message["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {
            "type": "tool_use",
            "id": "call_2",
            "name": "bash",
            "input": {"_raw_arguments": '{"cmd": "ls'},
        },
        {"type": "tool_use", "id": "call_3", "name": "noop", "input": {}},
        {"type": "tool_use", "id": "call_4", "name": "list", "input": {"_raw_arguments": "[1, 2]"}},
    ]
    assert message["stop_reason"] == "tool_use"


def test_text_and_tool_call_and_a_server_that_says_stop() -> None:
    message = chat_to_message(
        chat_completion(
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            finish="stop",
        ),
        model="m",
    )
    assert [b["type"] for b in message["content"]] == ["text", "tool_use"]
    assert message["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("finish", "matched", "expected"),
    [
        ("stop", None, ("end_turn", None)),
        ("length", None, ("max_tokens", None)),
        ("tool_calls", None, ("tool_use", None)),
        ("function_call", None, ("tool_use", None)),
        ("content_filter", None, ("refusal", None)),
        ("stop", "END", ("stop_sequence", "END")),  # vLLM names the stop string
        ("stop", 2, ("end_turn", None)),  # vLLM: a stop token id, not one of ours
        ("stop", "OTHER", ("end_turn", None)),
        (None, None, ("end_turn", None)),
        ("weird", None, ("end_turn", None)),
    ],
)
def test_finish_reasons(finish: object, matched: object, expected: tuple[str, str | None]) -> None:
    assert stop_reason_for(finish, matched, ["END"]) == expected


def test_missing_usage_counts_zero_and_content_parts_are_joined() -> None:
    chat = chat_completion(
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        }
    )
    del chat["usage"]
    chat["id"] = None
    message = chat_to_message(chat, model="m")
    assert message["content"] == [{"type": "text", "text": "ab"}]
    assert message["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert message["id"].startswith("msg_")


@pytest.mark.parametrize(
    "chat", [{}, {"choices": []}, {"choices": [{"index": 0}]}, {"choices": "x"}]
)
def test_answer_without_a_message_raises(chat: dict[str, Any]) -> None:
    with pytest.raises(TranslationError):
        chat_to_message(chat, model="m")


def test_the_sdk_parses_translated_answers_strictly() -> None:
    answers = [
        chat_completion({"role": "assistant", "content": "Hi."}),
        chat_completion(
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            finish="tool_calls",
        ),
        chat_completion({"role": "assistant", "content": ""}, finish="length"),
    ]
    bodies = iter(json.dumps(chat_to_message(a, model="claude-test")).encode() for a in answers)

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, headers={"content-type": "application/json"}, content=next(bodies)
        )

    client = sdk_client(handler)
    kwargs: Any = {
        "model": "claude-test",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "x"}],
    }
    first = client.messages.create(**kwargs)
    second = client.messages.create(**kwargs)
    third = client.messages.create(**kwargs)
    assert first.content[0].type == "text"
    assert first.content[0].text == "Hi."
    assert [b.type for b in second.content] == ["text", "tool_use"]
    tool = second.content[1]
    assert tool.type == "tool_use"
    assert tool.input == {"city": "Oslo"}
    assert second.stop_reason == "tool_use"
    assert third.stop_reason == "max_tokens"
    assert third.usage.input_tokens == 11


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (
            400,
            {"error": {"message": "bad 'messages'", "type": "invalid_request_error", "code": 400}},
            "bad 'messages'",
        ),
        (404, {"detail": "Not Found"}, "Not Found"),
        (
            422,
            {"detail": [{"loc": ["body", "x"], "msg": "field required"}]},
            '[{"loc": ["body", "x"], "msg": "field required"}]',
        ),
        (503, {"error": "Loading model"}, "Loading model"),
        (500, "upstream crashed\n", "upstream crashed"),
        (502, "", "the backend answered HTTP 502"),
    ],
)
def test_errors_become_anthropic_errors(status: int, body: object, message: str) -> None:
    raw = body if isinstance(body, str) else json.dumps(body)
    out = json.loads(error_to_anthropic(status, raw.encode()))
    assert out == {
        "type": "error",
        "error": {"type": anthropic_error_type(status), "message": message},
    }


def test_error_types_by_status() -> None:
    assert anthropic_error_type(400) == "invalid_request_error"
    assert anthropic_error_type(401) == "authentication_error"
    assert anthropic_error_type(403) == "permission_error"
    assert anthropic_error_type(404) == "not_found_error"
    assert anthropic_error_type(413) == "request_too_large"
    assert anthropic_error_type(418) == "invalid_request_error"
    assert anthropic_error_type(429) == "rate_limit_error"
    assert anthropic_error_type(500) == "api_error"
    assert anthropic_error_type(503) == "overloaded_error"


def test_the_sdk_raises_its_own_error_with_the_backends_message() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        body = error_to_anthropic(429, b'{"error": {"message": "slow down", "type": "rate_limit"}}')
        return httpx2.Response(
            429, headers={"content-type": "application/json"}, content=body.encode()
        )

    with pytest.raises(anthropic.RateLimitError, match="slow down"):
        sdk_client(handler).messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )


# --- count_tokens ----------------------------------------------------------------------------


def test_estimate_counts_four_characters_a_token_over_everything() -> None:
    body = {
        "model": "m",
        "system": [{"type": "text", "text": "s" * 40}],
        "messages": [
            {"role": "user", "content": "u" * 100},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "abcd", "input": {"k": "v"}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [{"type": "text", "text": "r" * 20}],
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/i.png"}},
                ],
            },
        ],
        "tools": [WEATHER_TOOL],
    }
    tool_chars = len(json.dumps(WEATHER_TOOL, separators=(",", ":")))
    chars = 40 + 100 + len("abcd") + len('{"k": "v"}') + 20 + tool_chars
    assert estimate_input_tokens(body) == math.ceil(chars / 4) + 1600
    assert estimate_input_tokens({"messages": []}) == 1
    assert (TOKEN_ESTIMATE_HEADER, TOKEN_ESTIMATE_METHOD) == (
        "x-modelrelay-token-estimate",
        "chars/4",
    )


# --- a real Claude Code request --------------------------------------------------------------

# Recorded by tests/e2e/test_claude_code.py's own backend (tests/e2e/recording_proxy.py):
# Claude Code 2.1.197's first request of `claude -p`, as it reached the backend.
CLAUDE_CODE_REQUEST = Path(__file__).parent / "golden" / "claude_code_2.1.197.request.json"


def test_a_recorded_claude_code_request_translates() -> None:
    body = json.loads(CLAUDE_CODE_REQUEST.read_text())
    # What made it hard: all of it in one body.
    assert {"thinking", "context_management", "output_config"} <= body.keys()
    assert len(body["tools"]) == 24
    assert [m["role"] for m in body["messages"]] == ["user", "system"]
    chat = request_to_chat(body)
    roles = [m["role"] for m in chat["messages"]]
    assert roles == ["system", "user", "system"]
    assert chat["messages"][2]["content"].startswith("Available agent types")
    assert len(chat["tools"]) == 24
    assert all(t["type"] == "function" and t["function"]["parameters"] for t in chat["tools"])
    text = json.dumps(chat)
    assert "cache_control" not in text
    for dropped in ("thinking", "context_management", "output_config", "metadata"):
        assert dropped not in chat
    assert chat["stream"] is True
    assert chat["stream_options"] == {"include_usage": True}
