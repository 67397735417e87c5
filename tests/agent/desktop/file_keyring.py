"""A file-based keyring backend for the tests: the OS keyring's API, a JSON file behind it.

In-process: ``keyring.set_keyring(FileKeyring(path))``. In a child process:
``PYTHON_KEYRING_BACKEND=tests.agent.desktop.file_keyring.FileKeyring`` with
``MODELRELAY_TEST_KEYRING=<file>``.
"""

import json
import os
from pathlib import Path

from keyring.backend import KeyringBackend
from keyring.compat import properties

__all__ = ["FileKeyring"]


class FileKeyring(KeyringBackend):
    """Owns a JSON file of ``{service: {user: secret}}``."""

    @properties.classproperty
    def priority(cls) -> float:
        # keyring instantiates every backend class it knows when it picks a
        # default: this one is viable only where a test asked for it.
        if "MODELRELAY_TEST_KEYRING" not in os.environ:
            raise RuntimeError("MODELRELAY_TEST_KEYRING is not set")
        return 1

    def __init__(self, path: Path | None = None) -> None:
        super().__init__()
        self.path = Path(path or os.environ.get("MODELRELAY_TEST_KEYRING", "/nonexistent"))

    def _load(self) -> dict[str, dict[str, str]]:
        if not self.path.exists():
            return {}
        data: dict[str, dict[str, str]] = json.loads(self.path.read_text(encoding="utf-8"))
        return data

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(service, {}).get(username)

    def set_password(self, service: str, username: str, password: str) -> None:
        data = self._load()
        data.setdefault(service, {})[username] = password
        self.path.write_text(json.dumps(data), encoding="utf-8")

    def delete_password(self, service: str, username: str) -> None:
        data = self._load()
        data.get(service, {}).pop(username, None)
        self.path.write_text(json.dumps(data), encoding="utf-8")
