"""A recorded Claude Code request through a translating agent, and what the agent
logs when it refuses to translate: real relay and agent processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from tests.fake_backend import FakeBackend
from tests.integration.procs import agent_process, relay_process

if TYPE_CHECKING:
    import trio

CLAUDE_CODE_REQUEST = (
    Path(__file__).parents[1] / "agent" / "golden" / "claude_code_2.1.197.request.json"
)


async def test_claude_code_request_is_translated_for_an_openai_only_backend(
    nursery: trio.Nursery,
) -> None:
    backend = FakeBackend(models=["m"], anthropic=False)
    await nursery.start(backend.run)
    body = json.loads(CLAUDE_CODE_REQUEST.read_text())
    body["model"] = "m"
    async with (
        relay_process() as (relay, url),
        agent_process(relay, backend.url, "--models", "m", "--backend-dialect", "auto"),
        httpx.AsyncClient(base_url=url, timeout=20) as client,
    ):
        headers = {
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "claude-code-20250219,context-management-2025-06-27",
        }
        async with client.stream(
            "POST", "/v1/messages?beta=true", json=body, headers=headers
        ) as response:
            assert response.status_code == 200, await response.aread()
            text = (await response.aread()).decode()
    assert "event: message_stop" in text
    chat = [r for r in backend.requests if r.path == "/v1/chat/completions"]
    assert len(chat) == 1
    sent = chat[0].json
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "system"]
    assert len(sent["tools"]) == 24


async def test_a_refused_translation_logs_why(nursery: trio.Nursery) -> None:
    backend = FakeBackend(models=["m"], anthropic=False)
    await nursery.start(backend.run)
    async with (
        relay_process() as (relay, url),
        agent_process(relay, backend.url, "--models", "m", "--backend-dialect", "openai") as agent,
        httpx.AsyncClient(base_url=url, timeout=20) as client,
    ):
        response = await client.post(
            "/v1/messages", json={"model": "m", "max_tokens": 5, "messages": "not a list"}
        )
        assert response.status_code == 400
        line = await agent.wait_for(
            lambda line: line.get("event") == "request finished" and line.get("status") == 400
        )
    assert "`messages` must be a list" in line["error"]
