"""Tests for wire.limits: the shared constants and the header allowlist."""

import pytest

from wire import (
    AGENT_RELAY_SILENCE_SECS,
    CANCEL_GRACE_SECS,
    CAPABILITY_DRAIN,
    DEFAULT_HEARTBEAT_INTERVAL_SECS,
    DEFAULT_HEARTBEAT_TIMEOUT_SECS,
    DEFAULT_MAX_RECEIVE_FRAME_BYTES,
    FORWARDED_HEADERS,
    MAX_MODELS_PER_WORKER,
    MAX_SEND_FRAME_BYTES,
    filter_headers,
)


def test_constants_match_the_spec() -> None:
    assert MAX_SEND_FRAME_BYTES == 16 * 1024 * 1024
    assert DEFAULT_MAX_RECEIVE_FRAME_BYTES == 64 * 1024 * 1024
    assert MAX_SEND_FRAME_BYTES < DEFAULT_MAX_RECEIVE_FRAME_BYTES
    assert DEFAULT_HEARTBEAT_INTERVAL_SECS == 15.0
    assert DEFAULT_HEARTBEAT_TIMEOUT_SECS == 45.0
    assert AGENT_RELAY_SILENCE_SECS == 90.0
    assert CANCEL_GRACE_SECS == 5.0
    assert MAX_MODELS_PER_WORKER == 256
    assert CAPABILITY_DRAIN == "drain"


def test_forwarded_headers_are_the_spec_allowlist() -> None:
    assert (
        frozenset(
            {
                "content-type",
                "accept",
                "authorization",
                "openai-organization",
                "openai-beta",
                "x-api-key",
                "anthropic-version",
                "anthropic-beta",
            }
        )
        == FORWARDED_HEADERS
    )
    assert all(name == name.lower() for name in FORWARDED_HEADERS)


def test_filter_headers_keeps_only_the_allowlist_lower_cased() -> None:
    headers = [
        ("Content-Type", "application/json"),
        ("Authorization", "Bearer client-key"),
        ("X-Trace-Id", "trace-1"),
        ("Cookie", "session=1"),
        ("Host", "relay.example"),
        ("Anthropic-Version", "2023-06-01"),
        ("X-API-KEY", "k"),
        ("Content-Length", "12"),
    ]
    assert filter_headers(headers) == {
        "content-type": "application/json",
        "authorization": "Bearer client-key",
        "anthropic-version": "2023-06-01",
        "x-api-key": "k",
    }


def test_filter_headers_drop_removes_more_in_any_case() -> None:
    headers = {"authorization": "Bearer relay-key", "accept": "text/event-stream"}
    assert filter_headers(headers.items(), drop=frozenset({"Authorization"})) == {
        "accept": "text/event-stream"
    }
    # Names outside the allowlist in `drop` change nothing.
    assert filter_headers(headers.items(), drop=frozenset({"x-unrelated"})) == headers


def test_filter_headers_joins_repeated_names_in_order() -> None:
    headers = [("Accept", "application/json"), ("accept", "text/event-stream")]
    assert filter_headers(headers) == {"accept": "application/json, text/event-stream"}


def test_filter_headers_returns_a_new_dict() -> None:
    original = {"accept": "a"}
    filtered = filter_headers(original.items())
    filtered["accept"] = "b"
    assert original == {"accept": "a"}


@pytest.mark.parametrize("headers", [[], {}.items(), iter(())])
def test_filter_headers_empty(headers: list[tuple[str, str]]) -> None:
    assert filter_headers(headers) == {}
