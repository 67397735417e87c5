"""The ASGI types the relay's modules share (the spec's names, as type aliases).

The relay speaks raw ASGI on its hot path (the proxy, the worker socket, the
builtin front), so these are plain mappings and callables, not Quart's
TypedDicts.
"""

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["Asgi", "Message", "Receive", "Scope", "Send"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]
