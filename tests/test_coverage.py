"""Coverage against a set-of-ints model: random adds, queries after each step, several sessions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.logger.coverage import Coverage

SESSIONS = ("a", "b")
ranges = st.tuples(st.sampled_from(SESSIONS), st.integers(0, 200), st.integers(0, 30))


def runs(seqs: set[int]) -> list[tuple[int, int]]:
    """The model's maximal runs as half-open ranges."""
    out: list[tuple[int, int]] = []
    for s in sorted(seqs):
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], s + 1)
        else:
            out.append((s, s + 1))
    return out


def expand(parts: list[tuple[int, int]]) -> list[int]:
    return [s for start, stop in parts for s in range(start, stop)]


def check(coverage: Coverage, model: dict[str, set[int]], probe: tuple[str, int, int], up_to: int) -> None:
    for session in SESSIONS:
        seqs = model[session]
        assert coverage.intervals(session) == runs(seqs)
        assert coverage.last(session) == (max(seqs) if seqs else None)
        lowest = min(seqs) if seqs else up_to
        assert coverage.missing(session, up_to) == runs(set(range(lowest, up_to)) - seqs)
    session, first, n = probe
    parts = coverage.new_part(session, first, n)
    assert parts == runs(set(range(first, first + n)) - model[session])
    assert all(start < stop for start, stop in parts)


@given(st.lists(st.tuples(ranges, ranges, st.integers(0, 260)), max_size=40))
def test_matches_set_model(steps: list[tuple[tuple[str, int, int], tuple[str, int, int], int]]) -> None:
    coverage = Coverage()
    model: dict[str, set[int]] = {session: set() for session in SESSIONS}
    for (session, first, n), probe, up_to in steps:
        coverage.add(session, first, n)
        model[session].update(range(first, first + n))
        check(coverage, model, probe, up_to)


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 30)), max_size=20), ranges, st.integers(0, 260))
def test_load_takes_inclusive_pairs(
    pairs: list[tuple[int, int]], probe: tuple[str, int, int], up_to: int
) -> None:
    coverage = Coverage()
    coverage.load("a", [(first, first + length) for first, length in pairs])
    model = {"a": {s for first, length in pairs for s in range(first, first + length + 1)}, "b": set()}
    check(coverage, model, probe, up_to)


def test_live_stream_with_a_gap_then_its_repair() -> None:
    coverage = Coverage()
    for first in range(0, 1000, 100):
        coverage.add("s", first, 100)
    coverage.add("s", 1300, 100)  # 1000 .. 1299 lost
    assert coverage.intervals("s") == [(0, 1000), (1300, 1400)]
    assert coverage.missing("s", 1500) == [(1000, 1300), (1400, 1500)]
    assert coverage.missing("s", 1200) == [(1000, 1200)]
    # a repaired page overlapping what the live stream already wrote: only the hole is new
    assert coverage.new_part("s", 900, 600) == [(1000, 1300), (1400, 1500)]
    coverage.add("s", 900, 600)
    assert coverage.intervals("s") == [(0, 1500)]
    assert coverage.last("s") == 1499
    assert coverage.missing("s", 1500) == []


def test_unknown_session_and_empty_ranges() -> None:
    coverage = Coverage()
    assert coverage.intervals("x") == []
    assert coverage.last("x") is None
    assert coverage.missing("x", 100) == []
    assert coverage.new_part("x", 5, 3) == [(5, 8)]
    coverage.add("x", 5, 0)
    assert coverage.intervals("x") == []
    assert coverage.new_part("x", 5, 0) == []


def test_rejects_negative_numbers() -> None:
    coverage = Coverage()
    with pytest.raises(ValueError, match="first=-1"):
        coverage.add("s", -1, 3)
    with pytest.raises(ValueError, match="n=-3"):
        coverage.new_part("s", 1, -3)
    with pytest.raises(ValueError, match="below first_seq"):
        coverage.load("s", [(10, 9)])
