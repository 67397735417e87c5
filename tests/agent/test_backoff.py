"""The pure backoff policy."""

import random

import pytest

from agent.backoff import BackoffTracker, FailureKind, step_delay
from agent.config import Backoff

POLICY = Backoff()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (FailureKind.NORMAL, [1, 2, 4, 8, 16, 30, 30, 30]),
        (FailureKind.AUTH, [10, 20, 40, 60, 60, 60, 60, 60]),
    ],
)
def test_ladders_without_jitter(kind: FailureKind, expected: list[float]) -> None:
    assert [step_delay(POLICY, kind, n, 0.0) for n in range(1, 9)] == expected


def test_jitter_only_shortens() -> None:
    for attempt in range(1, 10):
        full = step_delay(POLICY, FailureKind.NORMAL, attempt, 0.0)
        shortest = step_delay(POLICY, FailureKind.NORMAL, attempt, 0.999999)
        assert full * (1 - POLICY.jitter) <= shortest <= full


def test_huge_attempt_counts_do_not_overflow() -> None:
    assert step_delay(POLICY, FailureKind.NORMAL, 100_000, 0.0) == 30


def test_tracker_counts_each_ladder_and_resets() -> None:
    tracker = BackoffTracker(Backoff(jitter=0), random.Random(1))
    assert [tracker.next_delay(FailureKind.NORMAL) for _ in range(3)] == [1, 2, 4]
    assert tracker.next_delay(FailureKind.AUTH) == 10
    assert tracker.next_delay(FailureKind.NORMAL) == 8
    assert tracker.next_delay(FailureKind.AUTH) == 20
    tracker.reset()
    assert tracker.next_delay(FailureKind.NORMAL) == 1
    assert tracker.next_delay(FailureKind.AUTH) == 10


def test_tracker_jitter_is_seeded() -> None:
    first = BackoffTracker(POLICY, random.Random(42))
    second = BackoffTracker(POLICY, random.Random(42))
    delays = [first.next_delay(FailureKind.NORMAL) for _ in range(5)]
    assert delays == [second.next_delay(FailureKind.NORMAL) for _ in range(5)]
    assert all(a != b for a, b in zip(delays, [1, 2, 4, 8, 16], strict=True))
