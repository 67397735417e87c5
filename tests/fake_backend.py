"""A fake LLM server over real HTTP (Hypercorn + a raw ASGI app) for tests and benchmarks.

It speaks the shapes of the real APIs (OpenAI chat/completions/embeddings/
responses, Anthropic messages, Ollama tags), streaming as real SSE, and
records every request. Behaviour is steered per request by a ``"fake"``
object in the JSON body, which the relay and the agent forward untouched::

    {"model": "fake-model", "stream": true,
     "fake": {"chunks": 5, "delay": 0.01, "stall_after": 2}}

Directives (all optional):

- ``status`` (int): answer with this status and an error body (OpenAI shape,
  Anthropic shape on ``/v1/messages*``);
- ``chunks`` (int, default 3): content pieces (stream events, or the
  pieces joined into the non-streaming message); also the completion token count;
- ``delay`` (float, default 0): seconds between chunks (a non-streaming answer
  waits ``chunks * delay`` before it is sent);
- ``stall`` (bool): send nothing at all; hold the connection until the client leaves;
- ``stall_after`` (int): stream that many chunks, then hold until the client leaves;
- ``crash_after`` (int): stream that many chunks, then drop the TCP connection
  without finishing the chunked body;
- ``body_bytes`` (int): pad a non-streaming body to about this size;
- ``text`` (str): the content of each chunk (and of a non-streaming message).
- ``cache_read``, ``cache_creation`` (int): on ``/v1/messages``, report
  that many prompt tokens as read from / written to a prompt cache;
- ``prefill`` (float): seconds before any byte of the answer, status line
  included (a long prompt being processed); a client that leaves meanwhile
  ends it.

`FakeBackend.running` counts the POSTs being answered now and `max_running`
the most at once: a one-slot backend that must never run two.

In-process::

    backend = FakeBackend(models=["m1"])
    url = await nursery.start(backend.run)     # "http://127.0.0.1:PORT"
    ...
    rec = backend.requests[-1]; await rec.done.wait(); rec.disconnected_at

As a process (end-to-end tests, benchmarks)::

    python -m tests.fake_backend [--models a,b] [--no-anthropic] [--ollama]

prints ``FAKE_BACKEND_URL=http://127.0.0.1:PORT`` as its first line and
serves until SIGTERM/SIGINT. ``GET /_control/log`` returns the recorded
requests as JSON (times are `trio.current_time()` values: compare them with
each other only); ``GET /_control/concurrency`` returns ``{"in_flight",
"max_in_flight"}``, the POSTs being answered now and the most ever answered
at once (what an agent's ``--max-concurrency`` must bound);
``PUT /_control/models`` with ``{"models": [...]}``
replaces the model list.

This module imports neither `relay` nor `agent`.
"""

import argparse
import json
import signal
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from functools import partial
from typing import Any, cast

import attrs
import hypercorn.config
import hypercorn.trio
import trio

__all__ = ["FakeBackend", "Recorded", "read_body", "serve_lifespan"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_CREATED = 1_700_000_000  # a fixed "created" timestamp: answers are deterministic

_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


@attrs.define(eq=False)
class Recorded:
    """One request the fake backend received, and what became of it.

    Attributes:
        method: HTTP method.
        path: Request path (without query).
        headers: Request headers, names lower-case.
        body: Raw request body.
        json: The body parsed as JSON, or None.
        started_at: `trio.current_time()` when the request arrived.
        finished_at: When the full response was sent, else None.
        disconnected_at: When the client went away before the response
            finished, else None.
        done: Set when the response finished, the client left, or the fake
            dropped the connection on purpose (``crash_after``).
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    started_at: float
    finished_at: float | None = None
    disconnected_at: float | None = None
    done: trio.Event = attrs.field(factory=trio.Event, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-able dict (for ``GET /_control/log``)."""
        return {
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "json": self.json,
            "body_bytes": len(self.body),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "disconnected_at": self.disconnected_at,
        }


@attrs.define(eq=False)
class _Exchange:
    """One request's response side: tells a finished response from a vanished client."""

    record: Recorded
    send: Send
    final_sent: bool = False

    async def start(
        self, status: int, content_type: str, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        headers = [(b"content-type", content_type.encode())]
        headers.extend(extra or [])
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def finish(self, data: bytes = b"") -> None:
        # Hypercorn reports the stream's end as `http.disconnect` while this
        # send runs; `final_sent` tells the watcher it is not a vanished client.
        self.final_sent = True
        await self.send({"type": "http.response.body", "body": data, "more_body": False})
        self.record.finished_at = trio.current_time()
        self.record.done.set()

    async def whole(
        self, status: int, payload: object, content_type: str = "application/json"
    ) -> None:
        data = json.dumps(payload).encode()
        await self.start(status, content_type, [(b"content-length", str(len(data)).encode())])
        await self.finish(data)


def _sse(data: object, event: str | None = None) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {text}\n\n".encode()


def _words(value: object) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(item) for item in value)
    if isinstance(value, dict):
        return sum(_words(item) for key, item in value.items() if key in {"content", "text"})
    return 0


def _prompt_tokens(body: dict[str, Any]) -> int:
    total = sum(_words(body.get(key)) for key in ("messages", "prompt", "input", "system"))
    return max(total, 1)


@attrs.frozen
class _Directives:
    status: int | None = None
    chunks: int = 3
    delay: float = 0.0
    stall: bool = False
    stall_after: int | None = None
    crash_after: int | None = None
    body_bytes: int | None = None
    text: str | None = None
    prefill: float = 0.0
    cache_read: int | None = None
    cache_creation: int | None = None

    def cache_usage(self) -> dict[str, int]:
        """Anthropic's prompt-cache usage fields, when asked for."""
        usage = {}
        if self.cache_read is not None:
            usage["cache_read_input_tokens"] = self.cache_read
        if self.cache_creation is not None:
            usage["cache_creation_input_tokens"] = self.cache_creation
        return usage

    @classmethod
    def of(cls, body: dict[str, Any]) -> "_Directives":
        raw = body.get("fake")
        if not isinstance(raw, dict):
            return cls()
        known = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def piece(self, index: int) -> str:
        return self.text if self.text is not None else f"tok{index} "

    def pieces(self) -> list[str]:
        return [self.piece(i) for i in range(self.chunks)]

    def content(self) -> str:
        return self.text if self.text is not None else "".join(self.pieces())


@attrs.define(eq=False)
class FakeBackend:
    """Owns a fake LLM HTTP server's state: its models, its switches and what it received.

    Attributes:
        models: Models listed by ``/v1/models`` (or ``/api/tags`` when `ollama`).
        anthropic: Whether ``/v1/messages*`` exists (False: 404, like an OpenAI-only server).
        ollama: Act like Ollama for discovery: ``/v1/models`` answers 404 and
            ``/api/tags`` lists the models.
        requests: Every request received (control requests excepted), in order.
        url: The base URL, once serving ("" before).
    """

    models: list[str] = attrs.field(factory=lambda: ["fake-model"])
    anthropic: bool = True
    ollama: bool = False
    requests: list[Recorded] = attrs.field(factory=list)
    url: str = ""
    running: int = attrs.field(default=0, init=False)
    max_running: int = attrs.field(default=0, init=False)
    _counter: int = attrs.field(default=0, init=False)
    _arrived: trio.Event = attrs.field(factory=trio.Event, init=False)

    async def wait_requests(self, count: int) -> list[Recorded]:
        """Wait until at least `count` requests have arrived; return them all."""
        while len(self.requests) < count:
            await self._arrived.wait()
        return self.requests

    async def run(
        self,
        port: int = 0,
        stop: trio.Event | None = None,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve on 127.0.0.1 until cancelled, or until `stop` is set.

        Cancelling it closes the listener and every connection: a backend
        that died. Setting `stop` is a backend shut down in order: no new
        connection is accepted, and answers in progress get 0.5 s to finish.
        Running it again with the same `port` is the backend coming back at
        the same address.

        Args:
            port: The port; 0 (default) picks a free one.
            stop: Set to shut down in order.
            task_status: Started with the base URL, ``http://127.0.0.1:PORT``.
        """
        config = hypercorn.config.Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.loglevel = "WARNING"
        config.accesslog = None
        config.graceful_timeout = 0.5
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(
                # A raw ASGI app with loosely typed dicts: Hypercorn's TypedDicts
                # describe the same messages.
                partial(
                    hypercorn.trio.serve,
                    cast("Any", self),
                    config,
                    mode="asgi",
                    shutdown_trigger=stop.wait if stop is not None else None,
                )
            )
            self.url = binds[0]
            task_status.started(self.url)

    # --- ASGI ------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        if body is None:
            return
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith("/_control/"):
            await self._control(method, path, body, _Exchange(_dummy_record(), send))
            return
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        record = Recorded(method, path, headers, body, parsed, trio.current_time())
        self.requests.append(record)
        arrived, self._arrived = self._arrived, trio.Event()
        arrived.set()
        exchange = _Exchange(record, send)
        posted = method == "POST"
        if posted:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_disconnect, receive, exchange, nursery.cancel_scope)
                await self._dispatch(method, path, exchange)
                if record.finished_at is None:  # crash_after: return without finishing the body
                    record.done.set()
                nursery.cancel_scope.cancel()
        finally:
            if posted:
                self.running -= 1

    @staticmethod
    async def _watch_disconnect(
        receive: Receive, exchange: _Exchange, response_scope: trio.CancelScope
    ) -> None:
        # A raw ASGI app is not cancelled by Hypercorn when its client leaves:
        # watch for `http.disconnect` and cancel the response ourselves.
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        if exchange.final_sent:
            return  # the end of a complete response, not a client leaving early
        exchange.record.disconnected_at = trio.current_time()
        exchange.record.done.set()
        response_scope.cancel()

    async def _control(self, method: str, path: str, body: bytes, exchange: _Exchange) -> None:
        if path == "/_control/log" and method == "GET":
            await exchange.whole(200, [record.to_json() for record in self.requests])
        elif path == "/_control/concurrency" and method == "GET":
            await exchange.whole(
                200, {"in_flight": self.running, "max_in_flight": self.max_running}
            )
        elif path == "/_control/models" and method == "PUT":
            try:
                models = json.loads(body)["models"]
            except (ValueError, KeyError, TypeError):
                await exchange.whole(400, {"error": 'expected {"models": [...]}'})
                return
            if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
                await exchange.whole(400, {"error": "models must be a list of strings"})
                return
            self.models = list(models)
            await exchange.whole(200, {"models": self.models})
        else:
            await exchange.whole(404, {"error": "unknown control path"})

    # --- routes ----------------------------------------------------------

    async def _dispatch(self, method: str, path: str, exchange: _Exchange) -> None:
        if method == "GET":
            if path == "/v1/models" and not self.ollama:
                data = [
                    {"id": m, "object": "model", "created": _CREATED, "owned_by": "fake"}
                    for m in self.models
                ]
                await exchange.whole(200, {"object": "list", "data": data})
            elif path == "/api/tags" and self.ollama:
                tags = [
                    {
                        "name": m,
                        "model": m,
                        "modified_at": "2026-01-01T00:00:00Z",
                        "size": 0,
                        "digest": "",
                    }
                    for m in self.models
                ]
                await exchange.whole(200, {"models": tags})
            elif path == "/health":
                await exchange.whole(200, {"status": "ok"})
            else:
                await exchange.whole(404, {"detail": "Not Found"})
            return
        handlers = {
            "/v1/chat/completions": self._chat,
            "/v1/completions": self._completions,
            "/v1/responses": self._responses,
            "/v1/embeddings": self._embeddings,
            "/v1/messages": self._messages,
            "/v1/messages/count_tokens": self._count_tokens,
        }
        handler = handlers.get(path)
        if method != "POST" or handler is None:
            await exchange.whole(404, {"detail": "Not Found"})
            return
        anthropic_path = path.startswith("/v1/messages")
        if anthropic_path and not self.anthropic:
            await exchange.whole(404, {"detail": "Not Found"})
            return
        body = exchange.record.json
        if not isinstance(body, dict):
            await exchange.whole(
                400, _error_payload(anthropic_path, 400, "body is not a JSON object")
            )
            return
        directives = _Directives.of(body)
        if directives.prefill:
            await trio.sleep(directives.prefill)
        if directives.status is not None:
            status = int(directives.status)
            await exchange.whole(
                status, _error_payload(anthropic_path, status, f"fake error {status}")
            )
            return
        if directives.stall:
            await trio.sleep_forever()
        if body.get("stream") is not True and directives.delay:
            # A non-streaming answer takes as long as generating its chunks.
            await trio.sleep(directives.delay * directives.chunks)
        self._counter += 1
        await handler(body, directives, exchange)

    def _id(self, prefix: str) -> str:
        return f"{prefix}fake-{self._counter}"

    async def _stream(
        self,
        exchange: _Exchange,
        directives: _Directives,
        head: list[bytes],
        events: Iterator[bytes],
        tail: list[bytes],
    ) -> None:
        """Send SSE: `head`, then one content event per chunk (with the stall and
        crash directives), then `tail`. Each event is its own body write."""
        await exchange.start(200, "text/event-stream", [(b"cache-control", b"no-cache")])
        for event in head:
            await exchange.body(event)
        for index, event in enumerate(events):
            if directives.stall_after is not None and index >= directives.stall_after:
                await trio.sleep_forever()
            if directives.crash_after is not None and index >= directives.crash_after:
                return  # Hypercorn closes the connection without the last chunk
            if index and directives.delay:
                await trio.sleep(directives.delay)
            await exchange.body(event)
        if directives.stall_after is not None:
            await trio.sleep_forever()
        if directives.crash_after is not None:
            return
        for event in tail[:-1]:
            await exchange.body(event)
        await exchange.finish(tail[-1] if tail else b"")

    def _pad(
        self, payload: dict[str, Any], directives: _Directives, set_text: Callable[[str], None]
    ) -> dict[str, Any]:
        if directives.body_bytes:
            missing = directives.body_bytes - len(json.dumps(payload))
            if missing > 0:
                set_text(directives.content() + "x" * missing)
        return payload

    async def _chat(self, body: dict[str, Any], d: _Directives, exchange: _Exchange) -> None:
        model = body.get("model", "")
        prompt = _prompt_tokens(body)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": d.chunks,
            "total_tokens": prompt + d.chunks,
        }
        cid = self._id("chatcmpl-")
        if body.get("stream") is True:

            def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
                return {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": _CREATED,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }

            tail = [_sse(chunk({}, "stop"))]
            options = body.get("stream_options")
            if isinstance(options, dict) and options.get("include_usage"):
                tail.append(
                    _sse(
                        {
                            "id": cid,
                            "object": "chat.completion.chunk",
                            "created": _CREATED,
                            "model": model,
                            "choices": [],
                            "usage": usage,
                        }
                    )
                )
            tail.append(_sse("[DONE]"))
            await self._stream(
                exchange,
                d,
                [_sse(chunk({"role": "assistant", "content": ""}))],
                (_sse(chunk({"content": p})) for p in d.pieces()),
                tail,
            )
            return
        message = {"role": "assistant", "content": d.content()}
        payload = {
            "id": cid,
            "object": "chat.completion",
            "created": _CREATED,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": usage,
        }
        await exchange.whole(200, self._pad(payload, d, partial(message.__setitem__, "content")))

    async def _completions(self, body: dict[str, Any], d: _Directives, exchange: _Exchange) -> None:
        model = body.get("model", "")
        prompt = _prompt_tokens(body)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": d.chunks,
            "total_tokens": prompt + d.chunks,
        }
        cid = self._id("cmpl-")

        def choice(text: str, finish: str | None) -> dict[str, Any]:
            return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}

        if body.get("stream") is True:

            def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
                return {
                    "id": cid,
                    "object": "text_completion",
                    "created": _CREATED,
                    "model": model,
                    "choices": [choice(text, finish)],
                }

            tail = [_sse(chunk("", "stop"))]
            options = body.get("stream_options")
            if isinstance(options, dict) and options.get("include_usage"):
                tail.append(
                    _sse(
                        {
                            "id": cid,
                            "object": "text_completion",
                            "created": _CREATED,
                            "model": model,
                            "choices": [],
                            "usage": usage,
                        }
                    )
                )
            tail.append(_sse("[DONE]"))
            await self._stream(exchange, d, [], (_sse(chunk(p)) for p in d.pieces()), tail)
            return
        first = choice(d.content(), "stop")
        payload = {
            "id": cid,
            "object": "text_completion",
            "created": _CREATED,
            "model": model,
            "choices": [first],
            "usage": usage,
        }
        await exchange.whole(200, self._pad(payload, d, partial(first.__setitem__, "text")))

    async def _responses(self, body: dict[str, Any], d: _Directives, exchange: _Exchange) -> None:
        model = body.get("model", "")
        prompt = _prompt_tokens(body)
        usage = {
            "input_tokens": prompt,
            "output_tokens": d.chunks,
            "total_tokens": prompt + d.chunks,
        }
        rid, mid = self._id("resp_"), self._id("msg_")

        def response(status: str, text: str | None, with_usage: bool) -> dict[str, Any]:
            output = []
            if text is not None:
                output = [
                    {
                        "type": "message",
                        "id": mid,
                        "status": "completed",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}],
                    }
                ]
            return {
                "id": rid,
                "object": "response",
                "created_at": _CREATED,
                "status": status,
                "model": model,
                "output": output,
                "usage": usage if with_usage else None,
            }

        if body.get("stream") is True:
            seq = iter(range(1_000_000))
            head = [
                _sse(
                    {
                        "type": "response.created",
                        "sequence_number": next(seq),
                        "response": response("in_progress", None, False),
                    },
                    "response.created",
                )
            ]
            deltas = (
                _sse(
                    {
                        "type": "response.output_text.delta",
                        "sequence_number": next(seq),
                        "item_id": mid,
                        "output_index": 0,
                        "content_index": 0,
                        "delta": p,
                    },
                    "response.output_text.delta",
                )
                for p in d.pieces()
            )
            done = response("completed", d.content(), True)
            tail = [
                _sse(
                    {
                        "type": "response.completed",
                        "sequence_number": d.chunks + 1,
                        "response": done,
                    },
                    "response.completed",
                )
            ]
            await self._stream(exchange, d, head, deltas, tail)
            return
        payload = response("completed", d.content(), True)
        content = payload["output"][0]["content"][0]
        await exchange.whole(200, self._pad(payload, d, partial(content.__setitem__, "text")))

    async def _embeddings(self, body: dict[str, Any], d: _Directives, exchange: _Exchange) -> None:
        inputs = body.get("input", "")
        count = len(inputs) if isinstance(inputs, list) else 1
        prompt = _prompt_tokens(body)
        data = [
            {"object": "embedding", "index": i, "embedding": [0.0, 0.1, 0.2, 0.3]}
            for i in range(count)
        ]
        await exchange.whole(
            200,
            {
                "object": "list",
                "data": data,
                "model": body.get("model", ""),
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
            },
        )

    async def _count_tokens(
        self, body: dict[str, Any], d: _Directives, exchange: _Exchange
    ) -> None:
        await exchange.whole(200, {"input_tokens": _prompt_tokens(body)})

    async def _messages(self, body: dict[str, Any], d: _Directives, exchange: _Exchange) -> None:
        model = body.get("model", "")
        prompt = _prompt_tokens(body)
        mid = self._id("msg_")
        if body.get("stream") is True:
            start = {
                "type": "message_start",
                "message": {
                    "id": mid,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": prompt, "output_tokens": 1, **d.cache_usage()},
                },
            }
            head = [
                _sse(start, "message_start"),
                _sse(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                    "content_block_start",
                ),
            ]
            deltas = (
                _sse(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": p},
                    },
                    "content_block_delta",
                )
                for p in d.pieces()
            )
            tail = [
                _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
                _sse(
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": {"output_tokens": d.chunks},
                    },
                    "message_delta",
                ),
                _sse({"type": "message_stop"}, "message_stop"),
            ]
            await self._stream(exchange, d, head, deltas, tail)
            return
        block = {"type": "text", "text": d.content()}
        payload = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [block],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": d.chunks, **d.cache_usage()},
        }
        await exchange.whole(200, self._pad(payload, d, partial(block.__setitem__, "text")))


def _error_payload(anthropic: bool, status: int, message: str) -> dict[str, Any]:
    if anthropic:
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    kind = _OPENAI_ERROR_TYPES.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "code": status}}


async def read_body(receive: Receive) -> bytes | None:
    """An ASGI request's whole body, or None when the client left first."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body)


async def serve_lifespan(receive: Receive, send: Send) -> None:
    """Answer an ASGI lifespan: start at once, stop at once."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _dummy_record() -> Recorded:
    return Recorded("", "", {}, b"", None, 0.0)


async def _serve_process(backend: FakeBackend) -> None:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(backend.run)
        print(f"FAKE_BACKEND_URL={url}", flush=True)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.fake_backend``: serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m tests.fake_backend")
    parser.add_argument("--models", default="fake-model", help="comma list of model names")
    parser.add_argument("--no-anthropic", action="store_true", help="/v1/messages answers 404")
    parser.add_argument("--ollama", action="store_true", help="discovery via /api/tags only")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    backend = FakeBackend(models=models, anthropic=not args.no_anthropic, ollama=args.ollama)
    trio.run(_serve_process, backend)


if __name__ == "__main__":
    main()
