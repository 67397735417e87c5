"""Log configuration: one line per event, as text or JSON.

Events are logged with `extra={...}` fields (request_id, worker_id, model,
status, durations); the formatter prints them as `key=value` pairs or as JSON
members. Secrets are never passed to the logger in the first place. The
level spec and how a text value is quoted and escaped (so that a client's
``%0a`` cannot forge a line) are the agent's too: `mrcommon.logs`.

The trio thread only hands records to a bounded queue; a listener thread
formats and writes them. Formatting a line costs tens of microseconds, and a
stderr pipe that its reader stops draining would otherwise block the whole
event loop. When the queue is full, lines are dropped and counted.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
from typing import Any

from mrcommon.logs import escape_controls, extra_fields, parse_level_spec, rfc3339, text_value

__all__ = ["configure_logging", "stop_logging"]

_QUIET = ("hypercorn", "quart", "httpx", "httpcore", "trio-websocket", "trio_websocket")


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = rfc3339(record.created)
        parts = [stamp, f"{record.levelname:<5}", record.name, escape_controls(record.getMessage())]
        parts.extend(
            f"{k}={text_value(v)}" for k, v in extra_fields(record, skip_none=True).items()
        )
        line = " ".join(parts)
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "timestamp": rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        doc.update(extra_fields(record, skip_none=True))
        if record.exc_text:
            doc["exception"] = record.exc_text
        return json.dumps(doc, default=str)


class _Handoff(logging.handlers.QueueHandler):
    """Puts records on a bounded queue; never blocks the caller."""

    dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # Resolve what cannot cross threads safely (args may be mutated,
        # tracebacks hold frames); keep the extra fields as they are.
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        record.msg = record.getMessage()
        record.args = None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            _Handoff.dropped += 1


_listener: logging.handlers.QueueListener | None = None


def stop_logging() -> None:
    """Write every line still queued, then stop the writer thread; idempotent.

    Runs at exit. Until `configure_logging` runs again, records queue up
    unwritten (the queue is bounded: the rest are dropped and counted).
    """
    global _listener  # the one listener of this process
    if _listener is not None:
        _listener.stop()
        _listener = None


atexit.register(stop_logging)


def configure_logging(level_spec: str, fmt: str, *, default_target: str = "relay") -> None:
    """Send every log line to stderr in `fmt` ("text" or "json").

    Args:
        level_spec: See `mrcommon.logs.parse_level_spec`; ``modelrelay_server=debug``
            (an upstream guide's target) means `default_target`.
        fmt: ``text`` or ``json``.
        default_target: The relay's own logger.

    Raises:
        ValueError: The spec is invalid (nothing has been changed then).
    """
    global _listener  # one listener per process, replaced on reconfiguration
    default, levels = parse_level_spec(level_spec, own_target=default_target)
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    records: queue.Queue[logging.LogRecord] = queue.Queue(maxsize=100_000)
    stop_logging()
    _listener = logging.handlers.QueueListener(records, writer)
    _listener.start()
    root = logging.getLogger()
    root.handlers[:] = [_Handoff(records)]
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    root.setLevel(default)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
