"""Anthropic's prompt-cache token counts, through real relay and agent processes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from tests.fake_backend import FakeBackend
from tests.integration.procs import agent_process, relay_process

if TYPE_CHECKING:
    import trio


async def test_cache_tokens_count_as_prompt_tokens_and_are_reported_apart(
    nursery: trio.Nursery,
) -> None:
    backend = FakeBackend(models=["m"])
    await nursery.start(backend.run)
    async with (
        relay_process("--admin-token", "adm") as (relay, url),
        agent_process(relay, backend.url, "--models", "m", "--backend-dialect", "anthropic"),
        httpx.AsyncClient(base_url=url, timeout=20) as client,
    ):
        for stream in (True, False):
            body = {
                "model": "m",
                "max_tokens": 5,
                "stream": stream,
                "messages": [{"role": "user", "content": "hi"}],
                "fake": {"cache_read": 3031, "cache_creation": 10},
            }
            response = await client.post("/v1/messages", json=body)
            assert response.status_code == 200
        await relay.wait_count(("request finished",), 2)
        stats = (await client.get("/admin/stats", headers={"authorization": "Bearer adm"})).json()[
            "models"
        ]["m"]["tokens"]
        metrics = (await client.get("/metrics")).text
    finished = relay.events("request finished")
    # The fake counts 1 prompt token for "hi"; llama.cpp says the same way
    # `input_tokens: 1, cache_read_input_tokens: 3031` on a cached turn.
    assert all(line["prompt_tokens"] == 1 + 3031 + 10 for line in finished)
    assert all(line["cache_read_tokens"] == 3031 for line in finished)
    assert stats["in"] == 2 * 3042
    assert stats["cache_read"] == 2 * 3031
    assert stats["cache_creation"] == 2 * 10
    assert 'modelrelay_cache_tokens_total{kind="read",model="m"} 6062.0' in metrics
