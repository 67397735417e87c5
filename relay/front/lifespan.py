"""The app's ASGI lifespan (startup before the first connection, shutdown after the last).

The builtin front runs it itself, as the ASGI spec's lifespan protocol
describes, instead of borrowing Hypercorn's internal runner: the Quart-Trio
app opens its background nursery here, and the lifespan ``state`` dict is the
one every request scope gets a copy of.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    from relay.asgi import Asgi

__all__ = ["Lifespan", "LifespanFailed"]

log = logging.getLogger("relay.front")


class LifespanFailed(Exception):
    """The app answered ``lifespan.startup.failed``."""


class Lifespan:
    """One app's lifespan: `run` in a nursery, `wait_started`, later `shut_down`.

    An app that does not speak the lifespan protocol (raises at once) is
    served without it, as Hypercorn does.
    """

    def __init__(self, app: Asgi, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self._started = trio.Event()
        self._stop = trio.Event()
        self._stopped = trio.Event()
        self._failure: str | None = None
        self._asked = 0

    async def run(self) -> None:
        """The app's lifespan call; returns when the app finishes it."""
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self._receive, self._send)
        except Exception:
            if not self._started.is_set():
                log.warning("the app has no ASGI lifespan; serving without it", exc_info=True)
            else:
                raise
        finally:
            self._started.set()
            self._stopped.set()

    async def wait_started(self) -> None:
        """Wait for the app's startup to finish.

        Raises:
            LifespanFailed: The app said its startup failed.
        """
        await self._started.wait()
        if self._failure is not None:
            raise LifespanFailed(self._failure)

    async def shut_down(self) -> None:
        """Ask the app to shut down and wait until it has."""
        self._stop.set()
        await self._stopped.wait()

    async def _receive(self) -> dict[str, Any]:
        self._asked += 1
        if self._asked == 1:
            return {"type": "lifespan.startup"}
        await self._stop.wait()
        return {"type": "lifespan.shutdown"}

    async def _send(self, message: MutableMapping[str, Any]) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._started.set()
        elif kind == "lifespan.startup.failed":
            self._failure = str(message.get("message", ""))
            self._started.set()
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            self._stopped.set()
