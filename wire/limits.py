"""Limits, intervals and the header allowlist that relay and agent agree on.

Values come from spec/wire-protocol.md; the daemons use them as defaults for
their configuration and never hard-code their own copies.
"""

from collections.abc import Iterable

__all__ = [
    "AGENT_RELAY_SILENCE_SECS",
    "CANCEL_GRACE_SECS",
    "CAPABILITY_CACHE_TOKENS",
    "CAPABILITY_DRAIN",
    "CAPABILITY_FLEET",
    "DEFAULT_HEARTBEAT_INTERVAL_SECS",
    "DEFAULT_HEARTBEAT_TIMEOUT_SECS",
    "DEFAULT_MAX_RECEIVE_FRAME_BYTES",
    "FORWARDED_HEADERS",
    "MAX_MODELS_PER_WORKER",
    "MAX_SEND_FRAME_BYTES",
    "REFUSED_BACKEND_DOWN",
    "REFUSED_FLEET_BUSY",
    "REFUSED_HEADER",
    "filter_headers",
]

MAX_SEND_FRAME_BYTES = 16 * 1024 * 1024
"""Largest frame we send: upstream peers refuse anything bigger."""

DEFAULT_MAX_RECEIVE_FRAME_BYTES = 64 * 1024 * 1024
"""Default bound on one received frame (`--max-frame-bytes`)."""

DEFAULT_HEARTBEAT_INTERVAL_SECS = 15.0
"""How often the relay pings a worker."""

DEFAULT_HEARTBEAT_TIMEOUT_SECS = 45.0
"""A worker silent for this long (no frame of any kind) is gone."""

AGENT_RELAY_SILENCE_SECS = 90.0
"""The agent considers the relay gone after this long without any frame from it."""

CANCEL_GRACE_SECS = 5.0
"""After a `cancel`, the relay frees the slot when `response_complete` arrives or after this."""

MAX_MODELS_PER_WORKER = 256
"""The relay keeps at most this many models per worker (and warns about the rest)."""

FORWARDED_HEADERS: frozenset[str] = frozenset(
    {
        "content-type",
        "accept",
        "authorization",
        "openai-organization",
        "openai-beta",
        "x-api-key",
        "anthropic-version",
        "anthropic-beta",
    }
)
"""Request headers a backend needs; nothing else crosses the relay (lower-case names)."""

CAPABILITY_DRAIN = "drain"

CAPABILITY_CACHE_TOKENS = "cache_tokens"
"""Our optional extension: `TokenCounts` may carry ``cache_read_tokens`` and
``cache_creation_tokens``. Announced and echoed like `CAPABILITY_DRAIN`; an
agent sends the two counts only to a relay that echoed it."""

# Header on a `response_complete` 503 by which our agent says "I refuse this
# request" (busy or draining) rather than relaying its backend's own 503; our
# relay then requeues the request instead of answering the client with it.
REFUSED_HEADER = "x-modelrelay-refused"
REFUSED_BACKEND_DOWN = "backend_unavailable"
"""The refusal code of a request refused because the worker's backend did not
answer a connect (nothing ran): the relay requeues it and counts the failure."""
"""Our optional extension.

The agent lists it in `Register.capabilities`; the relay echoes it in
`RegisterAck.capabilities`; only then may `ModelsUpdate` carry `draining=True`.
"""

# Our optional extension for an agent connected to several relays at once,
# with one concurrency budget across them. The agent lists it in
# `Register.capabilities`; only when the relay echoes it does the agent
# refuse with REFUSED_FLEET_BUSY (rather than `worker_busy`) and send an
# unsolicited `pong` carrying its real load when room comes back.
CAPABILITY_FLEET = "fleet"

REFUSED_FLEET_BUSY = "fleet_busy"
"""The refusal code meaning "my budget is taken by other relays' work".

Not a fault: the relay requeues the request without counting it against the
requeue cap and without lowering the worker's capacity, and routes nothing
more to that worker until it hears of room (a completion there, or a `pong`
whose `current_load` is below the capacity)."""


def filter_headers(
    headers: Iterable[tuple[str, str]], drop: frozenset[str] = frozenset()
) -> dict[str, str]:
    """Keep only the headers a backend needs.

    Names are lower-cased. A name that occurs more than once (in any case) has
    its values joined with ``", "`` in arrival order, which HTTP defines as
    equivalent to the repeated header (RFC 9110, section 5.3).

    Args:
        headers: Header name/value pairs, e.g. ``request.headers.items()``.
        drop: Further names to refuse on top of the allowlist (any case), e.g.
            the header that carries the relay's own client credential.

    Returns:
        A new dict from lower-case name to value, holding only names in
        `FORWARDED_HEADERS` and not in `drop`.
    """
    allowed = FORWARDED_HEADERS - {name.lower() for name in drop} if drop else FORWARDED_HEADERS
    kept: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key not in allowed:
            continue
        if key in kept:
            kept[key] = f"{kept[key]}, {value}"
        else:
            kept[key] = value
    return kept
