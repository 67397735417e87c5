"""The official `anthropic` SDK against relay + agent + backend.

The agent runs with ``--backend-dialect anthropic``: llama.cpp serves
``/v1/messages`` natively, and so does the fake. A request shaped like Claude
Code's must reach the backend byte for byte as the SDK sent it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anthropic
import httpx
import openai
import pytest
import trio

from tests.e2e.conftest import FAKE_MODEL, FAKE_TIMEOUT, GREEDY, Stack, Target, open_stack

if TYPE_CHECKING:
    from pathlib import Path

    import httpx2  # the SDK's HTTP client (not the httpx the project uses)

HI = [{"role": "user", "content": "Say hello in one short sentence."}]
MAX_TOKENS = 12
BETAS = (
    "claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"
)


def async_client(stack: Stack, **kwargs: Any) -> anthropic.AsyncAnthropic:  # noqa: ANN401  # the SDK's own options
    kwargs.setdefault("api_key", "unused")
    return anthropic.AsyncAnthropic(
        base_url=stack.url, max_retries=0, timeout=stack.timeout, **kwargs
    )


async def test_messages_create(stack: Stack) -> None:
    with trio.fail_after(stack.timeout):
        async with async_client(stack) as client:
            raw = await client.messages.with_raw_response.create(
                model=stack.model, max_tokens=MAX_TOKENS, messages=HI
            )
        message = await raw.parse()
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.output_tokens > 0
    if stack.target.live:
        assert message.usage.output_tokens <= MAX_TOKENS
    line = await stack.wait_finished(raw.headers["x-request-id"])
    assert line["path"] == "/v1/messages"
    assert line["status"] == 200


async def test_messages_stream(stack: Stack) -> None:
    with trio.fail_after(stack.timeout):
        async with (
            async_client(stack) as client,
            client.messages.stream(
                model=stack.model, max_tokens=MAX_TOKENS, messages=HI, extra_body=GREEDY
            ) as stream,
        ):
            pieces = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
    assert "".join(pieces).strip()
    assert final.content[0].type == "text"
    assert final.content[0].text == "".join(pieces)
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.output_tokens > 0
    if stack.target.live:
        assert final.usage.output_tokens <= MAX_TOKENS


# ---------------------------------------------------------------- Claude Code


def claude_code_request(model: str) -> dict[str, Any]:
    """The keyword arguments of a Claude Code turn: system blocks with cache_control, tools."""
    return {
        "model": model,
        "max_tokens": 64,
        # This SDK's create() has no `temperature` parameter any more; Claude
        # Code (an older SDK) sends one, so it goes in as an extra field.
        "extra_body": {"temperature": 1},
        "system": [
            {
                "type": "text",
                "text": "You are Claude Code, Anthropic's official CLI for Claude.",
                "cache_control": {"type": "ephemeral"},
            },
            {
                "type": "text",
                "text": "You are an interactive CLI tool that helps users with software "
                "engineering tasks. Use the tools available to you.",
                "cache_control": {"type": "ephemeral"},
            },
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>Be brief.</system-reminder>"},
                    {
                        "type": "text",
                        "text": "List the files in the current directory.",
                        "cache_control": {"type": "ephemeral"},
                    },
                ],
            }
        ],
        "tools": [
            {
                "name": "Bash",
                "description": "Executes a given bash command and returns its output.",
                "input_schema": {
                    "type": "object",
                    "properties": {
                        "command": {"type": "string", "description": "The command to execute"},
                        "timeout": {"type": "number", "description": "Optional timeout in ms"},
                    },
                    "required": ["command"],
                    "additionalProperties": False,
                    "$schema": "http://json-schema.org/draft-07/schema#",
                },
            },
            {
                "name": "Read",
                "description": "Reads a file from the local filesystem.",
                "input_schema": {
                    "type": "object",
                    "properties": {"file_path": {"type": "string"}},
                    "required": ["file_path"],
                },
                "cache_control": {"type": "ephemeral"},
            },
        ],
        "metadata": {"user_id": "user_e2e_account__session_0000"},
        # Claude Code posts to /v1/messages?beta=true.
        "extra_query": {"beta": "true"},
    }


class SentBodies:
    """Records the bodies and headers the SDK's own HTTP client put on the wire."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []

    async def __call__(self, request: httpx2.Request) -> None:
        self.requests.append((request.url.path, dict(request.headers), request.content))


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
async def test_claude_code_shaped_request_reaches_the_backend_intact(
    fake_stack: Stack, stream: bool
) -> None:
    sent = SentBodies()
    params = claude_code_request(fake_stack.model)
    http_client = anthropic.DefaultAsyncHttpxClient(event_hooks={"request": [sent]})
    with trio.fail_after(fake_stack.timeout):
        async with async_client(
            fake_stack,
            http_client=http_client,
            default_headers={"anthropic-beta": BETAS, "x-app": "cli"},
        ) as client:
            if stream:
                async with client.messages.stream(**params) as events:
                    final = await events.get_final_message()
            else:
                final = await client.messages.create(**params)
    assert final.content[0].type == "text"

    (path, sent_headers, sent_body) = sent.requests[-1]
    assert path == "/v1/messages"
    agent_line = await fake_stack.agent.wait_for(
        lambda line: line.get("event") == "request finished"
    )
    # The relay forwards the path; whether "?beta=true" follows is its choice
    # (today it does not: llama.cpp, Ollama and vLLM ignore it anyway).
    assert agent_line["path"].split("?")[0] == "/v1/messages"
    assert fake_stack.fake is not None
    (recorded,) = [r for r in fake_stack.fake.requests if r.method == "POST"]
    assert recorded.path == "/v1/messages"
    # Intact: the same JSON document, and in fact the same bytes.
    assert recorded.json == json.loads(sent_body)
    assert recorded.body == sent_body
    assert recorded.json["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert recorded.json["tools"][1]["cache_control"] == {"type": "ephemeral"}
    assert recorded.json.get("stream", False) is stream
    assert recorded.json["temperature"] == 1
    # The headers a backend needs arrived as the SDK sent them.
    assert recorded.headers["anthropic-beta"] == sent_headers["anthropic-beta"] == BETAS
    assert recorded.headers["anthropic-version"] == sent_headers["anthropic-version"]
    assert recorded.headers["content-type"] == "application/json"


@pytest.mark.live
async def test_claude_code_shaped_request_against_llama(llama_stack: Stack) -> None:
    """llama.cpp's own /v1/messages takes the Claude Code shape, and the SDK parses it."""
    params = claude_code_request(llama_stack.model)
    params["max_tokens"] = 24
    params["extra_body"] = GREEDY  # not Claude Code's temperature 1: see GREEDY
    with trio.fail_after(llama_stack.timeout):
        async with (
            async_client(llama_stack, default_headers={"anthropic-beta": BETAS}) as client,
            client.messages.stream(**params) as stream,
        ):
            final = await stream.get_final_message()
    assert final.role == "assistant"
    assert final.content
    assert all(b.type in ("text", "tool_use") for b in final.content)
    assert final.stop_reason in ("end_turn", "max_tokens", "tool_use")
    assert 0 < final.usage.output_tokens <= 24


# ------------------------------------------------------------------ API keys


async def test_x_api_key_and_bearer_both_accepted_when_keys_are_required(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    admin = "e2e-admin-token"
    flags = ("--require-api-keys", "--admin-token", admin, "--data-dir", str(tmp_path / "data"))
    async with open_stack(Target("fake", FAKE_MODEL), nursery, *flags) as stack:
        with trio.fail_after(FAKE_TIMEOUT):
            async with httpx.AsyncClient(base_url=stack.url) as http:
                created = await http.post(
                    "/admin/keys",
                    json={"name": "e2e"},
                    headers={"authorization": f"Bearer {admin}"},
                )
            assert created.status_code == 201, created.text
            key = created.json()["key"]
            assert key.startswith("mr-")

            # x-api-key (what Anthropic clients send) and Bearer both work.
            async with async_client(stack, api_key=key) as by_header:
                one = await by_header.messages.create(
                    model=stack.model, max_tokens=MAX_TOKENS, messages=HI
                )
            async with anthropic.AsyncAnthropic(
                base_url=stack.url,
                auth_token=key,
                api_key=None,
                max_retries=0,
                timeout=stack.timeout,
            ) as by_bearer:
                two = await by_bearer.messages.create(
                    model=stack.model, max_tokens=MAX_TOKENS, messages=HI
                )
            async with openai.AsyncOpenAI(
                base_url=f"{stack.url}/v1", api_key=key, max_retries=0, timeout=stack.timeout
            ) as oai:
                three = await oai.chat.completions.create(
                    model=stack.model, messages=HI, max_tokens=MAX_TOKENS
                )
            assert one.content[0].text
            assert two.content[0].text
            assert three.choices[0].message.content

            # A wrong key, or none: 401 in each SDK's own exception type.
            async with async_client(stack, api_key="mr-not-a-key") as wrong:
                with pytest.raises(anthropic.AuthenticationError) as anthropic_refusal:
                    await wrong.messages.create(
                        model=stack.model, max_tokens=MAX_TOKENS, messages=HI
                    )
            async with openai.AsyncOpenAI(
                base_url=f"{stack.url}/v1",
                api_key="mr-not-a-key",
                max_retries=0,
                timeout=stack.timeout,
            ) as wrong_openai:
                with pytest.raises(openai.AuthenticationError) as openai_refusal:
                    await wrong_openai.chat.completions.create(
                        model=stack.model, messages=HI, max_tokens=MAX_TOKENS
                    )
            async with httpx.AsyncClient(base_url=stack.url) as http:
                no_key = await http.post(
                    "/v1/messages",
                    json={"model": stack.model, "max_tokens": 4, "messages": HI},
                )
    assert no_key.status_code == 401
    assert no_key.json()["type"] == "error"
    assert openai_refusal.value.status_code == 401
    assert anthropic_refusal.value.status_code == 401
    assert isinstance(anthropic_refusal.value.body, dict)
    assert anthropic_refusal.value.body.get("type") == "error"  # Anthropic's error shape
    # Three requests got through; the relay kept every key to itself.
    assert stack.fake is not None
    posts = [r for r in stack.fake.requests if r.method == "POST"]
    assert len(posts) == 3
    for recorded in posts:
        assert "authorization" not in recorded.headers
        assert "x-api-key" not in recorded.headers
        assert key not in json.dumps(recorded.headers)
