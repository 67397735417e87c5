"""Coalescing in the outbox, and the single writer."""

import attrs
import trio

from agent.outbox import MAX_PIECE_CHARS, Flush, Outgoing, coalesce, run_writer, split_text
from wire import Pong, ResponseChunk, ResponseComplete, decode_agent_frame


def chunk(rid: str, text: str) -> ResponseChunk:
    return ResponseChunk(rid, text)


def test_single_message_is_untouched() -> None:
    batch: list[Outgoing] = [chunk("a", "x")]
    assert coalesce(batch) == batch


def test_consecutive_chunks_of_one_request_merge() -> None:
    out = coalesce([chunk("a", "1"), chunk("a", "2"), chunk("a", "3")])
    assert out == [chunk("a", "123")]


def test_interleaved_requests_merge_per_request_keeping_order() -> None:
    done = ResponseComplete("a", 200)
    pong = Pong(2)
    out = coalesce(
        [
            chunk("a", "1"),
            chunk("b", "x"),
            chunk("a", "2"),
            pong,
            chunk("b", "y"),
            done,
            chunk("b", "z"),
        ]
    )
    assert out == [chunk("a", "12"), chunk("b", "xyz"), pong, done]


def test_complete_closes_the_run() -> None:
    out = coalesce([chunk("a", "1"), ResponseComplete("a", 200), chunk("a", "late")])
    assert out == [chunk("a", "1"), ResponseComplete("a", 200), chunk("a", "late")]


def test_flush_is_a_barrier() -> None:
    flush = Flush()
    out = coalesce([chunk("a", "1"), flush, chunk("a", "2")])
    assert out == [chunk("a", "1"), flush, chunk("a", "2")]


def test_merged_frames_stay_under_the_limit() -> None:
    big = "x" * (MAX_PIECE_CHARS // 2 + 1)
    out = coalesce([chunk("a", big), chunk("a", big), chunk("a", "tail")])
    assert [len(m.chunk) for m in out if isinstance(m, ResponseChunk)] == [len(big), len(big) + 4]


def test_split_text() -> None:
    assert list(split_text("abcdefg", 3)) == ["abc", "def", "g"]
    assert list(split_text("ab", 3)) == ["ab"]


@attrs.define
class Recording:
    sent: list[str] = attrs.field(factory=list)

    async def send(self, message: str) -> None:
        await trio.lowlevel.checkpoint()
        self.sent.append(message)

    async def receive(self) -> str | bytes:
        await trio.sleep_forever()
        raise AssertionError

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await trio.lowlevel.checkpoint()


async def test_writer_sends_what_was_waiting_as_one_frame(nursery: trio.Nursery) -> None:
    send, receive = trio.open_memory_channel[Outgoing](10)
    transport = Recording()
    for piece in ("a", "b", "c"):
        send.send_nowait(chunk("r", piece))
    flush = Flush()
    send.send_nowait(flush)
    nursery.start_soon(run_writer, receive, transport)
    with trio.fail_after(5):
        await flush.done.wait()
    assert [decode_agent_frame(m) for m in transport.sent] == [chunk("r", "abc")]
