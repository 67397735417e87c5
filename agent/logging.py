"""Log configuration: one line per event, text or JSON, on stderr.

Log calls pass structured fields through ``extra=`` (``request_id``,
``worker_id``, ``model``, ``status``, ``duration_ms``...); `bind_log_context`
adds fields to every line logged from the current task and the tasks it
spawns afterwards (Trio copies the context at spawn). The text format is
``time level logger event key=value ...``; the JSON format is one object per
line with ``timestamp``, ``level``, ``logger``, ``event`` and the fields.
The level spec and how a text value is quoted and escaped are the relay's
too (`mrcommon.logs`).

Nothing here knows a secret: callers never pass one, and the config's
`repr` hides them.
"""

import contextlib
import contextvars
import json
import logging
import sys
import types
from collections.abc import Iterator, Mapping
from typing import Any

from mrcommon.logs import escape_controls, extra_fields, parse_level_spec, rfc3339, text_value

__all__ = [
    "JsonFormatter",
    "TextFormatter",
    "bind_log_context",
    "configure_logging",
]

# Chatty libraries stay at WARNING unless the spec names them.
_QUIET = ("httpx", "httpcore", "trio_websocket", "hypercorn", "wsproto", "h11")

_NO_FIELDS: Mapping[str, object] = types.MappingProxyType({})

_context: contextvars.ContextVar[Mapping[str, object]] = contextvars.ContextVar(
    "agent_log_context",
    default=_NO_FIELDS,  # read-only, never mutated: each bind makes a new dict
)


@contextlib.contextmanager
def bind_log_context(**fields: object) -> Iterator[None]:
    """Add `fields` to every log line of the current task (and tasks it spawns) inside.

    Args:
        **fields: E.g. ``request_id="r1"``.
    """
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class _InjectContext(logging.Filter):
    """Copies the bound context onto the record at log time (the handler may not share it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class TextFormatter(logging.Formatter):
    """``2026-01-01T00:00:00.000Z INFO agent.session registered worker_id=w1``."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            rfc3339(record.created),
            record.levelname,
            record.name,
            escape_controls(record.getMessage()),
        ]
        parts.extend(f"{key}={text_value(value)}" for key, value in extra_fields(record).items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, event, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "timestamp": rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            obj.setdefault(key, value)
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False, default=str)


class _AgentHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Our stderr handler; a marker type so that reconfiguring replaces it."""


def configure_logging(level_spec: str, fmt: str) -> None:
    """Send log records to stderr in the chosen format and levels.

    Safe to call again: the handler installed by an earlier call is replaced.

    Args:
        level_spec: See `mrcommon.logs.parse_level_spec`.
        fmt: ``text`` or ``json``.

    Raises:
        ValueError: The spec or the format is invalid.
    """
    default, targets = parse_level_spec(level_spec, own_target="agent")
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r}")
    handler = _AgentHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_InjectContext())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _AgentHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(default)
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(default, logging.WARNING))
    for name, level in targets.items():
        logging.getLogger(name).setLevel(level)
