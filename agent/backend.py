"""The local LLM server, seen through an HTTP/1.1 pool for POSTs and httpx for the rest.

This module knows HTTP and nothing of WebSockets or the wire protocol. The
relayed POSTs (the hot path) to an ``http://`` backend go through
`agent.httppool.HttpPool`: keep-alive HTTP/1.1 on trio sockets, at a fraction
of httpx's CPU per request. ``https://`` backends, and the rare GETs of model
discovery, go through httpx (`httpx.AsyncClient`), whose exceptions are
translated into `agent.errors.BackendError` subclasses at this boundary; the
pool raises those itself. Either way, cancelling a call from any enclosing
scope closes its connection, so the backend sees the client leave and stops
generating.
"""

import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Protocol

import attrs
import httpx

from agent.config import AgentConfig, BackendDialect, redact_url
from agent.errors import BackendBroken, BackendError, BackendTimeout, BackendUnreachable
from agent.httppool import HttpPool, kept_response_headers

__all__ = ["SHARD_CONNECTIONS", "Backend", "BackendResponse", "open_backend", "response_headers"]

# httpcore 1.0.9's pool does O(connections²) bookkeeping on every request
# start and end (encode/httpcore#1035): with 2,000 streams on one client the
# agent spends minutes at 100 % CPU when they end together. The HttpPool
# does not have this problem; for an https:// backend, requests are spread
# round-robin over one httpx client per this many connections, so each
# httpcore pool stays small.
SHARD_CONNECTIONS = 32


def response_headers(headers: httpx.Headers) -> dict[str, str]:
    """The backend's response headers worth passing to the client, lower-case.

    Repeated headers are joined with ``", "``.

    Args:
        headers: The backend response's headers.

    Returns:
        Everything but hop-by-hop, length and encoding headers.
    """
    return kept_response_headers(headers.multi_items())


def _translate(exc: Exception, url: str) -> BackendError:
    url = redact_url(url)  # error messages reach clients: never a credential
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol)):
        return BackendUnreachable(f"cannot connect to the backend: {_describe(exc)}", url)
    if isinstance(exc, httpx.TimeoutException):
        return BackendTimeout(f"the backend timed out: {_describe(exc)}", url)
    if isinstance(exc, httpx.InvalidURL):
        return BackendBroken(f"invalid backend URL: {exc}", url)
    return BackendBroken(f"the backend broke the connection: {_describe(exc)}", url)


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class BackendResponse(Protocol):
    """One open backend response, its body still unread, whichever client fetched it.

    Attributes:
        status_code: The backend's HTTP status.
        headers: Response headers to pass on: lower-case, repeats joined with
            ``", "``, without hop-by-hop, length and encoding headers.
        url: The URL called.
    """

    status_code: int
    headers: dict[str, str]
    url: str

    @property
    def is_success(self) -> bool:
        """A 2xx status."""
        ...

    def iter_bytes(self) -> AsyncIterator[bytes]:
        """Yield the body as the backend delivers it, one read at a time.

        Raises:
            BackendError: The connection broke or timed out midway.
        """
        ...

    async def read(self) -> bytes:
        """Read the whole body.

        Raises:
            BackendError: The connection broke or timed out midway.
        """
        ...


@attrs.define(eq=False)
class _HttpxResponse:
    """Owns one httpx response; its body is read through the error-mapping methods."""

    status_code: int
    headers: dict[str, str]
    url: str
    _response: httpx.Response

    @property
    def is_success(self) -> bool:
        """A 2xx status."""
        return 200 <= self.status_code < 300

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """Yield the body as the backend delivers it, one HTTP chunk at a time (decompressed).

        Raises:
            BackendError: The connection broke or timed out midway.
        """
        try:
            async for data in self._response.aiter_bytes():
                yield data
        except httpx.HTTPError as exc:
            raise _translate(exc, self.url) from exc

    async def read(self) -> bytes:
        """Read the whole body.

        Raises:
            BackendError: The connection broke or timed out midway.
        """
        try:
            return await self._response.aread()
        except httpx.HTTPError as exc:
            raise _translate(exc, self.url) from exc


@attrs.define(eq=False)
class Backend:
    """Owns the agent's HTTP clients to its backend, and what it learned of its dialect.

    Attributes:
        base_url: The backend's base URL, without trailing slash.
        api_key: Bearer credential for the backend, if configured.
        dialect: How `/v1/messages` reaches the backend: ``--backend-dialect``,
            and with ``auto`` what the first `/v1/messages` answer taught
            (agent/jobs.py sets it once; it holds for the agent's lifetime).
    """

    base_url: str
    api_key: str | None = attrs.field(repr=False)
    # httpx: every GET, and the POSTs when there is no pool (https://).
    _clients: Sequence[httpx.AsyncClient]
    # The POSTs to an http:// backend.
    _pool: HttpPool | None
    dialect: BackendDialect = BackendDialect.AUTO
    _posts: int = 0

    def url(self, path: str) -> str:
        """The full URL of `path` on the backend."""
        return self.base_url + path

    def post(
        self, path: str, body: bytes, headers: Mapping[str, str]
    ) -> AbstractAsyncContextManager[BackendResponse]:
        """POST `body` to `path`; the context yields the response with its body still unread.

        The agent's credential replaces any ``authorization`` in `headers`.

        Args:
            path: Absolute path, e.g. ``/v1/chat/completions``.
            body: Request body, sent as is.
            headers: Request headers (already filtered by the caller).

        Returns:
            An async context manager yielding the open response; leaving it
            closes the response (or, when its body was read to the end,
            returns its connection to the pool). It raises `BackendError`
            when the backend could not be reached or broke the exchange.
        """
        url = self.url(path)
        sent = dict(headers)
        if self.api_key:
            sent["authorization"] = f"Bearer {self.api_key}"
        if self._pool is not None:
            # The pool's own context, not one wrapped in another (once per request).
            return self._pool.post(path, body, sent, url=url)
        return self._post_httpx(url, body, sent)

    @asynccontextmanager
    async def _post_httpx(
        self, url: str, body: bytes, sent: dict[str, str]
    ) -> AsyncIterator[BackendResponse]:
        try:
            self._posts += 1
            client = self._clients[self._posts % len(self._clients)]
            async with client.stream("POST", url, content=body, headers=sent) as streamed:
                yield _HttpxResponse(
                    streamed.status_code, response_headers(streamed.headers), url, streamed
                )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise _translate(exc, url) from exc

    async def get(self, path: str) -> tuple[int, bytes]:
        """GET `path` and read the whole answer (used by model discovery).

        Args:
            path: Absolute path, e.g. ``/v1/models``.

        Returns:
            The status and the body.

        Raises:
            BackendError: The backend could not be reached or broke the exchange.
        """
        url = self.url(path)
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            response = await self._clients[0].get(url, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise _translate(exc, url) from exc
        return response.status_code, response.content


@asynccontextmanager
async def open_backend(
    config: AgentConfig,
    *,
    httpx_transport: Callable[[], httpx.AsyncBaseTransport] | None = None,
) -> AsyncIterator[Backend]:
    """Open the agent's HTTP clients to its backend for the whole run.

    An ``http://`` backend gets an `HttpPool` for the POSTs, keeping as many
    idle connections as `--max-concurrency` (plus room for discovery) can
    use at once, and one small httpx client for discovery's GETs. An
    ``https://`` backend gets httpx for everything: each client's pool is
    sized from `--max-concurrency` (httpx's default of 100 connections would
    silently queue requests above that), so a request never waits inside
    httpx whichever client it lands on, with one client per
    `SHARD_CONNECTIONS` of that, to keep each pool's bookkeeping small. Only
    the connect phase has a timeout: the relay owns request deadlines and
    cancels what runs too long.

    Proxy variables from the environment are ignored (``trust_env=False``):
    the backend is the box's own server, and a proxy meant for the internet
    would break it.

    Args:
        config: The agent's configuration.
        httpx_transport: Makes the transport (connection layer) of each httpx
            client, in place of httpx's own: for tests that must answer in
            memory (virtual time, reads split at chosen bytes) or see which
            client carried a request. Called once per client, because each
            shard exists to own its connection pool. The pool limits above
            are then the transport's business; the `HttpPool` of an
            ``http://`` backend is unaffected and still carries its POSTs.

    Yields:
        The backend.
    """
    size = config.max_concurrency + 8
    connect = config.timeouts.backend_connect_secs
    pool = None
    if config.backend_url.startswith("http://"):
        pool = HttpPool.for_url(config.backend_url, connect_timeout=connect, max_idle=size)
        # Discovery only: one GET at a time.
        size, shards = 2, 1
    else:
        shards = math.ceil(size / SHARD_CONNECTIONS)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
                    timeout=httpx.Timeout(None, connect=connect),
                    trust_env=False,
                    follow_redirects=False,
                    transport=None if httpx_transport is None else httpx_transport(),
                )
            )
            for _ in range(shards)
        ]
        if pool is not None:
            stack.callback(pool.close)
        yield Backend(
            config.backend_url,
            config.backend_api_key,
            clients,
            pool,
            dialect=config.backend_dialect,
        )
