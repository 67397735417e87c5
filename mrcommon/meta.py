"""The distribution's name and version, in one place for both daemons.

"modelrelay" on the package index belongs to an unrelated project, so this one
is published as "modelrelay-server"; `--version`, error hints ("pip install
'modelrelay-server[postgres]'") and the docs all use this name.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["DISTRIBUTION", "distribution_version"]

DISTRIBUTION = "modelrelay-server"


def distribution_version() -> str:
    """The installed distribution's version, or ``0.0.0+source`` from a bare checkout."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+source"
