"""Where `agent llamafile` keeps its state: one directory per user, per platform.

A small function of our own rather than a dependency (platformdirs): we need
one directory, and the three platform rules fit in a dozen lines.

- ``$MODELRELAY_LLAMAFILE_HOME`` if set (tests, or a big disk elsewhere);
- Linux and other POSIX: ``$XDG_DATA_HOME/modelrelay/llamafile``
  (``~/.local/share/modelrelay/llamafile`` by default);
- macOS: ``~/Library/Application Support/modelrelay/llamafile``;
- Windows: ``%LOCALAPPDATA%\\modelrelay\\llamafile``.

Layout::

    models/            downloaded and imported model files (+ NAME.part while downloading)
    run/SLUG.json      one state file per running model (see state.py)
    logs/SLUG.log      the model server's output (and the agent's, for `serve --detach`)
    catalog.toml       the catalog `update-catalog` fetched (replaces the shipped one)
    user-catalog.toml  your own entries (`import` adds here); they win over the others
    config.toml        `config set` values
"""

import os
import sys
from pathlib import Path

import attrs

__all__ = ["Home", "data_dir"]

HOME_ENV = "MODELRELAY_LLAMAFILE_HOME"


def data_dir() -> Path:
    """The platform's data directory for `agent llamafile` (not created here).

    Returns:
        The directory path.
    """
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "modelrelay" / "llamafile"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "modelrelay" / "llamafile"
    xdg = os.environ.get("XDG_DATA_HOME")
    base_dir = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base_dir / "modelrelay" / "llamafile"


@attrs.frozen
class Home:
    """The state directory's layout.

    Attributes:
        root: The directory itself.
    """

    root: Path

    @classmethod
    def default(cls) -> "Home":
        """The platform's directory (see `data_dir`)."""
        return cls(data_dir())

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def fetched_catalog(self) -> Path:
        return self.root / "catalog.toml"

    @property
    def user_catalog(self) -> Path:
        return self.root / "user-catalog.toml"

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    def log_file(self, slug: str) -> Path:
        return self.logs / f"{slug}.log"

    def state_file(self, slug: str) -> Path:
        return self.run / f"{slug}.json"

    def ensure(self) -> None:
        """Create the directories (raises OSError; callers map it to a clear error)."""
        for path in (self.root, self.models, self.run, self.logs):
            path.mkdir(parents=True, exist_ok=True)
