"""Anthropic's Messages API served by a backend that speaks only OpenAI chat: an `Exchange`.

The pure translation (bodies, events, errors, the token estimate) lives in
agent/translate.py; this module runs it against the backend:

- ``/v1/messages`` is sent to ``/v1/chat/completions`` translated, and the
  answer comes back translated: a stream event by event as each backend read
  arrives (`translate.ChatStreamTranslator`), a whole answer at once (also
  when the client asked for a stream and the backend ignored ``stream``);
- ``/v1/messages/count_tokens`` is answered with an estimate (4 characters a
  token) that says so in a header;
- any other route is not Anthropic's and is passed through as it is.
"""

import json
from collections.abc import Mapping
from typing import Any

import attrs

from agent import translate
from agent.backend import Backend, BackendResponse
from agent.config import redact_url
from agent.dialects import json_headers
from agent.errors import BackendError
from agent.exchange import PassThrough, Reply, route_of
from wire import Request, TokenCounts

__all__ = ["CHAT", "COUNT_TOKENS", "MESSAGES", "AnthropicOverOpenAI"]

MESSAGES = "/v1/messages"
COUNT_TOKENS = "/v1/messages/count_tokens"
CHAT = "/v1/chat/completions"

# A non-streaming OpenAI answer is read whole to be translated: at most this
# much of it (LLM answers are a few KiB; this only bounds a broken backend).
_MAX_TRANSLATED_BODY = 64 * 1024 * 1024
_U32_MAX = 2**32 - 1


@attrs.frozen
class AnthropicOverOpenAI:
    """Answers Anthropic requests through a backend's OpenAI chat route.

    Attributes:
        backend: The backend client.
    """

    backend: Backend

    async def answer(self, request: Request, headers: dict[str, str], reply: Reply) -> None:
        """Run `request` translated (or estimated, or passed through; see the module)."""
        route = route_of(request)
        if route == MESSAGES:
            await self._messages(request, headers, reply)
        elif route == COUNT_TOKENS:
            await self.estimate_tokens(request, reply)
        else:
            await PassThrough(self.backend).answer(request, headers, reply)

    async def estimate_tokens(self, request: Request, reply: Reply) -> None:
        """Answer `count_tokens` for a backend that cannot: 4 characters a token, and say so."""
        try:
            body = _parse_anthropic(request)
        except translate.TranslationError as exc:
            await reply.fail(400, "invalid_request", f"Invalid request: {exc}.")
            return
        reply.notes["token_estimate"] = translate.TOKEN_ESTIMATE_METHOD
        headers = json_headers()
        headers[translate.TOKEN_ESTIMATE_HEADER] = translate.TOKEN_ESTIMATE_METHOD
        estimate = translate.estimate_input_tokens(body)
        await reply.complete(200, headers, body=json.dumps({"input_tokens": estimate}))

    async def _messages(self, request: Request, headers: dict[str, str], reply: Reply) -> None:
        """Run an Anthropic `/v1/messages` request as OpenAI chat; translate the answer back."""
        reply.notes["translated"] = "openai-chat"
        try:
            anthropic = _parse_anthropic(request)
            chat = translate.request_to_chat(anthropic)
        except translate.TranslationError as exc:
            await reply.fail(400, "invalid_request", f"Invalid request: {exc}.")
            return
        # The relay decided streaming from the same body; its word is the one
        # the client's response follows.
        if request.is_streaming:
            chat["stream"] = True
            chat["stream_options"] = {"include_usage": True}
        else:
            chat.pop("stream", None)
            chat.pop("stream_options", None)
        model = anthropic.get("model")
        model = model if isinstance(model, str) else request.model
        stops = anthropic.get("stop_sequences")
        stops = [s for s in stops if isinstance(s, str)] if isinstance(stops, list) else []
        # Anthropic's version and beta headers mean nothing to an OpenAI server.
        sent = {k: v for k, v in headers.items() if not k.startswith("anthropic-")}
        sent["content-type"] = "application/json"
        body = json.dumps(chat, ensure_ascii=False).encode("utf-8")
        async with self.backend.post(CHAT, body, sent) as response:
            reply.backend_status = response.status_code
            if not response.is_success:
                raw = await _read_capped(response, reply, _MAX_TRANSLATED_BODY)
                await reply.whole(
                    response.status_code,
                    json_headers(),
                    translate.error_to_anthropic(response.status_code, raw or b""),
                )
                return
            streamed = response.headers.get("content-type", "").startswith("text/event-stream")
            if request.is_streaming and streamed:
                await _stream_translated(response, reply, model, stops)
                return
            # Not streaming, or a server that answered a stream request with
            # one JSON body (it ignored `stream`): translate it whole.
            raw = await _read_capped(response, reply, _MAX_TRANSLATED_BODY)
            headers_out = dict(response.headers)
        message, counts = self._translate_whole(raw, model, stops)
        if request.is_streaming:
            # The client waits for events: the whole answer as one stream.
            headers_out["content-type"] = "text/event-stream"
            await reply.chunk(translate.message_to_sse(message))
            await reply.complete(200, headers_out, counts=counts)
            return
        headers_out["content-type"] = "application/json"
        await reply.whole(200, headers_out, json.dumps(message, ensure_ascii=False), counts)

    def _translate_whole(
        self, raw: bytes | None, model: str, stops: list[str]
    ) -> tuple[dict[str, Any], TokenCounts | None]:
        """An OpenAI chat completion as an Anthropic message, and its usage.

        Raises:
            BackendError: The answer is too large, or not a chat completion.
        """
        url = redact_url(self.backend.url(CHAT))
        if raw is None:
            raise BackendError(
                f"the backend's answer is larger than {_MAX_TRANSLATED_BODY // (1024 * 1024)} "
                "MiB and cannot be translated",
                url,
                public=True,
            )
        try:
            parsed = json.loads(raw)
            if not isinstance(parsed, Mapping):
                raise translate.TranslationError("the answer is not a JSON object")
            message = translate.chat_to_message(parsed, model=model, stop_sequences=stops)
        except (ValueError, RecursionError) as exc:
            raise BackendError(
                f"the backend's chat completion could not be translated ({exc})", url, public=True
            ) from None
        usage = parsed.get("usage")
        prompt = completion = None
        if isinstance(usage, Mapping):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        counts = _token_counts(
            prompt if isinstance(prompt, int) else None,
            completion if isinstance(completion, int) else None,
        )
        return message, counts


async def _stream_translated(
    response: BackendResponse, reply: Reply, model: str, stops: list[str]
) -> None:
    """Translate an OpenAI chat stream into Anthropic events as each backend read arrives."""
    translator = translate.ChatStreamTranslator(model=model, stop_sequences=stops)
    async for data in response.iter_bytes():
        reply.bytes_in += len(data)
        await reply.chunk(translator.feed(data))
    await reply.chunk(translator.close())
    headers = dict(response.headers)
    headers["content-type"] = "text/event-stream"
    counts = _token_counts(translator.input_tokens, translator.output_tokens)
    await reply.complete(response.status_code, headers, counts=counts)


def _parse_anthropic(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(request.body)
    except (ValueError, RecursionError):
        raise translate.TranslationError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise translate.TranslationError("the request body must be a JSON object")
    return body


def _token_counts(prompt: int | None, completion: int | None) -> TokenCounts | None:
    """Usage as the wire carries it: counts out of a u32's range are dropped, not wrapped."""
    prompt = prompt if prompt is not None and 0 <= prompt <= _U32_MAX else None
    completion = completion if completion is not None and 0 <= completion <= _U32_MAX else None
    if prompt is None and completion is None:
        return None
    total = (
        min(prompt + completion, _U32_MAX)
        if prompt is not None and completion is not None
        else None
    )
    return TokenCounts(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


async def _read_capped(response: BackendResponse, reply: Reply, limit: int) -> bytes | None:
    """The whole body, or None (and the rest left unread) once it passes `limit` bytes."""
    buffered = bytearray()
    async for data in response.iter_bytes():
        reply.bytes_in += len(data)
        buffered += data
        if len(buffered) > limit:
            return None
    return bytes(buffered)
