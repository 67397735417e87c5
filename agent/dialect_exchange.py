"""The exchange a session gives its jobs: pass-through or Anthropic-over-OpenAI, per request.

``--backend-dialect`` says what the backend speaks, and this module alone
reads it:

- ``anthropic``: everything passes through (a backend that lacks
  ``/v1/messages/count_tokens`` still gets its requests answered by an
  estimate);
- ``openai``: Anthropic requests are translated (`AnthropicOverOpenAI`);
- ``auto``: the first ``/v1/messages`` request goes as it is. A 404, 405 or
  501 answer means the backend lacks the route: the backend is remembered as
  ``openai`` for the agent's lifetime and that same request goes again,
  translated. Any other answer means ``anthropic``.

What was learned lives on the `Backend` (shared by every session), so it
outlives a relay connection.
"""

import logging

import attrs

from agent.anthropic_over_openai import COUNT_TOKENS, MESSAGES, AnthropicOverOpenAI
from agent.backend import Backend
from agent.config import BackendDialect, redact_url
from agent.exchange import NO_ROUTE, PassThrough, Reply, route_of
from wire import Request

__all__ = ["DialectExchange"]

log = logging.getLogger(__name__)


@attrs.frozen
class DialectExchange:
    """Chooses, per request, the exchange the backend's dialect calls for; learns ``auto``.

    Attributes:
        backend: The backend client; its `dialect` is read and, in ``auto``, set.
        passthrough: Requests as they are.
        translated: Anthropic requests over OpenAI chat.
    """

    backend: Backend
    passthrough: PassThrough
    translated: AnthropicOverOpenAI

    @classmethod
    def for_backend(cls, backend: Backend) -> "DialectExchange":
        """The exchange for `backend`."""
        return cls(backend, PassThrough(backend), AnthropicOverOpenAI(backend))

    async def answer(self, request: Request, headers: dict[str, str], reply: Reply) -> None:
        """Answer `request` the way the backend's dialect calls for (see the module)."""
        route = route_of(request)
        if route != MESSAGES and route != COUNT_TOKENS:
            await self.passthrough.answer(request, headers, reply)
            return
        dialect = self.backend.dialect
        if dialect is BackendDialect.OPENAI:
            await self.translated.answer(request, headers, reply)
        elif route == COUNT_TOKENS:
            if not await self.passthrough.answer_unless_missing(request, headers, reply):
                await self.translated.estimate_tokens(request, reply)
        elif dialect is BackendDialect.AUTO:
            if not await self.passthrough.answer_unless_missing(
                request, headers, reply, on_status=self._learn
            ):
                await self.translated.answer(request, headers, reply)
        else:
            await self.passthrough.answer(request, headers, reply)

    def _learn(self, status: int) -> None:
        """Settle ``auto`` from the status of a `/v1/messages` passed through (once)."""
        backend = self.backend
        if backend.dialect is not BackendDialect.AUTO:
            return  # another request probed first
        missing = status in NO_ROUTE
        backend.dialect = BackendDialect.OPENAI if missing else BackendDialect.ANTHROPIC
        fields = {
            "backend": redact_url(backend.base_url),
            "backend_dialect": backend.dialect.value,
            "backend_status": status,
        }
        if missing:
            log.info(
                "the backend has no /v1/messages (HTTP %d): translating Anthropic requests to "
                "/v1/chat/completions from now on",
                status,
                extra=fields,
            )
        else:
            log.info("the backend serves /v1/messages itself: passing it through", extra=fields)
