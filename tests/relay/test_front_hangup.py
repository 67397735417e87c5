"""The hang-up watch (relay/front/hangup.py) on socket pairs: no relay, no clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from relay.front.hangup import HangupWatch


@pytest.mark.skipif(not HangupWatch.available, reason="no epoll on this platform")
async def test_hangup_watch_calls_back_once_and_never_after_unwatch(nursery) -> None:
    watch = HangupWatch()
    nursery.start_soon(watch.run)
    calls: list[str] = []
    pairs = [trio.socket.socketpair() for _ in range(3)]
    (kept, kept_peer), (left, left_peer), (unwatched, unwatched_peer) = pairs
    watch.watch(kept.fileno(), lambda: calls.append("kept"))
    watch.watch(left.fileno(), lambda: calls.append("left"))
    stop = watch.watch(unwatched.fileno(), lambda: calls.append("unwatched"))
    stop()
    await kept_peer.send(b"bytes are not a hang-up")
    left_peer.close()
    unwatched_peer.close()
    await trio.testing.wait_all_tasks_blocked(cushion=0.01)
    assert calls == ["left"]
    for sock in (kept, kept_peer, left, unwatched):
        sock.close()
    nursery.cancel_scope.cancel()
    assert len(watch) == 1  # "kept" is still watched; "left" went with its call


@pytest.mark.skipif(not HangupWatch.available, reason="no epoll on this platform")
async def test_a_reset_is_a_hang_up(nursery) -> None:
    watch = HangupWatch()
    nursery.start_soon(watch.run)
    ours, theirs = trio.socket.socketpair()
    called = trio.Event()
    watch.watch(ours.fileno(), called.set)
    theirs.close()
    with trio.fail_after(5):
        await called.wait()
    assert len(watch) == 0
    ours.close()
    nursery.cancel_scope.cancel()
