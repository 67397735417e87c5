"""A small chaos soak in the suite; `scripts/soak.py` runs the full one."""

from __future__ import annotations

import pytest
import trio

from tests.integration.soak import run_soak


@pytest.mark.one_front
async def test_chaos_soak_loses_nothing() -> None:
    with trio.fail_after(180):
        report = await run_soak(
            agents=3, requests=200, concurrency=32, seed=7, kill_every=(0.1, 0.3), min_kills=1
        )
    assert report.kills >= 1, "the soak must actually kill agents"
    assert report.lost == [], report.table()
    assert sum(report.outcomes.values()) == report.requests
    assert report.relay_logged == report.requests
    assert report.queue_depth_after == 0
    assert report.relay_in_flight_after == 0


async def test_backends_stopped_and_restarted_behind_live_agents_cost_under_one_percent() -> None:
    """One backend of two down at a time: nothing lost, no address leaked, >= 99 % answered."""
    with trio.fail_after(240):
        report = await run_soak(
            agents=4,
            requests=300,
            concurrency=32,
            seed=11,
            kill_every=None,
            backends=2,
            stop_every=(0.3, 0.8),
            min_stops=2,
        )
    assert report.backend_stops >= 2, "the soak must actually stop backends"
    assert report.lost == [], report.table()
    assert report.leaked_addresses == [], report.table()
    assert report.success_rate >= 0.99, report.table()
    assert report.relay_logged == report.requests
    assert report.queue_depth_after == 0
    assert report.relay_in_flight_after == 0


@pytest.mark.one_front
async def test_backends_stopped_while_agents_are_killed_lose_nothing() -> None:
    with trio.fail_after(240):
        report = await run_soak(
            agents=4,
            requests=300,
            concurrency=32,
            seed=12,
            kill_every=(0.5, 1.0),
            backends=2,
            stop_every=(0.3, 0.8),
            min_kills=1,
            min_stops=1,
        )
    assert report.kills >= 1
    assert report.backend_stops >= 1
    assert report.lost == [], report.table()
    assert report.leaked_addresses == [], report.table()
    assert report.relay_logged == report.requests
    assert report.queue_depth_after == 0
    assert report.relay_in_flight_after == 0
