"""Anthropic's prompt-cache token counts, through real relay and agent processes."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.integration.conftest import OpenStack

MODEL = "fake-model"  # what the `backend` fixture serves


async def test_cache_tokens_count_as_prompt_tokens_and_are_reported_apart(
    open_stack: OpenStack,
) -> None:
    agent_args = ("--models", MODEL, "--backend-dialect", "anthropic")
    async with open_stack("--admin-token", "adm", agent_args=agent_args) as stack:
        relay, client = stack.relay, stack.client
        for stream in (True, False):
            body = {
                "model": MODEL,
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
        ][MODEL]["tokens"]
        metrics = (await client.get("/metrics")).text
    finished = relay.events("request finished")
    # The fake counts 1 prompt token for "hi"; llama.cpp says the same way
    # `input_tokens: 1, cache_read_input_tokens: 3031` on a cached turn.
    assert all(line["prompt_tokens"] == 1 + 3031 + 10 for line in finished)
    assert all(line["cache_read_tokens"] == 3031 for line in finished)
    assert stats["in"] == 2 * 3042
    assert stats["cache_read"] == 2 * 3031
    assert stats["cache_creation"] == 2 * 10
    assert f'modelrelay_cache_tokens_total{{kind="read",model="{MODEL}"}} 6062.0' in metrics
