"""`Reply` (what a job sends, counted) and `PassThrough`, over a real HTTP backend."""

import json
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from agent.backend import Backend, open_backend
from agent.exchange import PassThrough, Reply, backend_headers, route_of
from agent.outbox import MAX_PIECE_CHARS, Outgoing
from tests.agent.fakes import CannedBackend, answer_with, drain, fast_config
from tests.fake_backend import FakeBackend
from wire import MAX_SEND_FRAME_BYTES, Request, ResponseChunk, ResponseComplete, TokenCounts


def request(
    rid: str = "r1", *, stream: bool = False, path: str = "/v1/chat/completions"
) -> Request:
    body: dict[str, object] = {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "hi"}],
    }
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    headers = {"authorization": "Bearer client", "x-api-key": "k", "accept": "*/*"}
    return Request(rid, "fake-model", path, stream, json.dumps(body), headers)


Channels = tuple[trio.MemorySendChannel[Outgoing], trio.MemoryReceiveChannel[Outgoing]]


@pytest.fixture
def outbox() -> Channels:
    """A roomy outbox and its receiving end."""
    return trio.open_memory_channel[Outgoing](1000)


def chunks_of(frames: list[Outgoing]) -> list[str]:
    """The texts of the chunks among `frames` (and nothing else may be among them)."""
    texts = []
    for frame in frames:
        assert isinstance(frame, ResponseChunk)
        texts.append(frame.chunk)
    return texts


async def backend_at(url: str) -> AsyncIterator[Backend]:
    async with open_backend(fast_config("ws://127.0.0.1:1", url)) as backend:
        yield backend


@pytest.fixture
async def fake(fake_backend: FakeBackend) -> AsyncIterator[Backend]:
    async for backend in backend_at(fake_backend.url):
        yield backend


@pytest.fixture
async def canned(canned_backend: CannedBackend) -> AsyncIterator[Backend]:
    async for backend in backend_at(canned_backend.url):
        yield backend


# --- request helpers -----------------------------------------------------------------------


def test_backend_headers_drop_client_credentials_and_name_a_content_type() -> None:
    assert backend_headers(request()) == {"accept": "*/*", "content-type": "application/json"}


def test_route_of_drops_the_query() -> None:
    assert route_of(request(path="/v1/messages?beta=true")) == "/v1/messages"


# --- Reply -----------------------------------------------------------------------------------


async def test_a_chunk_goes_out_without_a_trip_while_the_outbox_has_room() -> None:
    send, receive = trio.open_memory_channel[Outgoing](4)
    reply = Reply(request(), send)
    with trio.testing.assert_no_checkpoints():
        await reply.chunk("hello")
        await reply.chunk("")  # nothing to send
    assert drain(receive) == [ResponseChunk("r1", "hello")]
    assert reply.chunks == 1


async def test_a_full_outbox_makes_the_reply_wait() -> None:
    send, receive = trio.open_memory_channel[Outgoing](1)
    reply = Reply(request(), send)
    await reply.chunk("one")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reply.chunk, "two")
        await trio.testing.wait_all_tasks_blocked()
        assert reply.chunks == 1  # still waiting for room
        assert [await receive.receive(), await receive.receive()] == [
            ResponseChunk("r1", "one"),
            ResponseChunk("r1", "two"),
        ]
    assert reply.chunks == 2


async def test_a_long_text_is_cut_into_pieces_that_fit_a_frame(outbox: Channels) -> None:
    send, receive = outbox
    reply = Reply(request(), send)
    await reply.chunk("x" * (MAX_PIECE_CHARS + 5))
    assert [len(text) for text in chunks_of(drain(receive))] == [MAX_PIECE_CHARS, 5]
    assert reply.chunks == 2


async def test_a_whole_body_that_fits_is_one_complete(outbox: Channels) -> None:
    send, receive = outbox
    reply = Reply(request(), send)
    counts = TokenCounts(1, 2, 3)
    await reply.whole(200, {"content-type": "application/json"}, "{}", counts)
    assert drain(receive) == [
        ResponseComplete("r1", 200, {"content-type": "application/json"}, "{}", counts)
    ]
    assert (reply.status, reply.completed, reply.chunks) == (200, True, 0)


async def test_a_whole_body_too_big_for_a_frame_goes_as_chunks(outbox: Channels) -> None:
    send, receive = outbox
    reply = Reply(request(), send)
    body = "\x01" * (MAX_SEND_FRAME_BYTES // 6 + 10)  # six bytes each once JSON-escaped
    await reply.whole(200, {}, body)
    frames = drain(receive)
    complete = frames.pop()
    assert complete == ResponseComplete("r1", 200, {}, "")
    assert "".join(chunks_of(frames)) == body
    assert reply.chunks == len(frames) > 1


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/v1/chat/completions", "invalid_request"), ("/v1/messages", "invalid_request_error")],
)
async def test_a_failure_before_any_chunk_is_a_json_error_in_the_endpoints_dialect(
    outbox: Channels,
    path: str,
    kind: str,
) -> None:
    send, receive = outbox
    reply = Reply(request(path=path), send)
    await reply.fail(400, "invalid_request", "Bad.")
    (complete,) = drain(receive)
    assert isinstance(complete, ResponseComplete)
    assert complete.status_code == 400
    assert complete.headers == {"content-type": "application/json"}
    error = json.loads(complete.body or "")
    assert error["error"]["type"] == kind
    assert reply.completed


async def test_a_failure_mid_stream_ends_the_stream_with_an_error_event(outbox: Channels) -> None:
    send, receive = outbox
    reply = Reply(request(stream=True), send)
    await reply.chunk("data: {}\n\n")
    await reply.fail(502, "backend_error", "Gone.")
    frames = drain(receive)
    assert isinstance(frames[1], ResponseChunk)
    assert "Gone." in frames[1].chunk
    assert frames[2] == ResponseComplete("r1", 502)
    assert reply.status == 502


# --- PassThrough, over real HTTP -------------------------------------------------------------


async def test_a_stream_is_forwarded_read_by_read_with_its_usage(fake: Backend) -> None:
    text, complete, reply = await answer_with(PassThrough(fake), request(stream=True))
    assert complete.status_code == 200
    assert complete.token_counts is not None
    assert text.rstrip().endswith("data: [DONE]")
    assert reply.bytes_in == len(text.encode())
    assert (reply.backend_status, reply.status, reply.completed) == (200, 200, True)


async def test_a_missing_route_is_declined_with_nothing_sent(
    canned: Backend,
    canned_backend: CannedBackend,
    outbox: Channels,
) -> None:
    send, receive = outbox
    canned_backend.answer(404, b'{"detail": "Not Found"}', "application/json")
    req = request(path="/v1/messages")
    reply = Reply(req, send)
    seen: list[int] = []
    with trio.fail_after(10):
        answered = await PassThrough(canned).answer_unless_missing(
            req, backend_headers(req), reply, on_status=seen.append
        )
    assert (answered, seen, drain(receive), reply.completed) == (False, [404], [], False)
    assert canned_backend.requests[0][0] == "/v1/messages"


@pytest.mark.parametrize("status", [404, 405, 501, 500])
async def test_answer_forwards_every_status(
    canned: Backend,
    canned_backend: CannedBackend,
    outbox: Channels,
    status: int,
) -> None:
    send, receive = outbox
    canned_backend.answer(status, b'{"error": "x"}', "application/json")
    req = request()
    reply = Reply(req, send)
    with trio.fail_after(10):
        await PassThrough(canned).answer(req, backend_headers(req), reply)
    (complete,) = drain(receive)
    assert isinstance(complete, ResponseComplete)
    assert (complete.status_code, complete.body) == (status, '{"error": "x"}')
