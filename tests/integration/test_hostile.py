"""Hostile input costs nobody else anything (issue 13), probed from outside.

Every test here drives real relay and agent processes (tests/integration/
procs.py) over real sockets: raw HTTP where the bytes on the wire are the
point, a scripted WebSocket worker where the worker is the attacker. The
rules are docs/security.md's.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import attrs
import httpx
import pytest
import trio

import wire
from tests.agent.fakes import start_fake_relay
from tests.integration.procs import SECRET, agent_process, relay_process, spawn
from tests.relay.fake_worker import connect_worker, open_raw_ws

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fake_backend import FakeBackend
    from tests.integration.conftest import Stack

CHAT = "/v1/chat/completions"


# --- raw HTTP ---------------------------------------------------------------------


@attrs.define
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


@attrs.define(eq=False)
class Raw:
    """One client connection, bytes as written; answers parsed by hand."""

    stream: trio.SocketStream
    buffer: bytearray = attrs.field(factory=bytearray)

    @classmethod
    async def open(cls, url: str) -> Raw:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        return cls(await trio.open_tcp_stream(host, int(port)))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _more(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError(f"connection closed; unread: {bytes(self.buffer)[:200]!r}")
        self.buffer += data

    async def answer(self) -> Answer:
        """The next response (a 1xx too), read to the end of its sized body."""
        while b"\r\n\r\n" not in self.buffer:
            await self._more()
        head, _, _ = bytes(self.buffer).partition(b"\r\n\r\n")
        del self.buffer[: len(head) + 4]
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode()] = value.strip().decode("latin-1")
        if status < 200:
            return Answer(status, headers, b"")
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            await self._more()
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return Answer(status, headers, body)

    async def closed(self) -> bool:
        """Whether the relay closes the connection (waits for it; True at EOF).

        A reset counts: closing with unread bytes of ours in its buffer, the
        relay's kernel answers with RST.
        """
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return True
            if not data:
                return True
            self.buffer += data

    async def aclose(self) -> None:
        await self.stream.aclose()


def request_head(target: str | bytes, length: int, *headers: bytes, expect: bool = False) -> bytes:
    target_bytes = target.encode() if isinstance(target, str) else target
    lines = [
        b"POST " + target_bytes + b" HTTP/1.1",
        b"host: relay.test",
        b"content-type: application/json",
        b"content-length: %d" % length,
        *headers,
    ]
    if expect:
        lines.append(b"expect: 100-continue")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def chat_body(**fake: object) -> bytes:
    doc: dict[str, object] = {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "hi"}],
    }
    if fake:
        doc["fake"] = fake
    return json.dumps(doc).encode()


async def post_raw(url: str, target: str | bytes, body: bytes, *headers: bytes) -> Answer:
    conn = await Raw.open(url)
    try:
        await conn.send(request_head(target, len(body), *headers) + body)
        return await conn.answer()
    finally:
        await conn.aclose()


def backend_posts(backend: FakeBackend) -> list[str]:
    return [r.path for r in backend.requests if r.method == "POST"]


# --- 1: nothing held for a client without a key, or for a body that never comes ---


async def test_key_is_checked_from_the_head_without_100_continue(
    tmp_path: Path, http_front: str
) -> None:
    async with relay_process(
        "--require-api-keys", "--admin-token", "adm", "--data-dir", str(tmp_path)
    ) as (_relay, url):
        conn = await Raw.open(url)
        with trio.fail_after(10):
            await conn.send(request_head(CHAT, 1000, expect=True))
            answer = await conn.answer()
            if http_front == "hypercorn" and answer.status == 100:
                # Hypercorn sends 100 Continue itself as it parses the head,
                # before the app runs: the builtin front is the one that
                # keeps this rule (docs/security.md).
                answer = await conn.answer()
            # 401 at once: no 100 Continue invited the body, none was waited for.
            assert answer.status == 401, answer
            assert answer.json()["error"]["code"] == "invalid_api_key"  # type: ignore[index]
            assert await conn.closed()  # the unread body is not read: the connection ends
        await conn.aclose()


async def test_a_body_that_never_arrives_is_answered_408_and_closed() -> None:
    async with relay_process("--body-timeout", "1") as (relay, url):
        conns = [await Raw.open(url) for _ in range(3)]
        with trio.fail_after(15):
            for conn in conns:
                await conn.send(request_head(CHAT, 1000) + b'{"model": "x"')
            for conn in conns:
                answer = await conn.answer()
                assert answer.status == 408, answer
                assert await conn.closed()
        for conn in conns:
            await conn.aclose()
        line = await relay.wait_for(lambda line: line.get("event") == "request rejected")
        assert line["error"] == "body_timeout"


async def test_bodies_held_across_requests_are_bounded(backend: FakeBackend) -> None:
    # Two bodies that each fit --max-body-bytes but not both in the budget:
    # whichever pushes the total past it is refused (503) and its connection
    # closed; the other completes normally once its last bytes come.
    size = 600_000
    async with (
        relay_process("--max-body-bytes", str(size), "--max-pending-body-bytes", "1MiB") as (
            relay,
            url,
        ),
        agent_process(relay, backend.url),
    ):
        pad = size - len(chat_body(pad=""))
        body = chat_body(pad="x" * pad)
        assert len(body) == size
        conns = [await Raw.open(url), await Raw.open(url)]
        answers: trio.MemorySendChannel[tuple[int, Answer]]
        answers, received = trio.open_memory_channel[tuple[int, Answer]](2)
        async with trio.open_nursery() as nursery:
            for index, conn in enumerate(conns):
                await conn.send(request_head(CHAT, size) + body[:-16])

                async def read(index: int = index, conn: Raw = conn) -> None:
                    await answers.send((index, await conn.answer()))

                nursery.start_soon(read)
            with trio.fail_after(15):
                refused_index, refused = await received.receive()
                assert refused.status == 503, refused
                assert refused.headers["retry-after"] == "1"
                other = conns[1 - refused_index]
                await other.send(body[-16:])
                _, served = await received.receive()
                assert served.status == 200, served
                assert await conns[refused_index].closed()
        for conn in conns:
            await conn.aclose()


# --- 2: a client's x-request-id is a label, never an identity ---------------------


@pytest.mark.one_front
async def test_same_client_request_id_never_crosses_responses(stack: Stack) -> None:
    conns = [await Raw.open(stack.url), await Raw.open(stack.url)]
    bodies = [chat_body(text="alpha", delay=0.2, chunks=2), chat_body(text="beta", chunks=1)]
    with trio.fail_after(20):
        # Both heads are taken (their ids chosen) before either body arrives:
        # the relay sends 100 Continue only once it has started on the body.
        for conn, body in zip(conns, bodies, strict=True):
            await conn.send(request_head(CHAT, len(body), b"x-request-id: same-id", expect=True))
            assert (await conn.answer()).status == 100
        for conn, body in zip(conns, bodies, strict=True):
            await conn.send(body)
        alpha, beta = [await conn.answer() for conn in conns]
    assert alpha.status == beta.status == 200
    assert b"alpha" in alpha.body
    assert b"beta" not in alpha.body
    assert b"beta" in beta.body
    assert b"alpha" not in beta.body
    assert alpha.headers["x-request-id"] == beta.headers["x-request-id"] == "same-id"
    for conn in conns:
        await conn.aclose()
    await stack.relay.wait_count(("request finished",), 2)
    finished = stack.relay.events("request finished")
    assert {line["client_request_id"] for line in finished} == {"same-id"}
    ids = {line["request_id"] for line in finished}
    assert len(ids) == 2
    assert "same-id" not in ids
    await stack.agent.wait_count(("request finished",), 2)
    agent_lines = stack.agent.events("request finished")
    assert {line["request_id"] for line in agent_lines} == ids
    assert {line["client_request_id"] for line in agent_lines} == {"same-id"}


# --- 3: only normal paths under /v1/ reach a backend -------------------------------

ESCAPES = [
    "/v1/../api/pull",
    "/v1/%2e%2e/%2e%2e/api/pull",
    "/v1/..%2fapi%2fcreate",
    "/v1/./chat/completions",
    "/v1/chat/%2E/completions",
    "/v1/chat%2fcompletions",
    "/v1/chat%3fcompletions",
    "/v1/chat%23completions",
    "/v1/%252e%252e/api/pull",
    "/v1/chat\\..\\completions",
]


async def test_paths_that_could_leave_v1_are_refused_by_the_relay(stack: Stack) -> None:
    body = chat_body()
    with trio.fail_after(20):
        for target in ESCAPES:
            answer = await post_raw(stack.url, target, body)
            assert answer.status == 400, (target, answer)
            assert answer.json()["error"]["code"] == "bad_request"  # type: ignore[index]
        normal = await post_raw(stack.url, CHAT, body)
    assert normal.status == 200
    assert backend_posts(stack.backend) == [CHAT]


# --- 6: deep nesting is bad input, not a crash --------------------------------------


@pytest.mark.one_front
async def test_deeply_nested_body_is_400_not_500(stack: Stack) -> None:
    depth = 100_000
    body = b'{"model": "fake-model", "x": ' + b"[" * depth + b"]" * depth + b"}"
    with trio.fail_after(20):
        answer = await post_raw(stack.url, CHAT, body)
        after = await post_raw(stack.url, CHAT, chat_body())
    assert answer.status == 400, answer
    assert b"nested too deeply" in answer.body
    assert after.status == 200
    assert not stack.relay.events("internal error in the proxy")


# --- 7: a worker's answer HTTP cannot carry is the worker's fault -------------------


@pytest.mark.one_front
@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (101, {"content-type": "application/json"}),
        (0, {"content-type": "application/json"}),
        (999, {"content-type": "application/json"}),
        (200, {"x-note": "caf\u0100"}),
    ],
)
async def test_worker_status_or_header_that_http_cannot_carry_is_502(
    status: int, headers: dict[str, str]
) -> None:
    async with relay_process() as (relay, url):
        ws_url = url.replace("http", "ws", 1) + "/v1/worker/connect"
        async with (
            connect_worker(ws_url, ["m1"], secret=SECRET) as worker,
            httpx.AsyncClient(base_url=url, timeout=10) as client,
            trio.open_nursery() as nursery,
        ):

            async def serve() -> None:
                bad = await worker.recv_request()
                await worker.send(
                    wire.ResponseComplete(
                        request_id=bad.request_id, status_code=status, headers=headers, body="{}"
                    )
                )
                good = await worker.recv_request()
                await worker.reply(good, '{"ok": true}')

            nursery.start_soon(serve)
            body = {"model": "m1", "messages": []}
            with trio.fail_after(10):
                refused = await client.post(CHAT, json=body)
                served = await client.post(CHAT, json=body)
        assert refused.status_code == 502, refused.text
        assert refused.json()["error"]["code"] == "upstream_error"
        assert served.status_code == 200  # the worker's session goes on
        fault = await relay.wait_for(lambda line: line.get("event") == "worker protocol error")
        assert fault["worker_id"] == worker.worker_id
        assert not relay.events("internal error in the proxy")


# --- 8: bad header values are the client's 400; no answer names the backend ---------


async def test_control_character_in_a_header_is_400_from_the_relay(stack: Stack) -> None:
    with trio.fail_after(20):
        answer = await post_raw(stack.url, CHAT, chat_body(), b"anthropic-beta: a\x01b")
    assert answer.status == 400, answer
    assert b"anthropic-beta" in answer.body
    assert backend_posts(stack.backend) == []


@pytest.mark.one_front
async def test_backend_failures_never_show_its_address_to_a_client() -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = f"http://127.0.0.1:{port}/secret-prefix"
    async with (
        relay_process() as (relay, url),
        agent_process(relay, dead, "--models", "fake-model"),
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        with trio.fail_after(20):
            openai = await client.post(CHAT, json={"model": "fake-model", "messages": []})
            anthropic = await client.post(
                "/v1/messages", json={"model": "fake-model", "max_tokens": 5, "messages": []}
            )
    for response in (openai, anthropic):
        # No healthy worker left for the model: 503 with Retry-After (issue 14's rule).
        assert response.status_code == 503
        assert response.headers["retry-after"]
        for leak in (str(port), "127.0.0.1", "secret-prefix"):
            assert leak not in response.text, response.text


# --- 9: wrong admin tokens are limited per address, and logged once ----------------


async def test_wrong_admin_tokens_are_limited_and_logged_once(tmp_path: Path) -> None:
    async with (
        relay_process("--admin-token", "right-token", "--data-dir", str(tmp_path)) as (
            relay,
            url,
        ),
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        wrong = {"authorization": "Bearer wrong"}
        with trio.fail_after(20):
            statuses = [
                (await client.get("/admin/workers", headers=wrong)).status_code for _ in range(30)
            ]
            limited = await client.get("/admin/stats", headers=wrong)
            right = await client.get(
                "/admin/workers", headers={"authorization": "Bearer right-token"}
            )
            await client.get("/health")  # a request after the last failure: its lines are out
    assert statuses == [401] * 10 + [429] * 20
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert right.status_code == 200  # the right token always gets in
    await relay.wait_for(lambda line: line.get("event") == "admin auth rate limited")
    assert len(relay.events("admin auth failed")) == 1
    assert len(relay.events("admin auth rate limited")) == 1


# --- 11: client strings are capped where they are echoed or logged -----------------


@pytest.mark.one_front
async def test_long_model_names_are_capped_in_answers_and_logs(stack: Stack) -> None:
    huge = "m" * 900_000
    unknown = "u" * 500
    with trio.fail_after(20):
        too_long = await stack.client.post(CHAT, json={"model": huge, "messages": []})
        missing = await stack.client.post(CHAT, json={"model": unknown, "messages": []})
    assert too_long.status_code == 400
    assert len(too_long.content) < 1000
    assert missing.status_code == 404
    assert len(missing.content) < 1000
    assert unknown not in missing.text
    await stack.relay.wait_count(("request rejected",), 2)
    assert max(len(line) for line in stack.relay.raw) < 2000


# Paths as a relay would send them (decoded once), that no backend should see.
AGENT_ESCAPES = [
    "/v1/../api/pull",
    "/v1/./chat/completions",
    "/v1/chat/../../api/pull?x=1",
    "/v1/%2e%2e/api/pull",
    "/v1/chat\\..\\completions",
    "/v1/chat#/../../api/pull",
    "/api/pull",
    "http://elsewhere/v1/chat/completions",
]


@pytest.mark.one_front
async def test_the_agent_refuses_such_paths_again(
    nursery: trio.Nursery, backend: FakeBackend
) -> None:
    # A relay (here a scripted one) that forwards an escaping path anyway:
    # the agent process answers 400 and its backend sees nothing.
    fake_relay = await start_fake_relay(nursery)
    args = ["-m", "agent", "run", "--proxy-url", fake_relay.url, "--backend-url", backend.url]
    args += ["--worker-secret", SECRET, "--log-format", "json"]
    async with spawn("agent", args):
        with trio.fail_after(20):
            conn = await fake_relay.next_connection()
            await conn.register()
            for index, target in enumerate(AGENT_ESCAPES):
                await conn.send(
                    wire.Request(
                        request_id=f"r{index}",
                        model="fake-model",
                        endpoint_path=target,
                        is_streaming=False,
                        body=chat_body().decode(),
                    )
                )
                while True:
                    message = await conn.receive()
                    if isinstance(message, wire.ResponseComplete):
                        break
                assert message.request_id == f"r{index}"
                assert message.status_code == 400, (target, message)
            await conn.close()
    assert backend_posts(backend) == []


# --- 5: a client cannot forge a text log line on either daemon ----------------------


@pytest.mark.one_front
async def test_text_logs_escape_what_a_client_sends(backend: FakeBackend) -> None:
    forged = "12:00:00.000 ERROR relay.request forged"
    relay_args = ["-m", "relay", "serve", "--listen", "127.0.0.1:0", "--worker-secret", SECRET]
    relay_args += ["--log-format", "text"]
    async with spawn("relay", relay_args) as relay:
        listening = await relay.wait_for_raw(lambda text: " relay listening " in text)
        url = listening.split(" url=", 1)[1].split(" ", 1)[0]
        agent_args = ["-m", "agent", "run", "--proxy-url", url, "--backend-url", backend.url]
        agent_args += ["--worker-secret", SECRET, "--log-format", "text", "--models", "fake-model"]
        async with spawn("agent", agent_args) as agent:
            await relay.wait_for_raw(lambda text: "models=fake-model" in text)
            target = "/v1/chat%0a" + forged.replace(" ", "%20")
            body = json.dumps({"model": "fake-model\n" + forged, "messages": []}).encode()
            with trio.fail_after(20):
                answer = await post_raw(url, target, chat_body())
                await post_raw(url, CHAT, body)  # an unknown model: 404 from the relay
            assert answer.status == 404  # the backend has no such route
            await agent.wait_for_raw(lambda text: "request finished" in text)
            await relay.wait_for_raw(lambda text: "request rejected" in text)
            await relay.wait_for_raw(lambda text: "request finished" in text)
    for proc in (relay, agent):
        assert not [text for text in proc.raw if text.startswith(forged)], proc.name
        assert any("\\n" + forged in text for text in proc.raw), proc.name


# --- 4 and 10: connections that must end do end, on every route ---------------------

CLOSING = [
    b"GET /health HTTP/1.0\r\n\r\n",
    b"GET /health HTTP/1.1\r\nhost: relay.test\r\nconnection: close\r\n\r\n",
    b"GET /v1/models HTTP/1.0\r\n\r\n",
    b"GET /nowhere HTTP/1.0\r\n\r\n",
    # RFC 9112 6.1: both framings in one request; answered, then closed.
    b"GET /health HTTP/1.1\r\nhost: relay.test\r\ncontent-length: 5\r\n"
    b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
]


_UNKNOWN_MODEL = b'{"model": "x"}'
CLOSING += [
    # The relay's own front (POST /v1/*): a 404 (no worker serves "x") is enough.
    b"POST /v1/chat/completions HTTP/1.0\r\ncontent-length: %d\r\n\r\n%b"
    % (len(_UNKNOWN_MODEL), _UNKNOWN_MODEL),
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: relay.test\r\ncontent-length: %d\r\n"
    b"transfer-encoding: chunked\r\n\r\n%x\r\n%b\r\n0\r\n\r\n"
    % (len(_UNKNOWN_MODEL), len(_UNKNOWN_MODEL), _UNKNOWN_MODEL),
]


@pytest.mark.parametrize(
    "request_bytes",
    CLOSING,
    ids=[
        "http1.0",
        "connection-close",
        "models-http1.0",
        "404-http1.0",
        "cl-and-te",
        "proxy-http1.0",
        "proxy-cl-and-te",
    ],
)
async def test_connection_ends_after_a_closing_request_on_every_route(
    request_bytes: bytes,
) -> None:
    async with relay_process() as (_relay, url):
        conns = [await Raw.open(url) for _ in range(3)]
        with trio.fail_after(10):
            for conn in conns:
                await conn.send(request_bytes)
                answer = await conn.answer()
                assert answer.status in (200, 404), answer
                assert await conn.closed()
        for conn in conns:
            await conn.aclose()


# --- 12: a worker's broken framing is counted with the protocol errors --------------


@pytest.mark.one_front  # Hypercorn reports such a close as any other (1006)
async def test_a_frame_that_breaks_websocket_framing_is_a_protocol_error() -> None:
    async with (
        relay_process() as (relay, url),
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        ws_url = url.replace("http", "ws", 1) + "/v1/worker/connect"
        stream, _ws = await open_raw_ws(ws_url, secret=SECRET)
        with trio.fail_after(10):
            # An unmasked frame from a client (RFC 6455 5.1): the relay closes with 1002.
            await stream.send_all(b"\x81\x02hi")
            raw = Raw(stream)
            assert await raw.closed()
            line = await relay.wait_for(lambda line: line.get("event") == "worker protocol error")
            metrics = await client.get("/metrics")
        await stream.aclose()
    assert line["error"].startswith("framing:")
    assert "modelrelay_protocol_errors_total 1.0" in metrics.text
