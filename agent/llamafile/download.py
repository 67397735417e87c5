"""Downloads that resume, show progress, verify sha256 and land atomically.

The bytes go to ``NAME.part`` next to the destination; a broken transfer
keeps that file, and the next run asks for the rest with an HTTP ``Range``
header (a server that ignores it answers 200 and we start over). Once every
byte is there the sha256 is checked: a mismatch deletes the part (it can
never become right by resuming) and says so; a match renames the part onto
the destination (atomic on one file system) and makes it executable.

Free space is checked against the announced size before the first byte, and
ENOSPC/EACCES while writing become `NoDiskSpace` / `NoPermission`.
"""

import errno
import hashlib
import os
import shutil
import stat
import sys
import time
from pathlib import Path
from typing import IO

import attrs
import httpx
import trio

from agent.llamafile.errors import (
    ChecksumMismatch,
    DownloadError,
    DownloadInterrupted,
    NoDiskSpace,
    NoPermission,
)
from agent.llamafile.units import human_bytes

__all__ = ["DownloadResult", "Progress", "download", "human_bytes", "sha256_file"]

_CHUNK = 1024 * 1024  # write in 1 MiB pieces: one thread hop per MiB, not per packet
_HASH_BLOCK = 4 * 1024 * 1024


def _clock(secs: float) -> str:
    secs = int(secs)
    return f"{secs // 3600}:{secs // 60 % 60:02d}:{secs % 60:02d}"


@attrs.define(eq=False)
class Progress:
    """Draws a one-line progress bar (size, speed, ETA) on a terminal.

    On a terminal the line is redrawn in place at most 10 times a second; on
    anything else (a log, a pipe) one line is written per 10 %, so logs stay
    short. ``enabled=False`` draws nothing (``--json``, ``--quiet``).
    """

    out: IO[str] = sys.stderr
    enabled: bool = True
    _start: float = attrs.field(factory=time.monotonic, init=False)
    _first: int = attrs.field(default=-1, init=False)
    _last_draw: float = attrs.field(default=0.0, init=False)
    _last_tenth: int = attrs.field(default=-1, init=False)

    def update(self, done: int, total: int | None, *, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self._first < 0:
            self._first = done  # resumed bytes do not count towards the speed
        tty = self.out.isatty()
        tenth = done * 10 // total if total else -1
        if not final and (
            (tty and now - self._last_draw < 0.1) or (not tty and tenth == self._last_tenth)
        ):
            return
        self._last_draw, self._last_tenth = now, tenth
        speed = (done - self._first) / max(now - self._start, 1e-3)
        if total:
            width = 24
            filled = width * done // total
            bar = "#" * filled + "-" * (width - filled)
            if done >= total:
                eta = "0:00:00"
            else:
                eta = _clock((total - done) / speed) if speed > 0 else "-:--:--"
            text = (
                f"[{bar}] {100 * done // total:3d}% {human_bytes(done)} / {human_bytes(total)}"
                f"  {human_bytes(speed)}/s  ETA {eta}"
            )
        else:
            text = f"{human_bytes(done)}  {human_bytes(speed)}/s"
        self.out.write(("\r" + text + "\x1b[K") if tty else text + "\n")
        if tty and final:
            self.out.write("\n")
        self.out.flush()


@attrs.frozen
class DownloadResult:
    """What `download` did.

    Attributes:
        path: The finished file.
        size: Its size in bytes.
        sha256: Its checksum (computed while downloading).
        verified: Whether it was checked against an expected sha256.
        resumed_from: Bytes that were already in the `.part` file (0 = fresh).
        already: The file was already complete; nothing was fetched.
    """

    path: Path
    size: int
    sha256: str
    verified: bool
    resumed_from: int
    already: bool = False


def sha256_file(path: Path, limit: int | None = None) -> "hashlib._Hash":
    """A sha256 object fed with `path`'s first `limit` bytes (all of it if None)."""
    digest = hashlib.sha256()
    remaining = limit
    with path.open("rb") as handle:
        while remaining is None or remaining > 0:
            block = handle.read(_HASH_BLOCK if remaining is None else min(_HASH_BLOCK, remaining))
            if not block:
                break
            digest.update(block)
            if remaining is not None:
                remaining -= len(block)
    return digest


def _os_error(exc: OSError, path: Path) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoDiskSpace(f"no space left on the disk of {path.parent} while writing {path.name}")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return NoPermission(f"not allowed to write {path}: {exc.strerror}")
    return DownloadError(f"cannot write {path}: {exc.strerror}")


def _check_space(directory: Path, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise NoDiskSpace(
            f"not enough disk space in {directory}: the download needs "
            f"{human_bytes(needed)} more, {human_bytes(free)} is free"
        )


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-999/1000"
    if not value or not value.startswith("bytes "):
        return None
    start, _, _rest = value[6:].partition("-")
    return int(start) if start.isdigit() else None


def _finish(part: Path, dest: Path) -> None:
    os.replace(part, dest)
    mode = dest.stat().st_mode
    dest.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


async def download(
    client: httpx.AsyncClient,
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    progress: Progress | None = None,
) -> DownloadResult:
    """Fetch `url` into `dest`, resuming a `.part` file if there is one.

    The caller bounds the whole transfer; `client`'s timeouts bound each read.

    Args:
        client: The HTTP client (follows redirects: model hosts use CDNs).
        url: What to fetch.
        dest: The final path; its directory must exist.
        sha256: The expected checksum (lower-case hex), if known.
        progress: Where to draw progress (None: nowhere).

    Returns:
        What was done.

    Raises:
        DownloadInterrupted: The transfer broke; run again to resume.
        ChecksumMismatch: Complete, but the sha256 differs; the part was deleted.
        DownloadError: The server refused (HTTP status), or another failure.
        NoDiskSpace: Not enough room (before starting, or while writing).
        NoPermission: The directory is not writable.
    """
    progress = progress or Progress(enabled=False)
    if await trio.Path(dest).exists():
        digest = await trio.to_thread.run_sync(sha256_file, dest)
        if sha256 is None or digest.hexdigest() == sha256:
            size = (await trio.Path(dest).stat()).st_size
            return DownloadResult(dest, size, digest.hexdigest(), sha256 is not None, 0, True)
        raise ChecksumMismatch(
            f"{dest} exists but its sha256 is {digest.hexdigest()}, not {sha256}: "
            "remove it (agent llamafile rm) and download again"
        )
    part = dest.with_name(dest.name + ".part")
    offset = (await trio.Path(part).stat()).st_size if await trio.Path(part).exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    # Hash what we already have while the request goes out? Keep it simple and
    # ordered: the part is read once here, then extended.
    digest = (
        await trio.to_thread.run_sync(sha256_file, part, offset) if offset else hashlib.sha256()
    )
    resumed_from = 0
    try:
        async with client.stream("GET", url, headers=headers) as response:
            if response.status_code == 416 and offset:
                # Nothing left to send: the part is already whole.
                total = offset
            elif response.status_code == 206 and offset:
                if _content_range_start(response.headers.get("content-range")) != offset:
                    raise DownloadError(
                        f"{url} answered a range we did not ask for "
                        f"({response.headers.get('content-range')!r}); delete {part} and retry"
                    )
                resumed_from = offset
                total = await _receive(response, part, "ab", offset, digest, progress)
            elif response.status_code == 200:
                digest = hashlib.sha256()  # the server ignored Range: start over
                offset = 0
                total = await _receive(response, part, "wb", 0, digest, progress)
            else:
                raise DownloadError(f"{url} answered HTTP {response.status_code}")
    except httpx.HTTPError as exc:
        have = (await trio.Path(part).stat()).st_size if await trio.Path(part).exists() else 0
        raise DownloadInterrupted(
            f"download of {dest.name} interrupted after {human_bytes(have)} ({exc!s} "
            f"[{type(exc).__name__}]); run the same command again to resume"
        ) from None
    actual = digest.hexdigest()
    if sha256 is not None and actual != sha256:
        part.unlink(missing_ok=True)
        raise ChecksumMismatch(
            f"checksum mismatch for {dest.name}: expected sha256 {sha256}, got {actual}; "
            f"deleted the downloaded file ({human_bytes(total)})"
        )
    try:
        _finish(part, dest)
    except OSError as exc:
        raise _os_error(exc, dest) from None
    return DownloadResult(dest, total, actual, sha256 is not None, resumed_from)


async def _receive(
    response: httpx.Response,
    part: Path,
    mode: str,
    offset: int,
    digest: "hashlib._Hash",
    progress: Progress,
) -> int:
    """Append the body to `part`; returns the file's final size."""
    length = response.headers.get("content-length")
    expected = offset + int(length) if length and length.isdigit() else None
    if expected is not None:
        _check_space(part.parent, expected - offset)
    done = offset
    progress.update(done, expected)  # the starting point: speed counts from here
    try:
        async with await trio.open_file(part, mode) as handle:
            buffer = bytearray()
            try:
                # Raw bytes: a Content-Encoding must not change what the offsets count.
                async for chunk in response.aiter_raw():
                    buffer += chunk
                    if len(buffer) >= _CHUNK:
                        await handle.write(bytes(buffer))
                        digest.update(buffer)
                        done += len(buffer)
                        buffer.clear()
                        progress.update(done, expected)
            except httpx.HTTPError:
                # Keep what arrived: the resume starts after it.
                if buffer:
                    await handle.write(bytes(buffer))
                    done += len(buffer)
                raise
            if buffer:
                await handle.write(bytes(buffer))
                digest.update(buffer)
                done += len(buffer)
    except OSError as exc:
        raise _os_error(exc, part) from None
    finally:
        progress.update(done, expected, final=True)
    if expected is not None and done != expected:
        raise DownloadInterrupted(
            f"download of {part.name.removesuffix('.part')} stopped at {human_bytes(done)} "
            f"of {human_bytes(expected)}; run the same command again to resume"
        )
    return done
