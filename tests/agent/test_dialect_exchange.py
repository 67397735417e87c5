"""`--backend-dialect` end to end: fake relay (real WebSocket) → agent → FakeBackend (real HTTP).

`FakeBackend(anthropic=False)` answers 404 on `/v1/messages*` like an
OpenAI-only server. With ``auto`` the agent must learn that from the first
`/v1/messages` request, send that same request again translated, and
translate every later one straight away (counted in the backend's log).
"""

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
import trio

from agent.backend import open_backend
from agent.config import BackendDialect
from agent.dialect_exchange import DialectExchange
from agent.exchange import Reply, backend_headers
from agent.outbox import Outgoing
from agent.translate import TOKEN_ESTIMATE_HEADER, estimate_input_tokens
from tests.agent.fakes import FakeRelay, fast_config
from tests.agent.test_jobs import collect, connected, start_agent
from tests.agent.test_translate_stream import check_event_order, parse_events, sdk_final_message
from tests.fake_backend import FakeBackend
from wire import Cancel, CancelReason, Request, ResponseChunk, ResponseComplete, TokenCounts

if TYPE_CHECKING:
    from agent.daemon import Daemon

CLAUDE_CODE_HEADERS = {
    "x-api-key": "sk-relay-key",
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
    "content-type": "application/json",
}


def claude_code_body(**extra: object) -> dict[str, Any]:
    """A request shaped like Claude Code's: system blocks, cache_control, a tool round trip."""
    body: dict[str, Any] = {
        "model": "fake-model",
        "max_tokens": 256,
        "system": [
            {
                "type": "text",
                "text": "You are Claude Code.",
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "text", "text": "Answer briefly."},
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_01",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_01",
                        "content": "21 C",
                        "cache_control": {"type": "ephemeral"},
                    }
                ],
            },
        ],
        "tools": [
            {
                "name": "get_weather",
                "description": "Weather in a city.",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            }
        ],
        "metadata": {"user_id": "user-1"},
    }
    body.update(extra)
    return body


def messages_request(
    rid: str, *, stream: bool = False, path: str = "/v1/messages", **extra: object
) -> Request:
    body = claude_code_body(**extra)
    if stream:
        body["stream"] = True
    return Request(rid, "fake-model", path, stream, json.dumps(body), dict(CLAUDE_CODE_HEADERS))


@pytest.fixture
async def openai_only(nursery: trio.Nursery) -> FakeBackend:
    """A FakeBackend without `/v1/messages` (404), like llama-cpp-python or an old vLLM."""
    backend = FakeBackend(anthropic=False)
    await nursery.start(backend.run)
    return backend


def paths(backend: FakeBackend) -> list[str]:
    return [r.path for r in backend.requests if r.method == "POST"]


Ask = Callable[[FakeBackend, str, Request], Awaitable[tuple[list[ResponseChunk], ResponseComplete]]]


@pytest.fixture
def ask(nursery: trio.Nursery, fake_relay: FakeRelay) -> Ask:
    """``await ask(backend, dialect, request)``: a fresh agent with `dialect` in front of
    `backend` answers `request`; its chunks and its complete."""

    async def ask(
        backend: FakeBackend, dialect: str, request: Request
    ) -> tuple[list[ResponseChunk], ResponseComplete]:
        with trio.fail_after(10):
            conn = await connected(nursery, fake_relay, backend.url, backend_dialect=dialect)
            await conn.send(request)
            return await collect(conn, request.request_id)

    return ask


def streamed_text(chunks: list[Any]) -> str:
    return "".join(c.chunk for c in chunks)


def assert_translated_answer(done: ResponseComplete, chunks: list[Any], stream: bool) -> None:
    assert done.status_code == 200
    assert done.headers is not None
    if stream:
        assert done.headers["content-type"] == "text/event-stream"
        text = streamed_text(chunks)
        check_event_order(parse_events(text), model="fake-model")
        message = sdk_final_message(text)
        assert [b.type for b in message.content] == ["text"]
        assert message.content[0].type == "text"
        assert message.content[0].text == "tok0 tok1 tok2 "
        assert message.stop_reason == "end_turn"
        assert message.model == "fake-model"
    else:
        assert done.headers["content-type"] == "application/json"
        body = json.loads(done.body or "")
        assert body["type"] == "message"
        assert body["content"] == [{"type": "text", "text": "tok0 tok1 tok2 "}]
        assert body["stop_reason"] == "end_turn"
        assert body["id"].startswith("msg_")
    assert done.token_counts is not None
    assert done.token_counts.completion_tokens == 3
    assert done.token_counts.prompt_tokens is not None
    assert done.token_counts.prompt_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
async def test_auto_probes_once_then_translates_straight_away(
    nursery: trio.Nursery, fake_relay: FakeRelay, openai_only: FakeBackend, stream: bool
) -> None:
    with trio.fail_after(10):
        conn = await connected(nursery, fake_relay, openai_only.url, backend_dialect="auto")
        await conn.send(messages_request("r1", stream=stream))
        chunks, done = await collect(conn, "r1")
        assert paths(openai_only) == ["/v1/messages", "/v1/chat/completions"]
        assert_translated_answer(done, chunks, stream)
        await conn.send(messages_request("r2", stream=stream))
        chunks, done = await collect(conn, "r2")
    assert paths(openai_only) == ["/v1/messages", "/v1/chat/completions", "/v1/chat/completions"]
    assert_translated_answer(done, chunks, stream)
    # The probe went as the client sent it; the retry is the translation.
    probe, first, second = openai_only.requests
    assert probe.json == json.loads(messages_request("r1", stream=stream).body)
    assert first.json == second.json
    chat = first.json
    assert chat["messages"][0] == {
        "role": "system",
        "content": "You are Claude Code.\n\nAnswer briefly.",
    }
    assert chat["messages"][2]["tool_calls"][0]["id"] == "toolu_01"
    assert chat["messages"][3] == {"role": "tool", "tool_call_id": "toolu_01", "content": "21 C"}
    assert chat["tools"][0]["function"]["name"] == "get_weather"
    assert "metadata" not in chat
    assert "cache_control" not in first.body.decode()
    if stream:
        assert chat["stream_options"] == {"include_usage": True}
    assert "anthropic-beta" not in first.headers
    assert "anthropic-version" not in first.headers
    assert "x-api-key" not in first.headers
    assert probe.headers["anthropic-beta"] == CLAUDE_CODE_HEADERS["anthropic-beta"]


async def test_auto_with_an_anthropic_backend_passes_through_for_good(
    nursery: trio.Nursery, fake_relay: FakeRelay, fake_backend: FakeBackend
) -> None:
    with trio.fail_after(10):
        conn = await connected(nursery, fake_relay, fake_backend.url, backend_dialect="auto")
        for rid in ("r1", "r2"):
            await conn.send(messages_request(rid, stream=rid == "r2"))
            _, done = await collect(conn, rid)
            assert done.status_code == 200
        # A later 404 is the backend's answer, not a reason to translate.
        await conn.send(messages_request("r3", fake={"status": 404}))
        _, missing = await collect(conn, "r3")
    assert paths(fake_backend) == ["/v1/messages"] * 3
    assert missing.status_code == 404
    assert json.loads(missing.body or "")["error"]["message"] == "fake error 404"


async def test_auto_takes_any_other_first_answer_as_anthropic(
    nursery: trio.Nursery, fake_relay: FakeRelay, fake_backend: FakeBackend
) -> None:
    with trio.fail_after(10):
        conn = await connected(nursery, fake_relay, fake_backend.url, backend_dialect="auto")
        await conn.send(messages_request("r1", fake={"status": 500}))
        _, first = await collect(conn, "r1")
        await conn.send(messages_request("r2"))
        _, second = await collect(conn, "r2")
    assert (first.status_code, second.status_code) == (500, 200)
    assert paths(fake_backend) == ["/v1/messages", "/v1/messages"]


async def test_openai_dialect_never_asks_for_messages(
    nursery: trio.Nursery, fake_relay: FakeRelay, openai_only: FakeBackend
) -> None:
    with trio.fail_after(10):
        conn = await connected(nursery, fake_relay, openai_only.url, backend_dialect="openai")
        await conn.send(messages_request("r1"))
        chunks, done = await collect(conn, "r1")
        await conn.send(messages_request("r2", stream=True))
        chunks2, done2 = await collect(conn, "r2")
    assert paths(openai_only) == ["/v1/chat/completions", "/v1/chat/completions"]
    assert_translated_answer(done, chunks, stream=False)
    assert_translated_answer(done2, chunks2, stream=True)


async def test_anthropic_dialect_passes_the_404_through(ask: Ask, openai_only: FakeBackend) -> None:
    _, done = await ask(openai_only, "anthropic", messages_request("r1", stream=True))
    assert paths(openai_only) == ["/v1/messages"]
    assert done.status_code == 404
    assert json.loads(done.body or "") == {"detail": "Not Found"}


async def test_what_auto_learned_outlives_the_relay_session(
    nursery: trio.Nursery, fake_relay: FakeRelay, openai_only: FakeBackend
) -> None:
    with trio.fail_after(10):
        daemon: Daemon = await start_agent(
            nursery, fake_relay, openai_only.url, backend_dialect="auto"
        )
        conn = await fake_relay.next_connection()
        await conn.register()
        await conn.send(messages_request("r1"))
        await collect(conn, "r1")
        await conn.close(1011, "relay restarting")
        conn = await fake_relay.next_connection()
        await conn.register()
        await conn.send(messages_request("r2"))
        _, done = await collect(conn, "r2")
    assert daemon.sessions == 2
    assert done.status_code == 200
    assert paths(openai_only) == ["/v1/messages", "/v1/chat/completions", "/v1/chat/completions"]


async def test_two_first_requests_at_once_both_get_answers(
    nursery: trio.Nursery, fake_relay: FakeRelay, openai_only: FakeBackend
) -> None:
    with trio.fail_after(10):
        conn = await connected(
            nursery, fake_relay, openai_only.url, backend_dialect="auto", max_concurrency=2
        )
        await conn.send(messages_request("r1"))
        await conn.send(messages_request("r2"))
        done: dict[str, ResponseComplete] = {}
        while len(done) < 2:
            msg = await conn.receive()
            if isinstance(msg, ResponseComplete):
                done[msg.request_id] = msg
    assert {d.status_code for d in done.values()} == {200}
    assert paths(openai_only).count("/v1/chat/completions") == 2


# --- count_tokens ------------------------------------------------------------------------------


async def test_count_tokens_is_estimated_when_the_backend_has_none(
    nursery: trio.Nursery, fake_relay: FakeRelay, openai_only: FakeBackend
) -> None:
    with trio.fail_after(10):
        conn = await connected(nursery, fake_relay, openai_only.url, backend_dialect="auto")
        await conn.send(messages_request("r1", path="/v1/messages/count_tokens"))
        _, done = await collect(conn, "r1")
        # count_tokens does not decide the dialect: the next /v1/messages still probes.
        await conn.send(messages_request("r2"))
        _, answer = await collect(conn, "r2")
    assert done.status_code == 200
    assert done.headers is not None
    assert done.headers[TOKEN_ESTIMATE_HEADER] == "chars/4"
    assert json.loads(done.body or "") == {
        "input_tokens": estimate_input_tokens(claude_code_body())
    }
    assert answer.status_code == 200
    assert paths(openai_only) == [
        "/v1/messages/count_tokens",
        "/v1/messages",
        "/v1/chat/completions",
    ]


async def test_count_tokens_with_openai_dialect_asks_nobody(
    ask: Ask, openai_only: FakeBackend
) -> None:
    _, done = await ask(
        openai_only, "openai", messages_request("r1", path="/v1/messages/count_tokens")
    )
    assert done.status_code == 200
    assert done.headers is not None
    assert TOKEN_ESTIMATE_HEADER in done.headers
    assert paths(openai_only) == []


async def test_count_tokens_from_a_backend_that_counts_passes_through(
    ask: Ask, fake_backend: FakeBackend
) -> None:
    _, done = await ask(
        fake_backend, "auto", messages_request("r1", path="/v1/messages/count_tokens")
    )
    assert done.status_code == 200
    assert done.headers is not None
    assert TOKEN_ESTIMATE_HEADER not in done.headers
    assert paths(fake_backend) == ["/v1/messages/count_tokens"]


# --- errors, cancellation ------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_a_backend_error_becomes_an_anthropic_error_with_its_status(
    ask: Ask, openai_only: FakeBackend, stream: bool
) -> None:
    chunks, done = await ask(
        openai_only, "openai", messages_request("r1", stream=stream, fake={"status": 429})
    )
    assert chunks == []
    assert done.status_code == 429
    assert json.loads(done.body or "") == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "fake error 429"},
    }
    assert done.token_counts is None


async def test_an_untranslatable_request_is_a_400_in_anthropic_shape(
    ask: Ask, openai_only: FakeBackend
) -> None:
    bad = Request("r1", "fake-model", "/v1/messages", False, '{"model": "fake-model"}')
    _, done = await ask(openai_only, "openai", bad)
    assert done.status_code == 400
    error = json.loads(done.body or "")
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert "messages" in error["error"]["message"]
    assert paths(openai_only) == []


async def test_a_backend_crash_mid_stream_ends_with_an_anthropic_error_event(
    ask: Ask, openai_only: FakeBackend
) -> None:
    chunks, done = await ask(
        openai_only,
        "openai",
        messages_request("r1", stream=True, fake={"chunks": 5, "crash_after": 2}),
    )
    events = parse_events(streamed_text(chunks))
    assert events[0]["type"] == "message_start"
    assert [e["delta"]["text"] for e in events if e["type"] == "content_block_delta"] == [
        "tok0 ",
        "tok1 ",
    ]
    assert events[-1]["type"] == "error"
    check_event_order(events, model="fake-model")
    assert done.status_code == 502


async def test_cancel_mid_translated_stream_stops_the_backend(
    nursery: trio.Nursery, fake_relay: FakeRelay, openai_only: FakeBackend
) -> None:
    with trio.fail_after(10):
        conn = await connected(nursery, fake_relay, openai_only.url, backend_dialect="openai")
        await conn.send(messages_request("r1", stream=True, fake={"chunks": 10, "stall_after": 2}))
        await conn.receive()  # the first chunk: the stream is under way
        await conn.send(Cancel("r1", CancelReason.CLIENT_DISCONNECT))
        record = openai_only.requests[-1]
        await record.done.wait()
        _, done = await collect(conn, "r1")
    assert record.disconnected_at is not None
    assert done.status_code == 499


async def test_streamed_usage_reaches_the_relay_from_the_translated_stream(
    ask: Ask, openai_only: FakeBackend
) -> None:
    chunks, done = await ask(
        openai_only, "openai", messages_request("r1", stream=True, fake={"chunks": 4})
    )
    delta = next(e for e in parse_events(streamed_text(chunks)) if e["type"] == "message_delta")
    prompt = delta["usage"]["input_tokens"]
    assert delta["usage"]["output_tokens"] == 4
    assert done.token_counts == TokenCounts(prompt, 4, prompt + 4)


# --- the exchange alone ----------------------------------------------------------------------


async def test_auto_is_settled_by_the_first_answers_status_not_its_end(
    fake_backend: FakeBackend,
) -> None:
    """Learning happens on the status line: a long first stream does not keep every
    other request probing until it ends."""
    config = fast_config("ws://127.0.0.1:1", fake_backend.url, backend_dialect="auto")
    request = messages_request("r1", stream=True, fake={"stall_after": 1})
    send, receive = trio.open_memory_channel[Outgoing](100)
    with trio.fail_after(10):
        async with open_backend(config) as backend, trio.open_nursery() as nursery:
            exchange = DialectExchange.for_backend(backend)
            reply = Reply(request, send)
            nursery.start_soon(exchange.answer, request, backend_headers(request), reply)
            first = await receive.receive()
            assert isinstance(first, ResponseChunk)
            assert backend.dialect is BackendDialect.ANTHROPIC
            assert not reply.completed
            nursery.cancel_scope.cancel()
