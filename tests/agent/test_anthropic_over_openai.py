"""`AnthropicOverOpenAI` against a backend that gives answers the FakeBackend cannot be
asked for (a real HTTP server with one canned answer): the exchange alone, then one job.

The dialect choice around it, end to end, is in test_dialect_exchange.py.
"""

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from agent.anthropic_over_openai import AnthropicOverOpenAI
from agent.backend import Backend, open_backend
from agent.errors import BackendError
from agent.exchange import Reply
from agent.jobs import Job, run_job
from agent.outbox import Outgoing
from agent.translate import TOKEN_ESTIMATE_HEADER, TOKEN_ESTIMATE_METHOD
from tests.agent.fakes import CannedBackend, answer_with, drain, fast_config
from tests.agent.test_dialect_exchange import messages_request
from tests.agent.test_translate_stream import sdk_final_message
from wire import Request, ResponseComplete, TokenCounts

GOLDEN = Path(__file__).parent / "golden"

CHAT_COMPLETION = {
    "id": "chatcmpl-json",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 4, "completion_tokens": 1},
}


@pytest.fixture
async def backend(canned_backend: CannedBackend) -> AsyncIterator[Backend]:
    config = fast_config("ws://127.0.0.1:1", canned_backend.url, backend_dialect="openai")
    async with open_backend(config) as opened:
        yield opened


async def answer(backend: Backend, request: Request) -> tuple[str, ResponseComplete, Reply]:
    """Run `request` through the exchange: the chunks' text, the complete, the reply."""
    return await answer_with(AnthropicOverOpenAI(backend), request)


async def test_a_stream_request_answered_with_one_json_body_still_streams(
    backend: Backend, canned_backend: CannedBackend
) -> None:
    canned_backend.answer(200, json.dumps(CHAT_COMPLETION).encode(), "application/json")
    text, done, reply = await answer(backend, messages_request("r1", stream=True))
    path, sent = canned_backend.requests[0]
    assert path == "/v1/chat/completions"
    assert json.loads(sent)["stream"] is True
    assert done.status_code == 200
    assert done.headers is not None
    assert done.headers["content-type"] == "text/event-stream"
    assert done.token_counts == TokenCounts(4, 1, 5)
    message = sdk_final_message(text)
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hi"
    assert reply.notes == {"translated": "openai-chat"}


async def test_a_whole_answer_is_one_anthropic_message(
    backend: Backend, canned_backend: CannedBackend
) -> None:
    canned_backend.answer(200, json.dumps(CHAT_COMPLETION).encode(), "application/json")
    text, done, _ = await answer(backend, messages_request("r1"))
    assert "stream" not in json.loads(canned_backend.requests[0][1])
    assert text == ""
    assert done.headers is not None
    assert done.headers["content-type"] == "application/json"
    message = json.loads(done.body or "")
    assert (message["type"], message["content"]) == ("message", [{"type": "text", "text": "Hi"}])
    assert done.token_counts == TokenCounts(4, 1, 5)


async def test_a_tool_call_stream_reaches_the_client_as_tool_use_blocks(
    backend: Backend, canned_backend: CannedBackend
) -> None:
    golden = (GOLDEN / "openai_text_then_tools.openai.sse").read_bytes()
    # Cut at odd places: the translator must not care where the backend's reads end.
    pieces = [golden[i : i + 97] for i in range(0, len(golden), 97)]
    canned_backend.answer(200, pieces, "text/event-stream")
    text, done, reply = await answer(backend, messages_request("r1", stream=True))
    message = sdk_final_message(text)
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert message.stop_reason == "tool_use"
    assert done.token_counts == TokenCounts(81, 42, 123)
    assert reply.bytes_in == len(golden)


async def test_a_backend_error_is_an_anthropic_error_with_its_status(
    backend: Backend, canned_backend: CannedBackend
) -> None:
    error = {"error": {"message": "model is loading", "type": "server_error"}}
    canned_backend.answer(503, json.dumps(error).encode(), "application/json")
    _, done, reply = await answer(backend, messages_request("r1", stream=True))
    assert (done.status_code, reply.status) == (503, 503)
    body = json.loads(done.body or "")
    assert body["type"] == "error"
    assert "model is loading" in body["error"]["message"]


async def test_an_untranslatable_answer_is_a_backend_error(
    backend: Backend, canned_backend: CannedBackend
) -> None:
    canned_backend.answer(200, b"<html>proxy login</html>", "text/html")
    with pytest.raises(BackendError, match="could not be translated"):
        await answer(backend, messages_request("r1"))


async def test_a_job_turns_an_untranslatable_answer_into_a_502_in_anthropic_shape(
    backend: Backend, canned_backend: CannedBackend, caplog: pytest.LogCaptureFixture
) -> None:
    canned_backend.answer(200, b"<html>proxy login</html>", "text/html")
    send, receive = trio.open_memory_channel[Outgoing](100)
    caplog.set_level(logging.INFO, logger="agent.jobs")
    with trio.fail_after(10):
        await run_job(
            Job(messages_request("r1"), trio.current_time()),
            exchange=AnthropicOverOpenAI(backend),
            outbox=send,
        )
    (done,) = drain(receive)
    assert isinstance(done, ResponseComplete)
    assert done.status_code == 502
    error = json.loads(done.body or "")
    assert error["type"] == "error"
    assert "could not be translated" in error["error"]["message"]
    (line,) = [r for r in caplog.records if r.getMessage() == "request finished"]
    # The exchange's notes reach the job's one log line; the job itself knows no dialect.
    assert (line.status, line.translated) == (502, "openai-chat")  # type: ignore[attr-defined]


async def test_an_untranslatable_request_is_a_400_and_asks_nobody(
    backend: Backend, canned_backend: CannedBackend
) -> None:
    request = messages_request("r1", messages="not a list")
    _, done, _ = await answer(backend, request)
    assert done.status_code == 400
    assert json.loads(done.body or "")["error"]["type"] == "invalid_request_error"
    assert canned_backend.requests == []


async def test_count_tokens_is_an_estimate_that_says_so(
    backend: Backend, canned_backend: CannedBackend
) -> None:
    _, done, reply = await answer(backend, messages_request("r1", path="/v1/messages/count_tokens"))
    assert done.status_code == 200
    assert done.headers is not None
    assert done.headers[TOKEN_ESTIMATE_HEADER] == TOKEN_ESTIMATE_METHOD
    assert json.loads(done.body or "")["input_tokens"] > 0
    assert reply.notes == {"token_estimate": TOKEN_ESTIMATE_METHOD}
    assert canned_backend.requests == []


async def test_count_tokens_of_a_body_that_is_not_json_is_a_400(backend: Backend) -> None:
    request = Request("r1", "m", "/v1/messages/count_tokens", False, "{nope", {})
    _, done, _ = await answer(backend, request)
    assert done.status_code == 400
    assert "not valid JSON" in json.loads(done.body or "")["error"]["message"]


async def test_a_route_that_is_not_anthropics_passes_through(
    backend: Backend, canned_backend: CannedBackend
) -> None:
    canned_backend.answer(200, b'{"object": "list"}', "application/json")
    body = json.dumps({"model": "m", "input": "hi"})
    request = Request("r1", "m", "/v1/embeddings", False, body, {})
    _, done, reply = await answer(backend, request)
    assert canned_backend.requests == [("/v1/embeddings", body.encode())]
    assert (done.status_code, done.body) == (200, '{"object": "list"}')
    assert reply.notes == {}
