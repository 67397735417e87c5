"""What the relay says at start-up: effective limits, and a warning for keyless public relays."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.integration.procs import relay_process

if TYPE_CHECKING:
    from pathlib import Path

WARNING = "clients need no API key"


async def test_effective_limits_are_logged() -> None:
    async with relay_process(
        "--max-queue-len", "7", "--queue-timeout", "12", "--max-body-bytes", "1MiB"
    ) as (relay, _url):
        line = await relay.wait_for(lambda line: line.get("event") == "relay limits")
    assert line["max_queue_len"] == 7
    assert line["queue_timeout_s"] == 12
    assert line["request_timeout_s"] == 300
    assert line["max_body_bytes"] == 1024 * 1024
    assert line["heartbeat_timeout_s"] == 45
    assert line["trusted_proxies"] == "none"
    assert not any(WARNING in str(doc.get("event")) for doc in relay.lines)


async def test_warns_when_keyless_on_a_public_address() -> None:
    async with relay_process("--listen", "0.0.0.0:0") as (relay, _url):
        line = await relay.wait_for(lambda line: WARNING in str(line.get("event")))
    assert line["level"] == "warning"
    assert line["listen"].startswith("0.0.0.0:")


async def test_no_warning_when_keys_are_required(tmp_path: Path) -> None:
    async with relay_process(
        "--listen", "0.0.0.0:0", "--require-api-keys", "--data-dir", str(tmp_path)
    ) as (relay, _url):
        await relay.wait_for(lambda line: line.get("event") == "relay limits")
    assert not any(WARNING in str(doc.get("event")) for doc in relay.lines)
