"""Log configuration: one line per event, as text or JSON.

Events are logged with `extra={...}` fields (request_id, worker_id, model,
status, durations); the formatter prints them as `key=value` pairs or as JSON
members. Secrets are never passed to the logger in the first place.

The trio thread only hands records to a bounded queue; a listener thread
formats and writes them. Formatting a line costs tens of microseconds, and a
stderr pipe that its reader stops draining would otherwise block the whole
event loop. When the queue is full, lines are dropped and counted.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import logging.handlers
import queue
import sys
from typing import Any

__all__ = ["configure_logging", "parse_level_spec"]

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_QUIET = ("hypercorn", "quart", "httpx", "httpcore", "trio-websocket", "trio_websocket")


def parse_level_spec(spec: str, default_target: str) -> dict[str, int]:
    """Parse `info`, `debug` or a RUST_LOG-style `relay=debug,httpx=warning`.

    Returns:
        logger name -> level; the empty name is the root.

    Raises:
        ValueError: an unknown level name.
    """
    levels: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        target, _, name = part.rpartition("=")
        level = logging.getLevelName(name.strip().upper().replace("TRACE", "DEBUG"))
        if not isinstance(level, int):
            raise ValueError(f"unknown log level {name!r} (use debug, info, warning or error)")
        target = target.strip()
        if target.startswith("modelrelay"):
            target = default_target  # modelrelay_server=debug from upstream guides
        levels[target] = level
    return levels or {"": logging.INFO}


def _rfc3339(created: float) -> str:
    """RFC 3339 in UTC with milliseconds (2026-11-26T21:02:11.532Z), as the agent writes it."""
    moment = dt.datetime.fromtimestamp(created, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and v is not None}


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = _rfc3339(record.created)
        parts = [stamp, f"{record.levelname:<5}", record.name, record.getMessage()]
        parts.extend(f"{k}={_text(v)}" for k, v in _fields(record).items())
        line = " ".join(parts)
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "timestamp": _rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        doc.update(_fields(record))
        if record.exc_text:
            doc["exception"] = record.exc_text
        return json.dumps(doc, default=str)


def _text(value: object) -> str:
    if isinstance(value, (list, tuple)):  # models=a,b as the agent's text lines show them
        value = ",".join(str(item) for item in value)
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


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


def configure_logging(level_spec: str, fmt: str, *, default_target: str = "relay") -> None:
    """Send every log line to stderr in `fmt` ("text" or "json")."""
    global _listener  # one listener per process, replaced on reconfiguration
    levels = parse_level_spec(level_spec, default_target)
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    records: queue.Queue[logging.LogRecord] = queue.Queue(maxsize=100_000)
    if _listener is not None:
        _listener.stop()
    _listener = logging.handlers.QueueListener(records, writer)
    _listener.start()
    atexit.register(_listener.stop)
    root = logging.getLogger()
    root.handlers[:] = [_Handoff(records)]
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    root.setLevel(levels.pop("", logging.INFO))
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
