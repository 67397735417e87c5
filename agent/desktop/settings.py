"""The desktop app's settings: an ``agent run`` TOML file, desktop preferences, the keyring.

Three places, on purpose:

- ``agent.toml`` in the platform config directory holds the agent's options
  in the format ``agent run --config FILE`` reads (an ``[agent]`` table, keys
  named after the flags), so moving from the tray to a service is one
  command. It never holds the worker secret.
- ``desktop.toml`` next to it holds what only the app uses (start on login,
  notifications, the update feed). ``agent run`` rejects unknown keys, so
  these cannot share the first file.
- The worker secret lives in the OS keyring (`keyring`), under the service
  ``modelrelay-desktop`` and the relay URL as user name, so each relay keeps
  its own secret.
"""

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import attrs

from agent.config import DEFAULT_BACKEND_URL, AgentConfig
from agent.errors import ConfigError

__all__ = [
    "AGENT_FILE",
    "DESKTOP_FILE",
    "KEYRING_SERVICE",
    "AgentSettings",
    "DesktopPrefs",
    "SecretStore",
    "SettingsError",
    "check_agent_settings",
    "default_config_dir",
    "load_agent_file",
    "load_prefs",
    "save_agent_file",
    "save_prefs",
]

AGENT_FILE = "agent.toml"
DESKTOP_FILE = "desktop.toml"
KEYRING_SERVICE = "modelrelay-desktop"

# The `agent run` options a file may set (agent/cli.py's parameters, minus --config).
_RUN_KEYS = (
    "proxy_url",
    "worker_secret",
    "backend_url",
    "backend_api_key",
    "models",
    "models_poll_interval",
    "provider",
    "worker_name",
    "max_concurrency",
    "backend_dialect",
    "drain_timeout",
    "log_level",
    "log_format",
)
# What the app's forms edit; every other key of a loaded file is kept as it was.
_FORM_KEYS = ("proxy_url", "backend_url", "worker_name", "models", "max_concurrency")


class SettingsError(Exception):
    """A settings file or the keyring could not be read or written; the message says which."""


def default_config_dir() -> Path:
    """The platform's config directory for the app (e.g. ``~/.config/modelrelay``)."""
    import platformdirs  # the [desktop] extra

    return platformdirs.user_config_path("modelrelay", appauthor=False)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(str(value), ensure_ascii=False)


@attrs.frozen
class AgentSettings:
    """The agent's options as the app edits them (the secret is not here).

    Attributes:
        proxy_url: The relay's base URL.
        backend_url: The local LLM server.
        worker_name: The name shown on the relay's dashboard ("" = host name).
        models: Models to offer; empty means every model the backend lists.
        max_concurrency: Requests at once.
        other: Further ``agent run`` options from a loaded file, kept as they were.
    """

    proxy_url: str
    backend_url: str = DEFAULT_BACKEND_URL
    worker_name: str = ""
    models: tuple[str, ...] = ()
    max_concurrency: int = 1
    other: dict[str, Any] = attrs.field(factory=dict, eq=True)

    def agent_config(self, secret: str) -> AgentConfig:
        """The `AgentConfig` these settings give with `secret`.

        Raises:
            ConfigError: A value is invalid (the error names its flag).
        """
        kwargs: dict[str, Any] = {k: v for k, v in self.other.items() if k != "worker_secret"}
        return AgentConfig.create(
            worker_secret=secret,
            proxy_url=self.proxy_url,
            backend_url=self.backend_url,
            worker_name=self.worker_name or None,
            models=",".join(self.models) if self.models else "*",
            max_concurrency=self.max_concurrency,
            **kwargs,
        )

    @property
    def file_secret(self) -> str | None:
        """A ``worker-secret`` a hand-written file carries (the app never writes one)."""
        value = self.other.get("worker_secret")
        return str(value) if value else None


def _entries(path: Path) -> dict[str, Any]:
    """The file's options by option name, read as ``agent run --config`` reads them."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{str(path)!r} is not valid TOML: {exc}") from None
    section = data.get("agent")
    entries = {k: v for k, v in data.items() if k != "agent" or not isinstance(v, dict)}
    if isinstance(section, dict):
        entries.update(section)
    out: dict[str, Any] = {}
    for key, value in entries.items():
        name = key.replace("-", "_")
        if name not in _RUN_KEYS:
            raise SettingsError(f"unknown key {key!r} in {str(path)!r}")
        if isinstance(value, dict):
            raise SettingsError(f"key {key!r} in {str(path)!r} must not be a table")
        out[name] = value
    return out


def load_agent_file(path: Path) -> AgentSettings:
    """Read an ``agent run --config`` file.

    Raises:
        SettingsError: The file is missing, not TOML, or has a key `agent run` does not know.
    """
    entries = _entries(path)
    models = entries.pop("models", "*")
    names = models.split(",") if isinstance(models, str) else [str(m) for m in models]
    names = [n.strip() for n in names if n.strip() and n.strip() != "*"]
    try:
        concurrency = int(entries.pop("max_concurrency", 1))
    except (TypeError, ValueError):
        raise SettingsError(f"max-concurrency in {str(path)!r} must be a number") from None
    return AgentSettings(
        proxy_url=str(entries.pop("proxy_url", "")),
        backend_url=str(entries.pop("backend_url", DEFAULT_BACKEND_URL)),
        worker_name=str(entries.pop("worker_name", "") or ""),
        models=tuple(names),
        max_concurrency=concurrency,
        other=entries,
    )


def save_agent_file(path: Path, settings: AgentSettings) -> None:
    """Write `settings` where ``agent run --config`` can read them; never the secret.

    The file is replaced atomically (a crash leaves the old or the new one).

    Raises:
        SettingsError: The file cannot be written.
    """
    values: dict[str, Any] = {
        "proxy_url": settings.proxy_url,
        "backend_url": settings.backend_url,
        "models": list(settings.models) if settings.models else "*",
        "max_concurrency": settings.max_concurrency,
    }
    if settings.worker_name:
        values["worker_name"] = settings.worker_name
    for key, value in settings.other.items():
        if key != "worker_secret":  # the keyring has it
            values[key] = value
    lines = [
        "# ModelRelay agent settings, written by ModelRelay Desktop.",
        "# `agent run --config THIS_FILE` reads it too. The worker secret is not here:",
        "# it is in the OS keyring; give it to `agent run` as WORKER_SECRET.",
        "[agent]",
        *(f"{key.replace('_', '-')} = {_toml_value(value)}" for key, value in values.items()),
    ]
    _write_atomic(path, "\n".join(lines) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise SettingsError(f"cannot write {str(path)!r}: {exc.strerror}") from None


@attrs.frozen
class DesktopPrefs:
    """What only the app uses.

    Attributes:
        start_on_login: Whether the app starts when the user logs in.
        notifications: Whether to show desktop notifications.
        update_url: The package index JSON to check ("" = PyPI).
    """

    start_on_login: bool = False
    notifications: bool = True
    update_url: str = ""


def load_prefs(path: Path) -> DesktopPrefs:
    """Read ``desktop.toml``; a missing file gives the defaults.

    Raises:
        SettingsError: The file exists but is not valid.
    """
    if not path.exists():
        return DesktopPrefs()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read {str(path)!r}: {exc}") from None
    section = data.get("desktop", data)
    known = {f.name for f in attrs.fields(DesktopPrefs)}
    values = {k.replace("-", "_"): v for k, v in section.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SettingsError(f"unknown key {unknown[0]!r} in {str(path)!r}")
    try:
        return DesktopPrefs(**values)
    except TypeError as exc:
        raise SettingsError(f"{str(path)!r}: {exc}") from None


def save_prefs(path: Path, prefs: DesktopPrefs) -> None:
    """Write ``desktop.toml``.

    Raises:
        SettingsError: The file cannot be written.
    """
    lines = ["# ModelRelay Desktop preferences.", "[desktop]"]
    for field in attrs.fields(DesktopPrefs):
        lines.append(f"{field.name.replace('_', '-')} = {_toml_value(getattr(prefs, field.name))}")
    _write_atomic(path, "\n".join(lines) + "\n")


@attrs.frozen
class SecretStore:
    """Owns the worker secrets in the OS keyring, one per relay URL.

    Attributes:
        service: The keyring service name.
    """

    service: str = KEYRING_SERVICE

    def get(self, relay_url: str) -> str | None:
        """The stored secret for `relay_url`, or None.

        Raises:
            SettingsError: No usable keyring.
        """
        import keyring  # the [desktop] extra
        import keyring.errors

        try:
            return keyring.get_password(self.service, _relay_key(relay_url))
        except keyring.errors.KeyringError as exc:
            raise SettingsError(f"cannot read the OS keyring: {exc}") from None

    def set(self, relay_url: str, secret: str) -> None:
        """Store `secret` for `relay_url`.

        Raises:
            SettingsError: No usable keyring, or it refused.
        """
        import keyring
        import keyring.errors

        try:
            keyring.set_password(self.service, _relay_key(relay_url), secret)
        except keyring.errors.KeyringError as exc:
            raise SettingsError(
                f"cannot store the secret in the OS keyring: {exc}. "
                "Install a keyring (e.g. GNOME Keyring or KWallet) and try again."
            ) from None


def _relay_key(relay_url: str) -> str:
    return relay_url.strip().rstrip("/")


def check_agent_settings(settings: AgentSettings) -> str | None:
    """A message naming the first invalid value, or None (the secret is not checked)."""
    try:
        settings.agent_config("placeholder")
    except ConfigError as exc:
        return str(exc)
    return None
