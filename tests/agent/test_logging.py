"""Log configuration and line formats."""

import json
import logging
import sys

import pytest

from agent.logging import (
    JsonFormatter,
    TextFormatter,
    bind_log_context,
    configure_logging,
)

# configure_logging changes process-wide state: put it back after each test.
pytestmark = pytest.mark.usefixtures("restore_logging")


def test_text_and_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    logger = logging.getLogger("agent.test")
    with bind_log_context(request_id="r-1"):
        logger.info("request finished", extra={"status": 200, "model": "m 1"})
    line = capsys.readouterr().err.strip()
    obj = json.loads(line)
    assert obj["event"] == "request finished"
    assert obj["level"] == "info"
    assert obj["request_id"] == "r-1"
    assert obj["status"] == 200
    assert obj["timestamp"].endswith("Z")

    configure_logging("info", "text")
    with bind_log_context(worker_id="w-1"):
        logger.info("registered", extra={"models": ["a", "b"], "note": "two words"})
    text = capsys.readouterr().err.strip()
    assert text.count("\n") == 0
    _, level, name, rest = text.split(" ", 3)
    assert (level, name) == ("INFO", "agent.test")
    assert rest == 'registered models=a,b note="two words" worker_id=w-1'


def test_quiet_libraries_and_targets(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("debug", "text")
    assert logging.getLogger("httpx").level == logging.WARNING
    assert logging.getLogger().level == logging.DEBUG
    configure_logging("info,httpx=debug", "text")
    assert logging.getLogger("httpx").level == logging.DEBUG
    configure_logging("info", "text")  # reconfiguring replaces the handler, not adds one
    assert sum(type(h).__name__ == "_AgentHandler" for h in logging.getLogger().handlers) == 1


def test_formatters_render_exceptions() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    assert "ValueError: boom" in TextFormatter().format(record)
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exception"]


def test_a_value_or_event_cannot_forge_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A path with ``%0a`` in it (decoded: a newline) stays on the request's line."""
    configure_logging("info", "text")
    forged = "/v1/x\n2026-01-01T00:00:00.000Z INFO agent.session drained\r"
    logging.getLogger("agent.test").info(
        "bad path %s", forged, extra={"endpoint": forged, "tab": "a\tb"}
    )
    text = capsys.readouterr().err
    assert text.count("\n") == 1  # the line's own end
    assert "\r" not in text
    assert "bad path /v1/x\\n2026" in text
    assert 'endpoint="/v1/x\\n2026-01-01T00:00:00.000Z INFO agent.session drained\\r"' in text
    assert 'tab="a\\tb"' in text


def test_upstream_crate_names_mean_the_agent() -> None:
    configure_logging("modelrelay_worker=debug", "text")
    assert logging.getLogger("agent").level == logging.DEBUG
