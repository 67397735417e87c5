"""The update check: is a newer release on the package index, and how to install it.

It reads the index's JSON API (``https://pypi.org/pypi/modelrelay-server/json``,
or a URL the user configured, in the same shape), compares versions, and
says what changed (the versions in between, a changelog link, and a
``changes`` table when a configured feed gives one). It never downloads or
runs code: the user copies the upgrade command for how the app was
installed (pipx, uv tool, or pip).
"""

import json
import sys

import attrs
import httpx
from packaging.version import InvalidVersion, Version

from mrcommon.meta import distribution_version

__all__ = [
    "DEFAULT_INDEX_URL",
    "UpdateError",
    "UpdateInfo",
    "check_for_update",
    "install_method",
    "installed_version",
    "parse_index",
    "upgrade_command",
]

DEFAULT_INDEX_URL = "https://pypi.org/pypi/modelrelay-server/json"
_MAX_BODY = 8 * 1024 * 1024  # PyPI's JSON for a project with a long history stays far below


class UpdateError(Exception):
    """The index could not be asked or did not answer usefully; the message says why."""


@attrs.frozen
class UpdateInfo:
    """The answer of one check.

    Attributes:
        installed: The version running.
        latest: The newest release on the index.
        newer: Versions above `installed`, newest first.
        changes: Release notes per version, when the feed gives them.
        changelog_url: The project's changelog link, when it has one.
        command: The upgrade command for this installation.
    """

    installed: str
    latest: str
    newer: tuple[str, ...]
    changes: dict[str, str]
    changelog_url: str | None
    command: str

    @property
    def available(self) -> bool:
        """Whether a newer release exists."""
        return bool(self.newer)

    def summary(self) -> str:
        """A few lines for the dialog."""
        if not self.available:
            return f"ModelRelay {self.installed} is the newest release."
        lines = [f"ModelRelay {self.latest} is out (you have {self.installed})."]
        if len(self.newer) > 1:
            lines.append("New since yours: " + ", ".join(self.newer) + ".")
        for version in self.newer:
            if version in self.changes:
                lines.append(f"{version}: {self.changes[version]}")
        if self.changelog_url:
            lines.append(f"What changed: {self.changelog_url}")
        lines.append(f"To upgrade, run:\n    {self.command}")
        return "\n".join(lines)


def installed_version() -> str:
    """The installed distribution's version (``0.0.0+source`` from a source tree)."""
    return distribution_version()


def install_method(prefix: str | None = None) -> str:
    """``pipx``, ``uv`` or ``pip``: how this environment was made (from its path)."""
    path = (prefix or sys.prefix).replace("\\", "/").lower()
    if "/pipx/venvs/" in path:
        return "pipx"
    if "/uv/tools/" in path:
        return "uv"
    return "pip"


def upgrade_command(method: str) -> str:
    """The command that upgrades the app for `method`."""
    if method == "pipx":
        return "pipx upgrade modelrelay"
    if method == "uv":
        return "uv tool upgrade modelrelay"
    return "python -m pip install --upgrade 'modelrelay-server[desktop]'"


def parse_index(body: bytes, installed: str, method: str) -> UpdateInfo:
    """Read a package index JSON answer.

    Raises:
        UpdateError: The body is not the index's JSON shape.
    """
    try:
        doc = json.loads(body)
        info = doc["info"]
        latest = Version(str(info["version"]))
    except (ValueError, KeyError, TypeError, InvalidVersion):
        raise UpdateError("the index's answer is not package JSON") from None
    try:
        current = Version(installed)
    except InvalidVersion:
        current = Version("0")
    releases = doc.get("releases")
    found: set[Version] = {latest}
    if isinstance(releases, dict):
        for name, files in releases.items():
            try:
                version = Version(str(name))
            except InvalidVersion:
                continue
            # Yanked-only releases are not offered.
            if (
                isinstance(files, list)
                and files
                and all(isinstance(f, dict) and f.get("yanked") for f in files)
            ):
                continue
            found.add(version)
    newer = sorted((v for v in found if v > current and not v.is_prerelease), reverse=True)
    urls = info.get("project_urls") if isinstance(info.get("project_urls"), dict) else {}
    changelog = next(
        (
            str(u)
            for k, u in urls.items()
            if str(k).lower() in ("changelog", "changes", "release notes")
        ),
        None,
    )
    raw_changes = doc.get("changes")
    changes = (
        {str(k): str(v) for k, v in raw_changes.items()} if isinstance(raw_changes, dict) else {}
    )
    return UpdateInfo(
        installed=installed,
        latest=str(latest),
        newer=tuple(str(v) for v in newer),
        changes=changes,
        changelog_url=changelog,
        command=upgrade_command(method),
    )


def check_for_update(
    url: str = DEFAULT_INDEX_URL,
    *,
    installed: str | None = None,
    method: str | None = None,
    timeout_secs: float = 10.0,
) -> UpdateInfo:
    """Ask the index (blocking: run it off the GUI thread).

    Raises:
        UpdateError: The index is unreachable or answered with something else.
    """
    try:
        with httpx.Client(timeout=timeout_secs, follow_redirects=True) as client:
            response = client.get(url or DEFAULT_INDEX_URL, headers={"accept": "application/json"})
    except httpx.HTTPError as exc:
        raise UpdateError(f"cannot reach {url or DEFAULT_INDEX_URL}: {exc}") from None
    if response.status_code != 200:
        raise UpdateError(f"{url or DEFAULT_INDEX_URL} answered {response.status_code}")
    if len(response.content) > _MAX_BODY:
        raise UpdateError("the index's answer is too large")
    return parse_index(
        response.content, installed or installed_version(), method or install_method()
    )
