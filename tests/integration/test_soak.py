"""A small chaos soak in the suite; `scripts/soak.py` runs the full one."""

from __future__ import annotations

import pytest
import trio

from tests.integration.soak import run_soak


@pytest.mark.one_front
async def test_chaos_soak_loses_nothing() -> None:
    with trio.fail_after(180):
        report = await run_soak(
            agents=3, requests=200, concurrency=32, seed=7, kill_every=(0.1, 0.3)
        )
    assert report.kills >= 1, "the soak must actually kill agents"
    assert report.lost == [], report.table()
    assert sum(report.outcomes.values()) == report.requests
    assert report.relay_logged == report.requests
    assert report.queue_depth_after == 0
    assert report.relay_in_flight_after == 0
