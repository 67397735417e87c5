"""The official `openai` SDK against relay + agent + backend (fake and real llama.cpp).

AsyncOpenAI runs under trio as it is (its HTTP client sits on anyio, which
supports trio); the sync client runs in a worker thread. Every client has
``max_retries=0``: retries would hide failures and stretch the timeouts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
import trio

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

HI = [{"role": "user", "content": "Say hello in one short sentence."}]
MAX_TOKENS = 12


def async_client(stack: Stack, **kwargs: Any) -> openai.AsyncOpenAI:  # noqa: ANN401  # the SDK's own options
    return openai.AsyncOpenAI(
        base_url=f"{stack.url}/v1", api_key="unused", max_retries=0, timeout=stack.timeout, **kwargs
    )


def sync_client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{stack.url}/v1", api_key="unused", max_retries=0, timeout=stack.timeout
    )


async def test_chat_async_non_streaming(stack: Stack) -> None:
    with trio.fail_after(stack.timeout):
        async with async_client(stack) as client:
            raw = await client.chat.completions.with_raw_response.create(
                model=stack.model, messages=HI, max_tokens=MAX_TOKENS
            )
        completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.usage is not None
    if stack.target.live:
        assert completion.usage.completion_tokens <= MAX_TOKENS
    line = await stack.wait_finished(raw.headers["x-request-id"])
    assert line["status"] == 200
    assert line["stream"] is False


async def test_chat_async_streaming(stack: Stack) -> None:
    with trio.fail_after(stack.timeout):
        async with async_client(stack) as client:
            stream = await client.chat.completions.create(
                model=stack.model,
                messages=HI,
                max_tokens=MAX_TOKENS,
                stream=True,
                stream_options={"include_usage": True},
            )
            async with stream:
                chunks = [chunk async for chunk in stream]
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes
    assert finishes[-1] in ("stop", "length")
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens > 0
    if stack.target.live:
        assert usage.completion_tokens <= MAX_TOKENS


async def test_chat_sync_client_in_a_thread(stack: Stack) -> None:
    def run() -> tuple[Any, list[Any]]:
        with sync_client(stack) as client:
            whole = client.chat.completions.create(
                model=stack.model, messages=HI, max_tokens=MAX_TOKENS
            )
            with client.chat.completions.create(
                model=stack.model, messages=HI, max_tokens=MAX_TOKENS, stream=True
            ) as stream:
                chunks = list(stream)
        return whole, chunks

    with trio.fail_after(stack.timeout):
        whole, chunks = await trio.to_thread.run_sync(run, abandon_on_cancel=True)
    assert whole.choices[0].message.content
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


async def test_responses_api_non_streaming(stack: Stack) -> None:
    with trio.fail_after(stack.timeout):
        async with async_client(stack) as client:
            response = await client.responses.create(
                model=stack.model, input="Say hello.", max_output_tokens=16
            )
    assert response.object == "response"
    assert response.status == "completed"
    assert response.output_text.strip()
    assert response.usage is not None
    assert response.usage.output_tokens > 0
    if stack.target.live:
        assert response.usage.output_tokens <= 16


async def test_responses_api_streaming(stack: Stack) -> None:
    with trio.fail_after(stack.timeout):
        async with async_client(stack) as client:
            stream = await client.responses.create(
                model=stack.model, input="Say hello.", max_output_tokens=16, stream=True
            )
            async with stream:
                events = [event async for event in stream]
    types = [event.type for event in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas.strip()
    assert events[-1].response.output_text == deltas


async def test_models_list_shows_the_backend_model(stack: Stack) -> None:
    with trio.fail_after(stack.timeout):
        async with async_client(stack) as client:
            page = await client.models.list()
            ids = [model.id async for model in page]
    assert stack.model in ids
    assert all(model.object == "model" for model in page.data)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_backend_error_is_the_sdks_exception_with_the_backends_message(
    stack: Stack, stream: bool
) -> None:
    if stack.target.live:
        # llama.cpp refuses more choices than it has slots: a 400 of its own.
        extra: dict[str, Any] = {"n": 5}
    else:
        extra = {"fake": {"status": 400}}
    body = {"model": stack.model, "messages": HI, "max_tokens": 4, "stream": stream, **extra}
    with trio.fail_after(stack.timeout):
        # What the backend itself says to this request, asked directly.
        async with httpx.AsyncClient(timeout=stack.timeout) as direct:
            expected = await direct.post(f"{stack.backend_url}/v1/chat/completions", json=body)
        assert expected.status_code == 400, expected.text
        message = expected.json()["error"]["message"]
        async with async_client(stack) as client:
            with pytest.raises(openai.BadRequestError) as caught:
                await client.chat.completions.create(
                    model=stack.model,
                    messages=HI,
                    max_tokens=4,
                    stream=stream,
                    extra_body=extra,
                )
    error = caught.value
    assert error.status_code == 400
    assert message in error.message
    assert isinstance(error.body, dict)
    assert error.body.get("message") == message
    assert error.response.headers.get("x-request-id")
