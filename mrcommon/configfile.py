"""`--config FILE` for both daemons: read the TOML settings, refuse unknown keys,
and say where a bad value came from.

A typo in a settings file (`listne = ...`) must stop the program naming the key
and the file, instead of starting on defaults; and a bad value read from the
file must be reported as that file's key, not as the flag's environment
variable (which click names by default). This module is plain Python: the CLIs
pass in what their command knows and turn `ConfigFileError` into their own
usage error.
"""

from __future__ import annotations

import tomllib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

__all__ = ["META_KEY", "ConfigFileError", "file_key_hint", "from_file_message", "read_settings"]

# Where the CLIs keep (file, {option name: key as written}) in click's ctx.meta.
META_KEY = "modelrelay.config_file"


class ConfigFileError(ValueError):
    """The settings file cannot be used; the message names the file (and key)."""


def read_settings(
    path: Path, section: str, known: Iterable[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Read `path`: settings at the top level or in a `[section]` table.

    Args:
        path: The TOML file.
        section: The table name the program also accepts (`relay`, `agent`).
        known: The option names (Python spelling, `max_queue_len`) a file may set.

    Returns:
        ({option name: value}, {option name: the key as written in the file}).
        A list value becomes a comma-joined string, as a flag would give it.

    Raises:
        ConfigFileError: unreadable or not TOML, an unknown key, or a table
            where a value belongs.
    """
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigFileError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"{str(path)!r} is not valid TOML: {exc}") from None
    entries = {k: v for k, v in doc.items() if k != section or not isinstance(v, dict)}
    table = doc.get(section)
    if isinstance(table, dict):
        entries.update(table)
    allowed = set(known)
    values: dict[str, Any] = {}
    keys: dict[str, str] = {}
    for key, item in entries.items():
        name = str(key).replace("-", "_")
        if name not in allowed:
            raise ConfigFileError(f"unknown key {key!r} in {str(path)!r}")
        if isinstance(item, dict):
            raise ConfigFileError(f"key {key!r} in {str(path)!r} must not be a table")
        if isinstance(item, list):
            item = ",".join(str(part) for part in item)
        values[name] = item
        keys[name] = str(key)
    return values, keys


def file_key_hint(ctx: object, name: str | None) -> str | None:
    """``'key' in 'FILE'`` when option `name`'s value came from the settings file.

    Args:
        ctx: The click/Typer context the value was resolved in (duck-typed:
            `get_parameter_source` and `meta`, so this module needs no click).
        name: The option's Python name.

    Returns:
        The hint for an error message, or None when the value came from a
        flag, the environment or the default.
    """
    if ctx is None or not name:
        return None
    get_source = getattr(ctx, "get_parameter_source", None)
    meta = getattr(ctx, "meta", None)
    if get_source is None or not isinstance(meta, dict):
        return None
    if getattr(get_source(name), "name", None) != "DEFAULT_MAP":
        return None
    path, keys = meta.get(META_KEY, (None, {}))
    if path is None or name not in keys:
        return None
    return f"{keys[name]!r} in {str(path)!r}"


def from_file_message(exc: BaseException) -> str | None:
    """A click `BadParameter`'s message naming the file key, if its value came from the file.

    Args:
        exc: The usage error (duck-typed: `ctx`, `param`, `message`).

    Returns:
        ``Invalid value for 'key' in 'FILE': ...``, or None to keep click's own message.
    """
    param = getattr(exc, "param", None)
    hint = file_key_hint(getattr(exc, "ctx", None), getattr(param, "name", None))
    if hint is None:
        return None
    return f"Invalid value for {hint}: {getattr(exc, 'message', exc)}"
