"""relay/wsframes.py against wsproto's client as the reference encoder and decoder."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, Pong, TextMessage

from mrcommon import closecodes
from relay import wsframes


def _client() -> Connection:
    return Connection(ConnectionType.CLIENT)


def _masked(opcode_bits: int, payload: bytes, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    """A hand-built masked frame; `opcode_bits` is the whole first byte."""
    n = len(payload)
    length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([opcode_bits]) + length + mask + body


def test_accept_key_is_the_rfc_example() -> None:
    assert wsframes.accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


messages = st.lists(st.one_of(st.text(max_size=300), st.binary(max_size=300)), max_size=6)


@given(messages, st.data())
def test_messages_survive_any_fragmenting_and_any_read_boundaries(
    sent: list[str | bytes], data: st.DataObject
) -> None:
    client = _client()
    wire = b""
    for message in sent:
        pieces = data.draw(st.integers(min_value=1, max_value=4))
        step = max(1, len(message) // pieces)
        parts = [message[i : i + step] for i in range(0, len(message), step)] or [message]
        for i, part in enumerate(parts):
            event: Message[str] | Message[bytes] = (
                TextMessage(part, message_finished=i == len(parts) - 1)  # type: ignore[arg-type]
                if isinstance(message, str)
                else BytesMessage(part, message_finished=i == len(parts) - 1)  # type: ignore[arg-type]
            )
            wire += client.send(event)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    reader = wsframes.FrameReader(max_message=1 << 20)
    got = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        got += [event.data for event in reader.feed(wire[start:end])]  # type: ignore[union-attr]
    assert got == sent


def test_ping_pong_and_close() -> None:
    client = _client()
    reader = wsframes.FrameReader(max_message=1024)
    events = reader.feed(
        client.send(Ping(b"hi"))
        + client.send(Pong(b"ignored"))
        + client.send(CloseConnection(1001, "bye"))
    )
    assert [type(e) for e in events] == [wsframes.Ping, wsframes.Close]
    assert events[0].payload == b"hi"  # type: ignore[union-attr]
    assert (events[1].code, events[1].reason) == (1001, "bye")  # type: ignore[union-attr]


def test_a_close_without_a_code_is_1005() -> None:
    (event,) = wsframes.FrameReader(1024).feed(_masked(0x88, b""))
    assert isinstance(event, wsframes.Close)
    assert event.code == closecodes.NO_STATUS


@pytest.mark.parametrize(
    ("frame", "code", "words"),
    [
        (b"\x81\x02hi", 1002, "masked"),
        (_masked(0xC1, b"hi"), 1002, "reserved"),
        (_masked(0x83, b"hi"), 1002, "opcode"),
        (_masked(0x89, b"x" * 126), 1002, "control"),
        (_masked(0x09, b"hi"), 1002, "control"),
        (_masked(0x80, b"hi"), 1002, "continuation"),
        (_masked(0x01, b"a") + _masked(0x81, b"b"), 1002, "inside"),
        (_masked(0x81, b"\xff\xfe"), 1007, "UTF-8"),
        (_masked(0x88, b"\x03"), 1002, "one-byte"),
        (_masked(0x88, (1005).to_bytes(2, "big")), 1002, "1005"),
        (_masked(0x88, (999).to_bytes(2, "big")), 1002, "999"),
        (_masked(0x88, (1000).to_bytes(2, "big") + b"\xff"), 1007, "UTF-8"),
    ],
)
def test_frames_that_break_the_rules_name_their_close_code(
    frame: bytes, code: int, words: str
) -> None:
    with pytest.raises(wsframes.FrameError) as caught:
        wsframes.FrameReader(1024).feed(frame)
    assert caught.value.code == code
    assert words in caught.value.reason


def test_a_message_past_the_bound_is_1009_before_its_bytes_arrive() -> None:
    reader = wsframes.FrameReader(max_message=100)
    header_only = _masked(0x81, b"x" * 101)[:8]  # the length is known from the header
    with pytest.raises(wsframes.FrameError) as caught:
        reader.feed(header_only)
    assert caught.value.code == 1009


def test_fragments_count_towards_the_bound() -> None:
    reader = wsframes.FrameReader(max_message=100)
    assert reader.feed(_masked(0x01, b"x" * 60)) == []
    with pytest.raises(wsframes.FrameError) as caught:
        reader.feed(_masked(0x80, b"x" * 60))
    assert caught.value.code == 1009


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_server_frames_parse_in_wsproto(size: int) -> None:
    client = _client()
    payload = "é" * (size // 2) + "x" * (size % 2)
    client.receive_data(wsframes.frame(wsframes.TEXT, payload.encode()))
    (event,) = list(client.events())
    assert isinstance(event, TextMessage)
    assert event.data == payload
    assert event.message_finished


def test_close_frames_parse_in_wsproto_and_long_reasons_are_cut() -> None:
    client = _client()
    client.receive_data(wsframes.close_frame(1008, "é" * 200))
    (event,) = list(client.events())
    assert isinstance(event, CloseConnection)
    assert event.code == 1008
    assert len(event.reason.encode()) <= 123
    assert set(event.reason) == {"é"}


@pytest.mark.parametrize("size", [3, 511, 512, 513, 100_003])
def test_masked_messages_of_every_size_unmask_on_both_paths(size: int) -> None:
    """Small payloads unmask as one integer XOR, large ones by translation tables."""
    client = _client()
    text = "".join(chr(0x61 + i % 26) for i in range(size))
    blob = bytes(i % 251 for i in range(size))
    wire = client.send(TextMessage(text)) + client.send(BytesMessage(blob))
    reader = wsframes.FrameReader(max_message=1 << 20)
    got = []
    for start in range(0, len(wire), 4096):
        got += [event.data for event in reader.feed(wire[start : start + 4096])]  # type: ignore[union-attr]
    assert got == [text, blob]
    assert type(got[1]) is bytes
