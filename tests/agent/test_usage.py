"""Token counts from bodies and SSE streams."""

import json

import pytest

from agent.usage import StreamUsage, counts_from_body
from wire import TokenCounts


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}},
            TokenCounts(3, 4, 7),
        ),
        (
            {"type": "message", "usage": {"input_tokens": 5, "output_tokens": 6}},
            TokenCounts(5, 6, 11),
        ),
        (
            {
                "object": "response",
                "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
            },
            TokenCounts(1, 2, 3),
        ),
        ({"usage": {"prompt_tokens": 8, "total_tokens": 8}}, TokenCounts(8, None, 8)),
        ({"usage": None}, None),
        ({"usage": {"prompt_tokens": -1, "completion_tokens": True}}, None),
        ({"choices": []}, None),
    ],
)
def test_counts_from_body(body: object, expected: TokenCounts | None) -> None:
    assert counts_from_body(json.dumps(body).encode()) == expected
    assert counts_from_body(json.dumps(body)) == expected


def test_counts_from_non_json_body() -> None:
    assert counts_from_body(b'"usage" but not json') is None


def sse(obj: object, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(obj)}\n\n"


def test_openai_stream_final_usage_chunk() -> None:
    usage = StreamUsage()
    usage.feed(sse({"choices": [{"delta": {"content": "hi"}}], "usage": None}))
    usage.feed(
        sse(
            {
                "choices": [],
                "usage": {"prompt_tokens": 2, "completion_tokens": 9, "total_tokens": 11},
            }
        )
    )
    usage.feed("data: [DONE]\n\n")
    assert usage.counts() == TokenCounts(2, 9, 11)


def test_anthropic_stream_merges_start_and_delta() -> None:
    usage = StreamUsage()
    usage.feed(
        sse(
            {
                "type": "message_start",
                "message": {"usage": {"input_tokens": 12, "output_tokens": 1}},
            },
            "message_start",
        )
    )
    usage.feed(sse({"type": "content_block_delta", "delta": {"text": "x"}}))
    usage.feed(sse({"type": "message_delta", "usage": {"output_tokens": 30}}, "message_delta"))
    assert usage.counts() == TokenCounts(12, 30, 42)


def test_responses_stream_completed_event() -> None:
    usage = StreamUsage()
    usage.feed(sse({"type": "response.created", "response": {"usage": None}}))
    usage.feed(
        sse(
            {
                "type": "response.completed",
                "response": {"usage": {"input_tokens": 4, "output_tokens": 5, "total_tokens": 9}},
            }
        )
    )
    assert usage.counts() == TokenCounts(4, 5, 9)


def test_event_split_across_reads_is_seen_whole() -> None:
    text = sse({"usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})
    usage = StreamUsage()
    for cut in (5, 17, 30):  # split inside "data:", inside "usage", inside the numbers
        usage = StreamUsage()
        usage.feed(text[:cut])
        assert usage.counts() is None
        usage.feed(text[cut:])
        assert usage.counts() == TokenCounts(1, 2, 3)


def test_stream_without_usage() -> None:
    usage = StreamUsage()
    usage.feed(sse({"choices": [{"delta": {"content": "usage"}}]}))
    assert usage.counts() is None


def test_anthropic_cache_fields_count_as_prompt_and_apart() -> None:
    """llama.cpp on a cached Claude Code turn: 1 uncached token, 3031 read from the cache."""
    usage = StreamUsage()
    usage.feed(
        sse(
            {
                "type": "message_start",
                "message": {
                    "usage": {
                        "input_tokens": 1,
                        "cache_read_input_tokens": 3031,
                        "cache_creation_input_tokens": 7,
                        "output_tokens": 0,
                    }
                },
            },
            "message_start",
        )
    )
    usage.feed(sse({"type": "message_delta", "usage": {"output_tokens": 5}}, "message_delta"))
    assert usage.counts() == TokenCounts(3039, 5, 3044, 3031, 7)
    body = {"type": "message", "usage": {"input_tokens": 2, "cache_read_input_tokens": 10}}
    assert counts_from_body(json.dumps(body)) == TokenCounts(12, None, None, 10, None)


def test_openai_cached_tokens_are_already_in_the_prompt() -> None:
    body = {
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 4,
            "total_tokens": 104,
            "prompt_tokens_details": {"cached_tokens": 96},
        }
    }
    assert counts_from_body(json.dumps(body)) == TokenCounts(100, 4, 104, 96, None)
