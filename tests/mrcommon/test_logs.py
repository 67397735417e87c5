"""The level spec and the text-line escaping both daemons share."""

import json
import logging
import re

import pytest

from mrcommon.logs import escape_controls, extra_fields, parse_level_spec, text_value


def test_parse_level_spec() -> None:
    assert parse_level_spec("debug") == (logging.DEBUG, {})
    assert parse_level_spec("") == (logging.INFO, {})
    assert parse_level_spec("agent=debug,httpx=warning") == (
        logging.INFO,
        {"agent": logging.DEBUG, "httpx": logging.WARNING},
    )
    assert parse_level_spec("warn, agent::session=trace, trio-websocket=info") == (
        logging.WARNING,
        {"agent.session": logging.DEBUG, "trio_websocket": logging.INFO},
    )
    assert parse_level_spec("ERROR,relay=Off,hypercorn=fatal") == (
        logging.ERROR,
        {"relay": logging.CRITICAL + 10, "hypercorn": logging.CRITICAL},
    )


@pytest.mark.parametrize(
    ("spec", "own", "expected"),
    [
        ("modelrelay_server=debug", "relay", {"relay": logging.DEBUG}),
        ("modelrelay-worker=trace", "agent", {"agent": logging.DEBUG}),
        ("modelrelay_server=debug", None, {"modelrelay_server": logging.DEBUG}),
    ],
)
def test_upstream_crate_names_mean_the_daemon(
    spec: str, own: str | None, expected: dict[str, int]
) -> None:
    assert parse_level_spec(spec, own_target=own) == (logging.INFO, expected)


@pytest.mark.parametrize(
    ("spec", "message"),
    [("agent=loud", "unknown level 'loud'"), ("=debug", "empty target"), ("x=", "unknown level")],
)
def test_a_bad_spec_says_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_level_spec(spec)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("plain", "plain"),
        (200, "200"),
        (None, "None"),
        (["a", "b"], "a,b"),
        ("", '""'),
        ("two words", '"two words"'),
        ("a=b", '"a=b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("C:\\models", "C:\\models"),  # printable, nothing to split on: as it is
        ("é/ü", "é/ü"),
        ("/v1/x\nINFO forged", '"/v1/x\\nINFO forged"'),
        ("a\rb", '"a\\rb"'),
        ("a\tb", '"a\\tb"'),
        ("esc\x1b[2J", '"esc\\u001b[2J"'),
        ("nel\x85", '"nel\\u0085"'),
        ("ls\u2028ps\u2029", '"ls\\u2028ps\\u2029"'),
        ("bidi\u202e", '"bidi\\u202e"'),
        ("a\\b c", '"a\\\\b c"'),
    ],
)
def test_text_value(value: object, shown: str) -> None:
    assert text_value(value) == shown


@pytest.mark.parametrize(
    "text",
    ["", "two words", "/v1/x\nforged", "\x00\x7f\x85\u2028\U000e0001", 'q"\\"', "a=b\tc"],
)
def test_a_quoted_value_is_a_json_string_on_one_line(text: str) -> None:
    shown = text_value(text)
    assert shown.isprintable()
    assert json.loads(shown) == text


def test_a_line_splits_back_into_its_pairs() -> None:
    values = {"path": "/v1/x\nforged=1", "model": "m 1", "n": "3"}
    line = " ".join(f"{k}={text_value(v)}" for k, v in values.items())
    pairs = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)(?: |$)', line))
    assert {k: json.loads(v) if v.startswith('"') else v for k, v in pairs.items()} == values


def test_escape_controls_keeps_printable_text_as_it_is() -> None:
    assert escape_controls('bad path "x y"') == 'bad path "x y"'
    assert escape_controls("a\nb\r\x1b") == "a\\nb\\r\\u001b"


def test_extra_fields() -> None:
    # What ``extra=`` puts on a record: plain attributes, a private one among them.
    record = logging.makeLogRecord(
        {"name": "x", "msg": "event", "status": 200, "error": None, "_private": 1}
    )
    assert extra_fields(record) == {"status": 200, "error": None}
    assert extra_fields(record, skip_none=True) == {"status": 200}
