"""The Claude Code tests' own backend: a recording HTTP proxy in front of llama.cpp.

It sits between the agent and a real llama.cpp server and:

- records every POST body it receives, as received (the captured Claude Code
  request kept in tests/agent/golden/ came from here);
- makes the model's answer short and the same every run: ``temperature: 0``,
  a stop at the first newline or end of sentence (``stop_sequences`` on
  ``/v1/messages``, ``stop`` on ``/v1/chat/completions``) and at most
  `SHORT_ANSWER_TOKENS` tokens, an answer cut there being reported as a
  natural stop. SmolLM2 sampled under Claude Code's prompt can ramble for
  minutes, and a greedy line can loop without punctuation until the context
  is full (minutes on 2 cores, past the relay's request timeout, after which
  Claude Code retries); a ``max_tokens`` stop would make Claude Code ask the
  model to go on, so it is reported as ``end_turn`` / ``stop``;
- notes when the first generated token came back (``first_token``: a
  ``*_delta`` event from llama.cpp), so a test can cut a client after it
  (llama.cpp finishes a prompt's prefill before it looks at its client again);
- closes its connection to llama.cpp when the agent closes its own (watching
  ``http.disconnect``: Hypercorn does not cancel a raw ASGI app), so a
  cancel reaches llama.cpp as it would without the proxy.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any, cast

import attrs
import httpx
import hypercorn.config
import hypercorn.trio
import trio

from tests.fake_backend import read_body, serve_lifespan

__all__ = ["SHORT_ANSWER_TOKENS", "RecordingProxy"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_STOPS = ("\n", ".", "!", "?")
SHORT_ANSWER_TOKENS = 48
# A shortened answer cut at its token cap ends as if at a stop: llama.cpp
# writes compact JSON, one event per write.
_CAP_AS_STOP = (
    (b'"stop_reason":"max_tokens"', b'"stop_reason":"end_turn"'),
    (b'"finish_reason":"length"', b'"finish_reason":"stop"'),
)
_HOP = frozenset({b"content-length", b"transfer-encoding", b"connection", b"keep-alive"})


@attrs.define(eq=False)
class RecordingProxy:
    """Owns the proxy's listener and what it recorded.

    Attributes:
        upstream: llama.cpp's base URL.
        bodies: Every POST as (path with query, raw body), in order.
        first_token: Set when an answer's first token arrived from llama.cpp.
        url: Our base URL, once serving.
        shorten: Make answers short (greedy, one line); False passes bodies as they are.
    """

    upstream: str
    shorten: bool = True
    bodies: list[tuple[str, bytes]] = attrs.field(factory=list)
    first_token: trio.Event = attrs.field(factory=trio.Event)
    url: str = ""

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve on 127.0.0.1 (ephemeral port) until cancelled."""
        config = hypercorn.config.Config()
        config.bind = ["127.0.0.1:0"]
        config.loglevel = "WARNING"
        config.accesslog = None
        config.graceful_timeout = 0.5
        async with (
            httpx.AsyncClient(base_url=self.upstream, timeout=None, trust_env=False) as client,
            trio.open_nursery() as nursery,
        ):
            binds: list[str] = await nursery.start(
                partial(
                    hypercorn.trio.serve,
                    cast("Any", partial(self._app, client)),
                    config,
                    mode="asgi",
                )
            )
            self.url = binds[0]
            task_status.started(self.url)

    async def _app(
        self, client: httpx.AsyncClient, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await serve_lifespan(receive, send)
            return
        body = await read_body(receive)
        if body is None:
            return
        path = scope["path"]
        query = scope.get("query_string", b"").decode()
        target = f"{path}?{query}" if query else path
        sent = body
        if scope["method"] == "POST":
            self.bodies.append((target, sent))
            if self.shorten:
                sent = _shorten(path, sent)
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k.lower() not in _HOP and k.lower() != b"host"
        ]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope)
            request = client.build_request(scope["method"], target, content=sent, headers=headers)
            response = await client.send(request, stream=True)
            try:
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status_code,
                        "headers": [
                            (k.encode("latin-1"), v.encode("latin-1"))
                            for k, v in response.headers.items()
                            if k.lower().encode() not in _HOP
                        ],
                    }
                )
                async for data in response.aiter_raw():
                    if b"_delta" in data or b'"delta"' in data:
                        self.first_token.set()
                    if self.shorten:
                        for capped, stopped in _CAP_AS_STOP:
                            data = data.replace(capped, stopped)
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                await response.aclose()
            nursery.cancel_scope.cancel()


async def _watch_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


def _shorten(path: str, body: bytes) -> bytes:
    """Greedy decoding, stopped at the first sentence or token cap: short, the same every run."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    if not isinstance(doc, dict):
        return body
    doc["temperature"] = 0
    doc["max_tokens"] = SHORT_ANSWER_TOKENS
    if path.startswith("/v1/messages"):
        doc["stop_sequences"] = list(_STOPS)
    elif path.startswith("/v1/chat/completions"):
        doc["stop"] = list(_STOPS)
        doc.pop("max_completion_tokens", None)
    return json.dumps(doc).encode()
