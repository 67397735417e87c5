"""`--trusted-proxies` behind the nginx contrib ships: the relay sees the real client.

Clients and agents connect to nginx from distinct loopback addresses
(127.0.0.2, .3, .4): nginx itself reaches the relay from 127.0.0.1.
"""

from __future__ import annotations

import base64
import os
import ssl
from typing import TYPE_CHECKING

import httpx

from tests.integration.nginx import run_nginx
from tests.integration.procs import relay_process

if TYPE_CHECKING:
    from pathlib import Path


def _client(cert: Path, source: str, base: str) -> httpx.AsyncClient:
    context = ssl.create_default_context(cafile=str(cert))
    transport = httpx.AsyncHTTPTransport(verify=context, local_address=source)
    return httpx.AsyncClient(base_url=base, transport=transport, timeout=20)


def _upgrade_headers(secret: str) -> dict[str, str]:
    return {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "X-Worker-Secret": secret,
    }


async def test_real_client_address_through_nginx(tmp_path: Path) -> None:
    async with relay_process("--trusted-proxies", "127.0.0.1/32") as (relay, url):
        port = int(url.rsplit(":", 1)[1])
        async with run_nginx(port, tmp_path) as https_port:
            base = f"https://127.0.0.1:{https_port}"
            cert = tmp_path / "cert.pem"
            async with _client(cert, "127.0.0.2", base) as client:
                answer = await client.post(
                    "/v1/chat/completions",
                    json={"model": "nobody-serves-this", "messages": []},
                    headers={"user-agent": "operator-test/1.0", "x-request-id": "via-nginx"},
                )
                assert answer.status_code == 404
            line = await relay.wait_for(lambda line: line.get("client_request_id") == "via-nginx")
            assert line["client_ip"] == "127.0.0.2"
            assert line["user_agent"] == "operator-test/1.0"

            # The per-address worker-auth limit counts the agent's real address.
            async with _client(cert, "127.0.0.3", base) as noisy:
                statuses = [
                    (
                        await noisy.get("/v1/worker/connect", headers=_upgrade_headers("no"))
                    ).status_code
                    for _ in range(11)
                ]
            assert statuses[:10] == [401] * 10
            assert statuses[10] == 429
            async with _client(cert, "127.0.0.4", base) as other:
                answer = await other.get("/v1/worker/connect", headers=_upgrade_headers("no"))
            assert answer.status_code == 401  # another box is not locked out
            limited = await relay.wait_for(lambda ln: ln.get("event") == "worker auth rate limited")
            assert limited["peer"] == "127.0.0.3"


async def test_headers_from_an_untrusted_peer_are_ignored() -> None:
    async with relay_process("--trusted-proxies", "127.0.0.1/32") as (relay, url):
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.5")
        async with httpx.AsyncClient(base_url=url, transport=transport, timeout=20) as client:
            answer = await client.post(
                "/v1/chat/completions",
                json={"model": "nobody-serves-this", "messages": []},
                headers={"x-forwarded-for": "203.0.113.9", "x-request-id": "spoofed"},
            )
        assert answer.status_code == 404
        line = await relay.wait_for(lambda line: line.get("client_request_id") == "spoofed")
        assert line["client_ip"] == "127.0.0.5"
