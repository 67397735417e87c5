"""The requests the relay is answering right now, by id.

Shutdown uses it to wait for in-flight work (an `Event`, not a loop) and, once
the drain deadline passes, to cancel what is left with the right reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import trio

if TYPE_CHECKING:
    import wire

__all__ = ["InFlight", "Tracked"]


@attrs.define(eq=False)
class Tracked:
    """What shutdown needs of one request: its scope and why it was cancelled."""

    request_id: str
    scope: trio.CancelScope
    reason: wire.CancelReason | wire.OtherReason | None = None

    def cancel(self, reason: wire.CancelReason | wire.OtherReason) -> None:
        if self.reason is None:
            self.reason = reason
        self.scope.cancel()


@attrs.define(eq=False)
class InFlight:
    active: dict[str, Tracked] = attrs.field(factory=dict)
    _idle: trio.Event | None = None

    def __len__(self) -> int:
        return len(self.active)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self.active

    def add(self, tracked: Tracked) -> None:
        self.active[tracked.request_id] = tracked

    def remove(self, tracked: Tracked) -> None:
        if self.active.get(tracked.request_id) is tracked:
            del self.active[tracked.request_id]
        if not self.active and self._idle is not None:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no request is in flight."""
        if self.active:
            self._idle = trio.Event()
            await self._idle.wait()

    def cancel_all(self, reason: wire.CancelReason | wire.OtherReason) -> None:
        for tracked in list(self.active.values()):
            tracked.cancel(reason)
