"""A real nginx running contrib/nginx/modelrelay.conf as shipped, on ephemeral ports.

Only what cannot work on a test machine is changed: the relay's address, the
listen ports (loopback, chosen by the kernel), the certificate paths, and the
IPv6 listen lines. The file is otherwise the operator's.
"""

from __future__ import annotations

import re
import socket
import subprocess
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from tests.syspkg import require_tool

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "contrib" / "nginx" / "modelrelay.conf"

__all__ = ["CONF", "nginx_version", "run_nginx", "self_signed"]


def _free_port() -> int:
    # nginx cannot report a port the kernel chose: take one and hand it over.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by Debian's openssl."""
    openssl = require_tool("openssl", "openssl")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def nginx_version(nginx: str) -> tuple[int, ...]:
    out = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=True).stderr
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out)
    assert match, out
    return tuple(int(g) for g in match.groups())


def adapted_conf(
    relay_port: int,
    https_port: int,
    http_port: int,
    cert: Path,
    key: Path,
    version: tuple[int, ...],
) -> str:
    text = CONF.read_text()
    text = text.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{relay_port};")
    text = re.sub(r"^\s*listen \[::\]:\d+[^;]*;\n", "", text, flags=re.M)
    text = re.sub(r"listen 80;", f"listen 127.0.0.1:{http_port};", text)
    text = re.sub(r"listen 443 ssl([^;]*);", rf"listen 127.0.0.1:{https_port} ssl\1;", text)
    if version < (1, 25, 1):
        # `http2 on;` is nginx >= 1.25.1; older ones take `http2` on the listen line.
        text = re.sub(r"^\s*http2 on;\n", "", text, flags=re.M)
        text = re.sub(r"(listen 127\.0\.0\.1:\d+ ssl);", r"\1 http2;", text)
    text = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {cert};", text)
    text = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {key};", text)
    return text


def _prepare(nginx: str, relay_port: int, directory: Path) -> tuple[Path, int]:
    """Write nginx.conf (around the adapted site file) and check it with `nginx -t`."""
    cert, key = self_signed(directory)
    https_port, http_port = _free_port(), _free_port()
    site = directory / "modelrelay.conf"
    site.write_text(
        adapted_conf(relay_port, https_port, http_port, cert, key, nginx_version(nginx))
    )
    main = directory / "nginx.conf"
    temp = directory / "tmp"
    temp.mkdir()
    main.write_text(
        f"daemon off;\nworker_processes 1;\npid {directory}/nginx.pid;\n"
        f"error_log {directory}/error.log warn;\nevents {{ worker_connections 256; }}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {temp}/body;\n"
        f"  proxy_temp_path {temp}/proxy;\n  fastcgi_temp_path {temp}/fcgi;\n"
        f"  uwsgi_temp_path {temp}/uwsgi;\n  scgi_temp_path {temp}/scgi;\n"
        f"  include {site};\n}}\n"
    )
    directory.chmod(0o755)  # nginx's workers run as nobody
    check = subprocess.run(
        [nginx, "-t", "-c", str(main), "-p", str(directory)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    return main, https_port


@asynccontextmanager
async def run_nginx(relay_port: int, directory: Path) -> AsyncIterator[int]:
    """nginx in front of the relay at `relay_port`; yields its https port."""
    nginx = require_tool("nginx", "nginx-light")
    main, https_port = _prepare(nginx, relay_port, directory)
    process = await trio.lowlevel.open_process(
        [nginx, "-c", str(main), "-p", str(directory)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with trio.fail_after(20):
            while True:  # until nginx accepts connections (it has no readiness signal)
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", https_port)
                except OSError:
                    if process.returncode is not None:
                        raise AssertionError(f"nginx exited: see {directory}/error.log") from None
                    await trio.sleep(0.05)
                else:
                    await stream.aclose()
                    break
        yield https_port
    finally:
        process.terminate()
        with trio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.kill()
