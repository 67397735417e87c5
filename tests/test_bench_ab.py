"""scripts/bench/ab.py's bookkeeping: the ABBA order and the paired differences."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts" / "bench"))

import ab  # the bench scripts are not a package: imported from their folder

LABEL = "relay CPU per request (ms)"


def test_each_side_goes_first_as_often_as_second() -> None:
    runs = ab.order(4)
    assert runs == ["relay1", "relay1base", "relay1base", "relay1"] * 2
    pairs = list(zip(runs[::2], runs[1::2], strict=True))
    assert all(set(pair) == {"relay1", "relay1base"} for pair in pairs)
    assert [pair[0] for pair in pairs].count("relay1") == len(pairs) // 2


def test_paired_difference_compares_neighbours_not_medians() -> None:
    # The machine slows down 2x halfway: the medians differ by a third, each pair by +10 %.
    sequence = [
        ("relay1", {LABEL: 1.1}),
        ("relay1base", {LABEL: 1.0}),
        ("relay1base", {LABEL: 2.0}),
        ("relay1", {LABEL: 2.2}),
    ]
    assert ab.paired(sequence, LABEL) == pytest.approx(0.1)
    table = ab.render("old", [(name, dict.fromkeys(ab.LABELS, v[LABEL])) for name, v in sequence])
    assert "+10.0 %" in table
