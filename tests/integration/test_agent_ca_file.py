"""`agent run --ca-file`: an agent reaches a relay behind TLS with a private CA (real nginx)."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

from tests.integration.nginx import run_nginx
from tests.integration.procs import agent_process, relay_process

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fake_backend import FakeBackend


async def test_wss_with_a_private_ca(backend: FakeBackend, tmp_path: Path) -> None:
    async with relay_process() as (relay, url):
        port = int(url.rsplit(":", 1)[1])
        async with run_nginx(port, tmp_path) as https_port:
            proxy = f"https://127.0.0.1:{https_port}"
            # Without the CA the certificate is refused: the agent says so, no worker joins.
            async with agent_process(relay, backend.url, "--proxy-url", proxy, wait=False) as bad:
                await bad.wait_for(lambda line: "certificate" in str(line).lower())
                assert not relay.events("worker registered")
            ca = str(tmp_path / "cert.pem")
            # agent_process waits until the relay routes the backend's model to it.
            async with agent_process(relay, backend.url, "--proxy-url", proxy, "--ca-file", ca):
                assert relay.events("worker registered")


def test_unusable_ca_file_is_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    for path, words in ((junk, "no usable PEM"), (tmp_path / "missing.pem", "does not exist")):
        done = subprocess.run(
            [sys.executable, "-m", "agent", "run", "--worker-secret", "s", "--ca-file", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1, done.stderr
        assert "--ca-file" in done.stderr
        assert words in done.stderr
