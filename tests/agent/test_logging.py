"""Log configuration and line formats."""

import json
import logging
import sys
from collections.abc import Iterator

import pytest

from agent.logging import (
    JsonFormatter,
    TextFormatter,
    bind_log_context,
    configure_logging,
    parse_level_spec,
)


def test_parse_level_spec() -> None:
    assert parse_level_spec("debug") == (logging.DEBUG, {})
    assert parse_level_spec("agent=debug,httpx=warning") == (
        logging.INFO,
        {"agent": logging.DEBUG, "httpx": logging.WARNING},
    )
    assert parse_level_spec("warn, agent::session=trace, trio-websocket=info") == (
        logging.WARNING,
        {"agent.session": logging.DEBUG, "trio_websocket": logging.INFO},
    )
    with pytest.raises(ValueError, match="unknown level"):
        parse_level_spec("agent=loud")
    with pytest.raises(ValueError, match="empty target"):
        parse_level_spec("=debug")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    named = {
        name: logging.getLogger(name).level
        for name in ("httpx", "httpcore", "trio_websocket", "hypercorn")
    }
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in named.items():
        logging.getLogger(name).setLevel(value)


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
