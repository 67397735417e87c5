"""Log configuration: one line per event, as text or JSON.

Events are logged with `extra={...}` fields (request_id, worker_id, model,
status, durations); the formatter prints them as `key=value` pairs or as JSON
members. Secrets are never passed to the logger in the first place.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
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


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and v is not None}


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = dt.datetime.fromtimestamp(record.created, dt.UTC).strftime("%H:%M:%S.%f")[:-3]
        parts = [stamp, f"{record.levelname:<5}", record.name, record.getMessage()]
        parts.extend(f"{k}={_text(v)}" for k, v in _fields(record).items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        doc.update(_fields(record))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def _text(value: object) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


def configure_logging(level_spec: str, fmt: str, *, default_target: str = "relay") -> None:
    """Send every log line to stderr in `fmt` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    levels = parse_level_spec(level_spec, default_target)
    root.setLevel(levels.pop("", logging.INFO))
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
