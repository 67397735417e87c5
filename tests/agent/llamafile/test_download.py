"""Downloads against a real HTTP server: resume, checksum, atomic rename, disk space."""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING

import httpx
import pytest
import trio

from agent.llamafile.download import Progress, download
from agent.llamafile.errors import ChecksumMismatch, DownloadInterrupted, NoDiskSpace
from tests.agent.llamafile.conftest import catalog_toml, entry, sha256

if TYPE_CHECKING:
    from pathlib import Path

    from tests.agent.llamafile.conftest import Cli
    from tests.agent.llamafile.fileserver import FileServer

DATA = os.urandom(3 * 1024 * 1024 + 123)  # more than one write chunk


async def fetch(url: str, dest: Path, digest: str | None, progress: Progress | None = None):
    with trio.fail_after(30):
        async with httpx.AsyncClient(timeout=10) as client:
            return await download(client, url, dest, sha256=digest, progress=progress)


async def test_fresh_download_is_verified_and_atomic(files: FileServer, tmp_path: Path) -> None:
    files.files["/m.llamafile"] = DATA
    dest = tmp_path / "m.llamafile"
    result = await fetch(f"{files.url}/m.llamafile", dest, sha256(DATA))
    assert dest.read_bytes() == DATA
    assert result.verified
    assert result.resumed_from == 0
    assert result.size == len(DATA)
    assert not (tmp_path / "m.llamafile.part").exists()
    assert os.access(dest, os.X_OK)  # a llamafile is a program
    again = await fetch(f"{files.url}/m.llamafile", dest, sha256(DATA))
    assert again.already
    assert len(files.requests) == 1  # nothing fetched the second time


async def test_interrupted_download_resumes_with_range(files: FileServer, tmp_path: Path) -> None:
    files.files["/m.llamafile"] = DATA
    files.cut_after["/m.llamafile"] = 1_500_000
    dest = tmp_path / "m.llamafile"
    with pytest.raises(DownloadInterrupted, match="run the same command again to resume"):
        await fetch(f"{files.url}/m.llamafile", dest, sha256(DATA))
    part = tmp_path / "m.llamafile.part"
    assert not dest.exists()
    kept = part.stat().st_size
    assert kept == 1_500_000  # everything that arrived was kept
    result = await fetch(f"{files.url}/m.llamafile", dest, sha256(DATA))
    assert files.requests[-1] == ("/m.llamafile", f"bytes={kept}-")
    assert result.resumed_from == kept
    assert result.verified
    assert dest.read_bytes() == DATA
    assert not part.exists()


async def test_server_ignoring_range_starts_over(files: FileServer, tmp_path: Path) -> None:
    files.files["/m.llamafile"] = DATA
    files.ignore_range.add("/m.llamafile")
    await trio.Path(tmp_path / "m.llamafile.part").write_bytes(b"garbage that is not the file")
    result = await fetch(f"{files.url}/m.llamafile", tmp_path / "m.llamafile", sha256(DATA))
    assert result.resumed_from == 0
    assert (tmp_path / "m.llamafile").read_bytes() == DATA


async def test_wrong_checksum_is_refused_and_the_part_deleted(
    files: FileServer, tmp_path: Path
) -> None:
    files.files["/m.llamafile"] = DATA
    wrong = sha256(b"something else")
    with pytest.raises(ChecksumMismatch) as caught:
        await fetch(f"{files.url}/m.llamafile", tmp_path / "m.llamafile", wrong)
    assert f"expected sha256 {wrong}, got {sha256(DATA)}" in caught.value.message
    assert "deleted" in caught.value.message
    assert not await trio.Path(tmp_path / "m.llamafile.part").exists()
    assert not await trio.Path(tmp_path / "m.llamafile").exists()


async def test_not_enough_disk_space_is_refused_before_writing(
    files: FileServer, tmp_path: Path
) -> None:
    files.claim_length["/huge.llamafile"] = 10**18  # an exabyte: no disk has it
    with pytest.raises(NoDiskSpace, match="not enough disk space"):
        await fetch(f"{files.url}/huge.llamafile", tmp_path / "huge.llamafile", None)
    assert not (tmp_path / "huge.llamafile.part").exists()


async def test_progress_shows_size_speed_and_eta(files: FileServer, tmp_path: Path) -> None:
    files.files["/m.llamafile"] = DATA
    out = io.StringIO()  # not a terminal: one line per tenth
    await fetch(f"{files.url}/m.llamafile", tmp_path / "m.llamafile", None, Progress(out))
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("[########################] 100% 3.1 MB / 3.1 MB")
    assert "/s  ETA 0:00:00" in lines[-1]
    assert 2 <= len(lines) <= 12


def test_cli_refuses_a_wrong_checksum(cli: Cli, files: FileServer, home: Path) -> None:
    files.files["/m.llamafile"] = DATA
    bad = entry("bad", f"{files.url}/m.llamafile", DATA, sha256=sha256(b"not it"))
    files.files["/catalog.toml"] = catalog_toml([bad]).encode()
    assert cli("update-catalog", "--url", f"{files.url}/catalog.toml").code == 0
    result = cli("download", "bad")
    assert result.code == 1
    assert result.stderr.splitlines()[-1].startswith(
        "agent: error: checksum mismatch for bad.llamafile"
    )
    assert "Traceback" not in result.stderr
    as_json = cli("download", "bad", "--json")
    assert as_json.json()["error"] == "checksum_mismatch"
    assert not (home / "models" / "bad.llamafile").exists()
    assert not (home / "models" / "bad.llamafile.part").exists()


def test_cli_resumes_an_interrupted_download(cli: Cli, files: FileServer, home: Path) -> None:
    files.files["/m.llamafile"] = DATA
    files.files["/catalog.toml"] = catalog_toml(
        [entry("m", f"{files.url}/m.llamafile", DATA)]
    ).encode()
    assert cli("update-catalog", "--url", f"{files.url}/catalog.toml").code == 0
    files.cut_after["/m.llamafile"] = 2_000_000
    broken = cli("download", "m")
    assert broken.code == 1
    assert "interrupted after 2.0 MB" in broken.stderr
    done = cli("download", "m", "--json")
    assert done.code == 0, done.stderr
    info = done.json()
    assert info["resumed_from"] == 2_000_000
    assert info["verified"]
    assert (home / "models" / "m.llamafile").read_bytes() == DATA
