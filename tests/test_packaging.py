"""The distribution's name, licence and the install commands the docs show.

"modelrelay" on the package index is someone else's project: everything a
user copies (docs, Dockerfiles, error hints) must name ours.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

from mrcommon.meta import DISTRIBUTION

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [
        ROOT / name
        for name in out
        if (ROOT / name).is_file()
        and not name.startswith("tests/test_packaging")
        and (ROOT / name).suffix not in {".gguf", ".png", ".jpg", ".ico", ".woff2"}
    ]


def test_distribution_name_is_ours_and_commands_are_unchanged() -> None:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    assert project["name"] == DISTRIBUTION == "modelrelay-server"
    assert set(project["scripts"]) == {"relay", "agent", "modelrelay-server", "modelrelay-worker"}


def test_licence_file_and_spdx_field() -> None:
    doc = _pyproject()
    project = doc["project"]
    assert isinstance(project, dict)
    # The table form ({ text = "MIT" }) is deprecated by setuptools (gone in 2027).
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    requires = doc["build-system"]["requires"]  # type: ignore[index]
    assert any(re.fullmatch(r"setuptools>=(7[7-9]|[89]\d)(\.\d+)*", r) for r in requires)


def test_no_install_command_names_the_foreign_project() -> None:
    foreign = re.compile(r"(pip|pipx|uv tool|uv pip) install[^\n]*['\" ]modelrelay(\[|['\" \n]|$)")
    offenders = []
    for path in _tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if foreign.search(text) or "'modelrelay[" in text or 'version("modelrelay")' in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_images_copy_everything_the_build_needs() -> None:
    for name in ("Dockerfile.relay", "Dockerfile.agent"):
        text = (ROOT / "contrib" / "docker" / name).read_text()
        for needed in ("mrcommon/", "README.md", "LICENSE", "wire/", "relay/", "agent/"):
            assert needed in text, f"{name} does not COPY {needed}"


def test_nginx_uses_the_http2_directive() -> None:
    conf = (ROOT / "contrib" / "nginx" / "modelrelay.conf").read_text()
    assert re.search(r"^\s*http2 on;", conf, re.M)
    # `listen ... http2` is deprecated since nginx 1.25.1 (warns on every reload).
    assert not re.search(r"^\s*listen [^;#]*http2", conf, re.M)
