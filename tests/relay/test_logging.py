"""The relay's log lines: levels from the shared spec, values that cannot forge a line."""

import json
import logging
from collections.abc import Callable, Iterator

import pytest

from relay.logging import configure_logging, stop_logging

pytestmark = pytest.mark.usefixtures("restore_logging", "stopped_writer")


@pytest.fixture
def stopped_writer() -> Iterator[None]:
    """No writer thread outlives the test (the next configure_logging starts its own)."""
    yield
    stop_logging()


@pytest.fixture
def flushed(capsys: pytest.CaptureFixture[str]) -> Callable[[], str]:
    """What the relay's writer thread has written to stderr, once it has written all of it."""

    def read() -> str:
        stop_logging()  # joins the writer thread once it has drained the queue
        return capsys.readouterr().err

    return read


def test_levels_follow_the_spec() -> None:
    configure_logging("warn,relay.hub=debug,modelrelay_server=trace", "text")
    assert logging.getLogger().level == logging.WARNING
    assert logging.getLogger("relay.hub").level == logging.DEBUG
    assert logging.getLogger("relay").level == logging.DEBUG  # the upstream crate's name
    assert logging.getLogger("hypercorn").level == logging.WARNING


def test_a_bad_spec_changes_nothing() -> None:
    handlers = list(logging.getLogger().handlers)
    with pytest.raises(ValueError, match="unknown level 'loud'"):
        configure_logging("relay=loud", "text")
    assert logging.getLogger().handlers == handlers


def test_a_path_cannot_forge_a_text_line(flushed: Callable[[], str]) -> None:
    configure_logging("info", "text")
    forged = "/v1/x\n12:00:00.000 INFO  relay.http request ok status=200"
    logging.getLogger("relay.http").warning(
        "unknown path %s", forged, extra={"path": forged, "model": None}
    )
    text = flushed()
    assert text.count("\n") == 1
    line = text.rstrip("\n")
    assert "unknown path /v1/x\\n12:00:00.000 INFO" in line
    assert line.endswith('path="/v1/x\\n12:00:00.000 INFO  relay.http request ok status=200"')
    assert "model=" not in line  # the relay leaves out empty fields


def test_json_lines_carry_the_fields(flushed: Callable[[], str]) -> None:
    configure_logging("info", "json")
    logging.getLogger("relay.http").info("request finished", extra={"status": 200, "x": None})
    doc = json.loads(flushed())
    assert (doc["event"], doc["status"], doc["logger"]) == ("request finished", 200, "relay.http")
    assert "x" not in doc


def test_reconfiguring_stops_the_old_writer_once(flushed: Callable[[], str]) -> None:
    """Each configure_logging replaces the writer; stopping twice is harmless (it
    used to raise at exit for every writer replaced)."""
    configure_logging("info", "text")
    configure_logging("info", "text")
    logging.getLogger("relay.x").info("once")
    assert flushed().count("once") == 1
    stop_logging()
