"""The app's ASGI lifespan as the builtin front runs it (relay/front/lifespan.py), in memory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from relay.front.lifespan import Lifespan, LifespanFailed

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
    Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class _App:
    def __init__(self, fail_startup: bool = False) -> None:
        self.fail_startup = fail_startup
        self.seen: list[str] = []
        self.state: MutableMapping[str, Any] | None = None

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        self.state = scope["state"]
        while True:
            message = await receive()
            self.seen.append(message["type"])
            if message["type"] == "lifespan.startup":
                if self.fail_startup:
                    await send({"type": "lifespan.startup.failed", "message": "no database"})
                    return
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return


async def test_startup_then_shutdown_share_the_state(nursery) -> None:
    app = _App()
    state: dict[str, Any] = {}
    lifespan = Lifespan(app, state)
    nursery.start_soon(lifespan.run)
    await lifespan.wait_started()
    assert app.seen == ["lifespan.startup"]
    assert app.state is state
    await lifespan.shut_down()
    assert app.seen == ["lifespan.startup", "lifespan.shutdown"]


async def test_a_failed_startup_is_raised_with_the_apps_message(nursery) -> None:
    lifespan = Lifespan(_App(fail_startup=True), {})
    nursery.start_soon(lifespan.run)
    with pytest.raises(LifespanFailed, match="no database"):
        await lifespan.wait_started()


async def test_an_app_without_lifespan_is_served_without_it(nursery, caplog) -> None:
    async def plain(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        raise ValueError("only http here")

    lifespan = Lifespan(plain, {})
    nursery.start_soon(lifespan.run)
    await lifespan.wait_started()
    await lifespan.shut_down()  # returns: there is nothing to wait for
    assert "no ASGI lifespan" in caplog.text
