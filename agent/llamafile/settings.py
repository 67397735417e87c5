"""`agent llamafile config`: a few persistent defaults in ``<home>/config.toml``.

Flags and environment variables win over these; these win over built-in
defaults. The worker secret is stored with mode 0600 and never printed whole.
"""

import json
import os
import tomllib
from collections.abc import Callable
from pathlib import Path

from agent.llamafile.errors import LlamafileError

__all__ = ["KEYS", "SECRET_KEYS", "Settings", "load_settings", "save_settings", "validate"]

Settings = dict[str, str | int]


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError("must be 0..65535")
    return port


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def _url(value: str) -> str:
    if not value.startswith(("http://", "https://", "ws://", "wss://")):
        raise ValueError("must be an http(s) or ws(s) URL")
    return value


def _gpu(value: str) -> str:
    if value not in ("auto", "none") and not value.isdigit():
        raise ValueError("must be auto, none, or a number of layers")
    return value


def _text(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


# key -> (parser, help)
KEYS: dict[str, tuple[Callable[[str], str | int], str]] = {
    "relay-url": (_url, "the relay `serve` connects to (like --proxy-url)"),
    "worker-secret": (_text, "the relay's worker secret (like WORKER_SECRET)"),
    "provider": (_text, "provider name to register under"),
    "worker-name": (_text, "name shown on the relay's dashboard"),
    "max-concurrency": (_positive, "requests at once (also the server's --parallel)"),
    "port": (_port, "model server port (0 = a free one)"),
    "ctx": (_positive, "context length (default: the catalog's)"),
    "gpu": (_gpu, "GPU layers: auto, none, or a number"),
    "catalog-url": (_url, "where update-catalog fetches from"),
    "api-key": (_text, "client API key `test --via-relay` sends to the relay"),
}
SECRET_KEYS = frozenset({"worker-secret", "api-key"})


def validate(key: str, value: str) -> str | int:
    """The typed value for `key`, or a clear error."""
    if key not in KEYS:
        raise LlamafileError(f"unknown config key {key!r} (known: {', '.join(KEYS)})")
    try:
        return KEYS[key][0](value)
    except ValueError as exc:
        raise LlamafileError(f"config {key}: {value!r} {exc}") from None


def load_settings(path: Path) -> Settings:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LlamafileError(f"cannot read {path}: {exc}") from None
    return {k: v for k, v in data.items() if k in KEYS and isinstance(v, str | int)}


def save_settings(path: Path, settings: Settings) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{key} = {value if isinstance(value, int) else json.dumps(value)}"
        for key, value in sorted(settings.items())
    ]
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + ("\n" if lines else ""))
    os.replace(tmp, path)


def shown(key: str, value: str | int) -> str | int:
    """`value` as `config get/list` print it (secrets masked)."""
    if key in SECRET_KEYS and isinstance(value, str):
        return f"(set, {len(value)} chars)"
    return value
