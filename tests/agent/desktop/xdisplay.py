"""A real X display for the desktop tests and screenshots: Xvfb, a tray host, its pixels.

`Xvfb -fbdir DIR` keeps the live screen in ``DIR/Xvfb_screen0`` as an XWD
file (big-endian header: its size at byte 0, the colour-map entries at 76,
12 bytes each, then the pixels), so the tests read pixels with no image
library. ``trayer`` is a bare system tray: nothing else on screen repaints.
"""

import contextlib
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import attrs

__all__ = ["Display", "Screen", "missing_tools", "open_display", "read_screen"]


def missing_tools() -> list[str]:
    """The programs (Debian packages xvfb, trayer) that are not installed."""
    return [tool for tool in ("Xvfb", "trayer") if shutil.which(tool) is None]


@attrs.frozen
class Screen:
    """One frame of the screen: 32-bit pixels and how to read them."""

    width: int
    height: int
    bytes_per_line: int
    little_endian: bool
    masks: tuple[int, int, int]
    data: bytes

    def rgb(self, x: int, y: int) -> tuple[int, int, int]:
        offset = y * self.bytes_per_line + x * 4
        (pixel,) = struct.unpack_from("<I" if self.little_endian else ">I", self.data, offset)
        return tuple(_channel(pixel, mask) for mask in self.masks)  # type: ignore[return-value]

    def count_near(self, colour: str, tolerance: int = 40) -> int:
        """How many pixels are within `tolerance` (per channel) of ``#rrggbb``."""
        want = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
        count = 0
        for y in range(self.height):
            for x in range(self.width):
                got = self.rgb(x, y)
                if all(abs(a - b) <= tolerance for a, b in zip(got, want, strict=True)):
                    count += 1
        return count


def _channel(pixel: int, mask: int) -> int:
    shift = (mask & -mask).bit_length() - 1
    return (pixel & mask) >> shift


def read_screen(path: Path) -> Screen:
    """Read Xvfb's framebuffer file."""
    raw = path.read_bytes()
    fields = struct.unpack_from(">25I", raw, 0)
    header_size, width, height = fields[0], fields[4], fields[5]
    byte_order, bits_per_pixel, bytes_per_line = fields[7], fields[11], fields[12]
    masks = (fields[14], fields[15], fields[16])
    ncolours = fields[19]
    if bits_per_pixel != 32:
        raise ValueError(f"expected 32-bit pixels, got {bits_per_pixel}")
    start = header_size + ncolours * 12
    return Screen(width, height, bytes_per_line, byte_order == 0, masks, raw[start:])


@attrs.frozen
class Display:
    """A running Xvfb (and tray host)."""

    name: str
    framebuffer: Path

    def screen(self) -> Screen:
        return read_screen(self.framebuffer)


@contextlib.contextmanager
def open_display(directory: Path, size: str = "480x120", tray: bool = True) -> Iterator[Display]:
    """Start Xvfb on a free display number (and trayer at the top right); stop them after."""
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(
        [
            "Xvfb",
            "-displayfd",
            str(write_fd),
            "-screen",
            "0",
            f"{size}x24",
            "-fbdir",
            str(directory),
            "-nolisten",
            "tcp",
        ],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    procs = [xvfb]
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            number = pipe.readline().decode().strip()
        if not number:
            raise RuntimeError("Xvfb did not start")
        name = f":{number}"
        if tray:
            procs.append(
                subprocess.Popen(
                    [
                        "trayer",
                        "--edge",
                        "top",
                        "--align",
                        "right",
                        "--widthtype",
                        "pixel",
                        "--width",
                        "96",
                        "--height",
                        "32",
                        "--SetDockType",
                        "false",
                    ],
                    env={**os.environ, "DISPLAY": name},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        yield Display(name, directory / "Xvfb_screen0")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
