"""Log-setup helpers both daemons use: the level spec, and how a text line shows a value.

Each daemon keeps its own `configure_logging` (the relay hands records to a
writer thread, the agent writes them at once), but what an operator types
(``--log-level``) and what a text line looks like must not drift apart
between the two:

- `parse_level_spec` reads a RUST_LOG-style spec: ``info``, or
  ``warn,agent::session=trace,httpx=debug``;
- `text_value` renders one ``key=value`` value and `escape_controls` the
  event text, so that nothing a client sent (a path with ``%0a`` in it, a
  model name) can end a line early and forge the next one. A traceback
  still spans lines: it follows the line of the event that logged it.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "LEVELS",
    "escape_controls",
    "extra_fields",
    "parse_level_spec",
    "rfc3339",
    "text_value",
]

LEVELS: Mapping[str, int] = {
    "trace": logging.DEBUG,  # Python has no TRACE: upstream guides' trace is our debug
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,  # Python's alias, which the relay's spec used to take
    "off": logging.CRITICAL + 10,
}

# The Rust crates of the upstream project (modelrelay-server, modelrelay-worker)
# are named in deployment guides' RUST_LOG lines; they mean this daemon.
_UPSTREAM_PREFIX = "modelrelay"

# Attributes every LogRecord has; anything else on a record came from `extra=`
# (or from a filter that copies bound context onto it).
_STANDARD = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
}

# Characters that make a value need quotes even when all of it is printable.
_NEEDS_QUOTES = frozenset(' "=')
# The escapes a reader of JSON (and of most logfmt tools) knows by name.
_NAMED = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def parse_level_spec(spec: str, *, own_target: str | None = None) -> tuple[int, dict[str, int]]:
    """Parse a level spec like ``info`` or ``agent=debug,httpx=warning`` (RUST_LOG style).

    A bare level sets the default; ``target=level`` sets one logger. ``::``
    and ``-`` in targets read as ``.`` and ``_`` (``trio-websocket=debug``
    works), and a target naming an upstream crate (``modelrelay_server``,
    ``modelrelay-worker``) means `own_target`. Without a bare level the
    default is ``info``.

    Args:
        spec: The spec.
        own_target: The daemon's own logger (``relay``, ``agent``), which
            upstream crate names stand for; None keeps them as they are.

    Returns:
        The default level and a map from logger name to level.

    Raises:
        ValueError: An unknown level or an empty target.
    """
    default = logging.INFO
    targets: dict[str, int] = {}
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        target, sep, level_name = item.rpartition("=")
        level = LEVELS.get(level_name.strip().lower())
        if level is None:
            raise ValueError(
                f"unknown level {level_name.strip()!r} in {spec!r} "
                f"(use one of {', '.join(sorted(LEVELS))})"
            )
        if not sep:
            default = level
            continue
        name = target.strip().replace("::", ".").replace("-", "_")
        if not name:
            raise ValueError(f"empty target before '=' in {spec!r}")
        if own_target is not None and name.startswith(_UPSTREAM_PREFIX):
            name = own_target
        targets[name] = level
    return default, targets


def extra_fields(record: logging.LogRecord, *, skip_none: bool = False) -> dict[str, object]:
    """The fields a log call passed through ``extra=`` (and bound context), in order.

    Args:
        record: The record.
        skip_none: Leave out fields whose value is None.

    Returns:
        Field name to value; private (``_``-prefixed) attributes are left out.
    """
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD and not key.startswith("_") and not (skip_none and value is None)
    }


def _escape(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    if ch.isprintable():
        return ch
    code = ord(ch)
    if code > 0xFFFF:  # as JSON writes it: a surrogate pair
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """`text` with every non-printable character escaped, and nothing else changed.

    For the event text of a line, which is not quoted: a newline, carriage
    return, escape sequence, line or paragraph separator, or bidirectional
    override becomes ``\\n``, ``\\r`` or ``\\uXXXX``.

    Args:
        text: The text.

    Returns:
        Text that shows on one line as it is.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def text_value(value: object) -> str:
    """One value as a text line's ``key=value`` shows it.

    A list or tuple is joined with commas. A value that is empty, or holds a
    space, a quote, ``=`` or any non-printable character
    (newline, carriage return, other control and format characters) is
    written as a double-quoted JSON string, so the line stays one line and
    splits back into the same pairs.

    Args:
        value: The value.

    Returns:
        The value's text, quoted and escaped when it needs to be.
    """
    if isinstance(value, (list, tuple)):
        value = ",".join(str(item) for item in value)
    text = str(value)
    if text and text.isprintable() and _NEEDS_QUOTES.isdisjoint(text):
        return text
    return '"' + "".join(map(_escape, text)) + '"'


def rfc3339(created: float) -> str:
    """A record's time as both daemons write it: RFC 3339, UTC, milliseconds.

    Args:
        created: seconds since the epoch (`logging.LogRecord.created`).

    Returns:
        e.g. ``2026-11-26T21:02:11.532Z``.
    """
    moment = dt.datetime.fromtimestamp(created, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
