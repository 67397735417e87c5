"""The protocol's message vocabulary as frozen attrs classes.

One class per frame ``"type"`` of spec/wire-protocol.md, with the spec's
field names and order. Optional fields default to `None`, which means
"absent on the wire" (the codec never sends ``null``). Integer fields carry
their wire width as `typing.Annotated` metadata (`U16`, `U32`, `U64`); to a
type checker they are plain `int`. These classes hold data only: all
parsing and validation lives in `wire.codec`.
"""

import enum
from typing import Annotated, TypeAlias

import attrs

__all__ = [
    "PROTOCOL_VERSION",
    "U16",
    "U32",
    "U64",
    "AgentToRelay",
    "Cancel",
    "CancelReason",
    "Error",
    "GracefulShutdown",
    "Message",
    "ModelsRefresh",
    "ModelsUpdate",
    "OtherReason",
    "Ping",
    "Pong",
    "Register",
    "RegisterAck",
    "RelayToAgent",
    "Request",
    "ResponseChunk",
    "ResponseComplete",
    "TokenCounts",
    "UInt",
]

PROTOCOL_VERSION = "2026-04-bridge-v1"
"""The protocol identifier both sides announce (`Register` / `RegisterAck`)."""


@attrs.frozen
class UInt:
    """Marks an `int` field as an unsigned integer of a fixed width on the wire.

    Attributes:
        bits: The width: 16, 32 or 64.
    """

    bits: int

    @property
    def max(self) -> int:
        """The largest value the width holds."""
        return (1 << self.bits) - 1


U16: TypeAlias = Annotated[int, UInt(16)]
U32: TypeAlias = Annotated[int, UInt(32)]
U64: TypeAlias = Annotated[int, UInt(64)]


@attrs.frozen
class TokenCounts:
    """Token usage a backend reported for one request; any count may be unknown.

    Attributes:
        prompt_tokens: Every prompt token, cached or not.
        completion_tokens: Generated tokens.
        total_tokens: Both.
        cache_read_tokens: Of the prompt, read from the backend's prompt cache
            (Anthropic's ``cache_read_input_tokens``, OpenAI's
            ``prompt_tokens_details.cached_tokens``). Our extension: only
            sent to a relay that echoed `CAPABILITY_CACHE_TOKENS`.
        cache_creation_tokens: Of the prompt, written to the cache
            (``cache_creation_input_tokens``); the same extension.
    """

    prompt_tokens: U32 | None = None
    completion_tokens: U32 | None = None
    total_tokens: U32 | None = None
    cache_read_tokens: U32 | None = None
    cache_creation_tokens: U32 | None = None


class CancelReason(enum.StrEnum):
    """The reasons upstream names for a `Cancel`; anything else is an `OtherReason`."""

    CLIENT_DISCONNECT = "client_disconnect"
    TIMEOUT = "timeout"
    GRACEFUL_SHUTDOWN = "graceful_shutdown"
    WORKER_DISCONNECT = "worker_disconnect"
    REQUEUE_EXHAUSTED = "requeue_exhausted"
    SERVER_SHUTDOWN = "server_shutdown"


@attrs.frozen
class OtherReason:
    """A free-text cancel reason, sent as ``{"other": "<text>"}``.

    Never send a bare string that is not a `CancelReason`: an upstream agent
    drops its whole session on one.
    """

    text: str


# --- agent -> relay -------------------------------------------------------


@attrs.frozen
class Register:
    """The agent's first frame: who it is, what it serves and how much at once.

    Attributes:
        worker_name: Display name; the relay assigns the id.
        models: Model names as the backend reports them (the relay sanitises).
        max_concurrent: Requests the agent runs at once (0 counts as 1).
        protocol_version: `PROTOCOL_VERSION`; our agent always sends it.
        current_load: Requests in flight at registration (after a reconnect).
        capabilities: Optional extensions the agent speaks, e.g. `CAPABILITY_DRAIN`.
    """

    worker_name: str
    models: tuple[str, ...]
    max_concurrent: U32
    protocol_version: str | None = None
    current_load: U32 | None = None
    capabilities: tuple[str, ...] | None = None


@attrs.frozen
class ModelsUpdate:
    """The agent's new model list and load; also the answer to `ModelsRefresh`.

    Attributes:
        models: The full new list (not a delta).
        current_load: Requests in flight now.
        draining: The agent takes no new work; only sent to a relay that
            echoed `CAPABILITY_DRAIN`.
    """

    models: tuple[str, ...]
    current_load: U32
    draining: bool | None = None


@attrs.frozen
class ResponseChunk:
    """One in-order piece of a response body, already SSE-framed text."""

    request_id: str
    chunk: str


@attrs.frozen
class ResponseComplete:
    """The end of one request: its status and, unless streamed, its body.

    Attributes:
        request_id: The request this ends.
        status_code: The backend's HTTP status (499 after a cancel, 502 when
            the backend is unreachable).
        headers: Response headers to pass on to the client.
        body: The whole body for a non-streaming request; absent or ``""``
            after chunks.
        token_counts: Usage, when the backend reported it.
    """

    request_id: str
    status_code: U16
    headers: dict[str, str] | None = None
    body: str | None = None
    token_counts: TokenCounts | None = None


@attrs.frozen
class Pong:
    """The heartbeat answer, carrying the agent's load and the ping's timestamp."""

    current_load: U32
    timestamp_unix_ms: U64 | None = None


@attrs.frozen
class Error:
    """A session-level error report; defined, but our agents never send it."""

    code: str
    message: str
    request_id: str | None = None


# --- relay -> agent -------------------------------------------------------


@attrs.frozen
class RegisterAck:
    """The relay's acceptance of a `Register`: the worker's id and routable models.

    Attributes:
        worker_id: Opaque id the relay assigned.
        models: The sanitised list; the worker is routed exactly these.
        warnings: Free text about anything dropped, for display.
        protocol_version: Echo of the agent's version (absent if it sent none).
        capabilities: The agent's extensions the relay also speaks.
    """

    worker_id: str
    models: tuple[str, ...]
    warnings: tuple[str, ...] | None = None
    protocol_version: str | None = None
    capabilities: tuple[str, ...] | None = None


@attrs.frozen
class Request:
    """One inference request for the agent to run against its backend.

    Attributes:
        request_id: Opaque id that every answer frame carries.
        model: The model the client asked for.
        endpoint_path: The backend path, e.g. ``/v1/chat/completions``.
        is_streaming: Whether the client asked for a stream.
        body: The client's raw JSON body, untouched.
        headers: Client headers (filter them again with `filter_headers`).
    """

    request_id: str
    model: str
    endpoint_path: str
    is_streaming: bool
    body: str
    headers: dict[str, str] | None = None


@attrs.frozen
class Cancel:
    """Stop one request; the agent answers with one `ResponseComplete` (499)."""

    request_id: str
    reason: CancelReason | OtherReason


@attrs.frozen
class Ping:
    """A heartbeat probe; the `Pong` echoes its timestamp."""

    timestamp_unix_ms: U64 | None = None


@attrs.frozen
class GracefulShutdown:
    """Take no new work, finish what is in flight, then disconnect."""

    reason: str | None = None
    drain_timeout_secs: U64 | None = None


@attrs.frozen
class ModelsRefresh:
    """Ask the agent to re-read its backend's models and send `ModelsUpdate`."""

    reason: str | None = None


AgentToRelay: TypeAlias = Register | ModelsUpdate | ResponseChunk | ResponseComplete | Pong | Error
"""Every frame an agent sends (and a relay decodes)."""

RelayToAgent: TypeAlias = RegisterAck | Request | Cancel | Ping | GracefulShutdown | ModelsRefresh
"""Every frame a relay sends (and an agent decodes)."""

Message: TypeAlias = AgentToRelay | RelayToAgent
"""Any frame in either direction."""
