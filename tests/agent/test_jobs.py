"""Requests end to end: fake relay (real WebSocket) → agent → FakeBackend (real HTTP)."""

import ast
import json
import logging
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

import agent.jobs
from agent.backend import open_backend
from agent.daemon import Daemon, run_agent
from agent.dialect_exchange import DialectExchange
from agent.jobs import Job, run_job
from agent.outbox import Outgoing
from tests.agent.fakes import SECRET, FakeRelay, RelayConn, fast_config
from tests.fake_backend import FakeBackend
from wire import (
    MAX_SEND_FRAME_BYTES,
    Cancel,
    CancelReason,
    Ping,
    Pong,
    Request,
    ResponseChunk,
    ResponseComplete,
    TokenCounts,
)


async def start_agent(
    nursery: trio.Nursery, relay: FakeRelay, backend_url: str, **overrides: object
) -> Daemon:
    config = fast_config(relay.url, backend_url, **overrides)
    daemon: Daemon = await nursery.start(partial(run_agent, config, handle_signals=False))
    return daemon


async def connected(
    nursery: trio.Nursery, relay: FakeRelay, backend_url: str, **overrides: object
) -> RelayConn:
    await start_agent(nursery, relay, backend_url, **overrides)
    conn = await relay.next_connection()
    await conn.register()
    return conn


def chat(
    rid: str,
    *,
    stream: bool = False,
    path: str = "/v1/chat/completions",
    headers: dict[str, str] | None = None,
    extra: dict[str, object] | None = None,
    **body: object,
) -> Request:
    payload: dict[str, object] = {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "say hi"}],
    }
    payload.update(extra or {})
    payload.update(body)
    if stream:
        payload["stream"] = True
    return Request(rid, "fake-model", path, stream, json.dumps(payload), headers)


async def collect(conn: RelayConn, rid: str) -> tuple[list[ResponseChunk], ResponseComplete]:
    """Frames for `rid` until its ResponseComplete (other frames are dropped)."""
    chunks: list[ResponseChunk] = []
    while True:
        msg = await conn.receive()
        if isinstance(msg, ResponseChunk) and msg.request_id == rid:
            chunks.append(msg)
        elif isinstance(msg, ResponseComplete) and msg.request_id == rid:
            return chunks, msg


async def test_non_streaming_request_is_one_complete_with_body_and_usage(
    nursery: trio.Nursery, fake_relay: FakeRelay, fake_backend: FakeBackend
) -> None:
    with trio.fail_after(10):
        conn = await connected(nursery, fake_relay, fake_backend.url)
        await conn.send(chat("r1", fake={"chunks": 4}))
        chunks, done = await collect(conn, "r1")
    assert chunks == []
    assert done.status_code == 200
    assert done.headers is not None
    assert done.headers["content-type"] == "application/json"
    assert "content-length" not in done.headers
    body = json.loads(done.body or "")
    assert body["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3 "
    assert done.token_counts == TokenCounts(prompt_tokens=2, completion_tokens=4, total_tokens=6)


async def test_streaming_request_forwards_chunks_in_order_then_complete(
    nursery: trio.Nursery, fake_relay: FakeRelay, fake_backend: FakeBackend
) -> None:
    with trio.fail_after(10):
        conn = await connected(nursery, fake_relay, fake_backend.url)
        await conn.send(
            chat("r1", stream=True, stream_options={"include_usage": True}, fake={"chunks": 5})
        )
        chunks, done = await collect(conn, "r1")
    text = "".join(c.chunk for c in chunks)
    contents = [
        json.loads(line[6:])["choices"][0]["delta"].get("content")
        for line in text.split("\n\n")
        if line.startswith("data: {") and json.loads(line[6:])["choices"]
    ]
    assert contents == ["", "tok0 ", "tok1 ", "tok2 ", "tok3 ", "tok4 ", None]
    assert text.endswith("data: [DONE]\n\n")
    assert done.status_code == 200
    assert done.body is None
    assert done.headers is not None
    assert done.headers["content-type"] == "text/event-stream"
    assert done.token_counts == TokenCounts(prompt_tokens=2, completion_tokens=5, total_tokens=7)


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1/messages", {"max_tokens": 10}, TokenCounts(2, 3, 5)),
        # The fake counts the words of `messages` and `input`/`prompt` together.
        ("/v1/responses", {"input": "say hi"}, TokenCounts(4, 3, 7)),
        (
            "/v1/completions",
            {"prompt": "say hi", "stream_options": {"include_usage": True}},
            TokenCounts(4, 3, 7),
        ),
    ],
)
async def test_streaming_usage_in_each_dialect(
    nursery: trio.Nursery,
    fake_relay: FakeRelay,
    fake_backend: FakeBackend,
    path: str,
    body: dict[str, object],
    expected: TokenCounts,
) -> None:
    with trio.fail_after(10):
        conn = await connected(nursery, fake_relay, fake_backend.url)
        await conn.send(chat("r1", stream=True, path=path, extra=body))
        chunks, done = await collect(conn, "r1")
    assert chunks
    assert done.status_code == 200
    assert done.token_counts == expected


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [400, 500])
async def test_backend_error_status_passes_through_with_body(
    nursery: trio.Nursery,
    fake_relay: FakeRelay,
    fake_backend: FakeBackend,
    status: int,
    stream: bool,
) -> None:
    with trio.fail_after(10):
        conn = await connected(nursery, fake_relay, fake_backend.url)
        await conn.send(chat("r1", stream=stream, fake={"status": status}))
        chunks, done = await collect(conn, "r1")
    assert chunks == []
    assert done.status_code == status
    assert json.loads(done.body or "")["error"]["message"] == f"fake error {status}"
    assert done.token_counts is None


async def test_cancel_mid_stream_closes_backend_and_answers_499_once(
    nursery: trio.Nursery, fake_relay: FakeRelay, fake_backend: FakeBackend
) -> None:
    with trio.fail_after(10):
        conn = await connected(nursery, fake_relay, fake_backend.url)
        await conn.send(chat("r1", stream=True, fake={"chunks": 10, "stall_after": 2}))
        first = await conn.receive()
        assert isinstance(first, ResponseChunk)
        await conn.send(Cancel("r1", CancelReason.CLIENT_DISCONNECT))
        record = fake_backend.requests[-1]
        await record.done.wait()
        # Whatever chunks were already queued come first, then exactly one 499.
        _, done = await collect(conn, "r1")
        await conn.send(Ping(timestamp_unix_ms=7))
        after = await conn.receive()
    assert record.disconnected_at is not None
    assert record.finished_at is None
    assert done.status_code == 499
    assert done.body is None
    assert after == Pong(current_load=0, timestamp_unix_ms=7)


async def test_backend_unreachable_is_502_without_its_address_and_session_stays(
    nursery: trio.Nursery, fake_relay: FakeRelay, caplog: pytest.LogCaptureFixture
) -> None:
    # A client never learns where the backend is: the URL and the address
    # are for the agent's log only.
    caplog.set_level(logging.INFO)
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = f"http://127.0.0.1:{port}"
    with trio.fail_after(10):
        conn = await connected(nursery, fake_relay, dead)
        await conn.send(chat("r1"))
        _, done = await collect(conn, "r1")
        await conn.send(chat("r2", path="/v1/messages", stream=True))
        _, anthropic = await collect(conn, "r2")
        await conn.send(Ping(timestamp_unix_ms=1))
        pong = await conn.receive()
    assert done.status_code == 502
    error = json.loads(done.body or "")["error"]
    assert str(port) not in error["message"]
    assert "127.0.0.1" not in error["message"]
    assert "could not reach its backend" in error["message"]
    assert error["code"] == "backend_unreachable"
    assert anthropic.status_code == 502
    anthropic_error = json.loads(anthropic.body or "")
    assert anthropic_error["type"] == "error"
    assert str(port) not in anthropic_error["error"]["message"]
    logged = [str(getattr(record, "error", "")) for record in caplog.records]
    assert any(f"{dead}/v1/chat/completions" in text for text in logged)
    assert pong == Pong(current_load=0, timestamp_unix_ms=1)


async def test_max_concurrency_refuses_the_extra_request_with_503(
    nursery: trio.Nursery, fake_relay: FakeRelay, fake_backend: FakeBackend
) -> None:
    with trio.fail_after(10):
        conn = await connected(nursery, fake_relay, fake_backend.url, max_concurrency=1)
        await conn.send(chat("r1", stream=True, fake={"stall_after": 1}))
        first = await conn.receive()
        assert isinstance(first, ResponseChunk)
        await conn.send(chat("r2"))
        _, refused = await collect(conn, "r2")
        await conn.send(Ping())
        pong = await conn.receive()
        await conn.send(Cancel("r1", CancelReason.TIMEOUT))
        _, cancelled = await collect(conn, "r1")
        await conn.send(chat("r3"))
        _, third = await collect(conn, "r3")
    assert refused.status_code == 503
    assert refused.headers is not None
    assert refused.headers["retry-after"] == "1"
    assert json.loads(refused.body or "")["error"]["code"] == "worker_busy"
    assert pong == Pong(current_load=1)
    assert cancelled.status_code == 499
    assert third.status_code == 200


async def test_headers_are_filtered_and_backend_key_added(
    nursery: trio.Nursery, fake_relay: FakeRelay, fake_backend: FakeBackend
) -> None:
    client_headers = {
        "Authorization": "Bearer client-relay-key",
        "x-api-key": "client-anthropic-key",
        "cookie": "session=1",
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
        "x-forwarded-for": "10.0.0.1",
    }
    with trio.fail_after(10):
        conn = await connected(nursery, fake_relay, fake_backend.url, backend_api_key="bk-1")
        await conn.send(chat("r1", path="/v1/messages", headers=client_headers, max_tokens=5))
        _, done = await collect(conn, "r1")
    assert done.status_code == 200
    seen = fake_backend.requests[-1].headers
    assert seen["authorization"] == "Bearer bk-1"
    assert seen["anthropic-version"] == "2023-06-01"
    assert seen["content-type"] == "application/json"
    assert "x-api-key" not in seen
    assert "cookie" not in seen
    assert "x-forwarded-for" not in seen
    assert json.loads(done.body or "")["type"] == "message"


async def test_body_larger_than_a_frame_goes_as_chunks_then_empty_complete(
    nursery: trio.Nursery, fake_relay: FakeRelay, fake_backend: FakeBackend
) -> None:
    size = MAX_SEND_FRAME_BYTES + 1024 * 1024
    with trio.fail_after(30):
        conn = await connected(nursery, fake_relay, fake_backend.url)
        await conn.send(chat("r1", fake={"body_bytes": size}))
        chunks, done = await collect(conn, "r1")
    assert len(chunks) >= 2
    assert done.status_code == 200
    assert done.body == ""
    body = "".join(c.chunk for c in chunks)
    assert len(body) >= MAX_SEND_FRAME_BYTES
    assert json.loads(body)["object"] == "chat.completion"


async def test_crash_mid_stream_ends_with_an_error_event_and_502(
    nursery: trio.Nursery, fake_relay: FakeRelay, fake_backend: FakeBackend
) -> None:
    with trio.fail_after(10):
        conn = await connected(nursery, fake_relay, fake_backend.url)
        await conn.send(chat("r1", stream=True, fake={"chunks": 5, "crash_after": 2}))
        chunks, done = await collect(conn, "r1")
    text = "".join(c.chunk for c in chunks)
    assert "tok1 " in text
    assert "tok2 " not in text
    last_event = text.rstrip("\n").split("\n\n")[-1]
    assert last_event.startswith("data: ")
    assert json.loads(last_event[6:])["error"]["code"] == "backend_error"
    assert done.status_code == 502
    assert done.body is None


async def test_multibyte_character_split_across_reads_is_not_broken() -> None:
    """Reads that cut a UTF-8 character in two still yield whole characters (MockTransport:
    a real socket cannot be made to split reads at a chosen byte)."""
    event = 'data: {"x":"é€😀"}\n\n'.encode()
    pieces = [event[:11], event[11:12], event[12:15], event[15:]]

    class Pieces(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for piece in pieces:
                yield piece

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Pieces())

    # https://: its POSTs go through httpx, whose transport open_backend is given.
    config = fast_config("ws://127.0.0.1:1", "https://backend.invalid")
    send, receive = trio.open_memory_channel[Outgoing](100)
    async with open_backend(
        config, httpx_transport=lambda: httpx.MockTransport(handler)
    ) as backend:
        job = Job(chat("r1", stream=True), trio.current_time())
        await run_job(job, exchange=DialectExchange.for_backend(backend), outbox=send)
    frames = []
    while True:
        try:
            frames.append(receive.receive_nowait())
        except trio.WouldBlock:
            break
    chunks = [f.chunk for f in frames if isinstance(f, ResponseChunk)]
    assert "".join(chunks) == event.decode()
    assert all("\ufffd" not in c for c in chunks)
    assert isinstance(frames[-1], ResponseComplete)
    assert frames[-1].status_code == 200


def test_secret_is_not_in_the_config_repr() -> None:
    config = fast_config("ws://127.0.0.1:1", "http://127.0.0.1:2", backend_api_key="bk-secret")
    assert SECRET not in repr(config)
    assert "bk-secret" not in repr(config)


def test_a_job_knows_no_dialect() -> None:
    """jobs.py talks to an `Exchange` only: neither the translation, nor the two
    implementations, nor the dialect setting are imported there."""
    tree = ast.parse(Path(agent.jobs.__file__).read_text("utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
    assert imported.isdisjoint(
        {
            "agent.translate",
            "agent.anthropic_over_openai",
            "agent.dialect_exchange",
            "agent.config.BackendDialect",
            "agent.backend",
        }
    ), imported
