"""Red-lines: persistence in samples, runs carried across batches, gaps, NaN, states, missing channels."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.actuation.core import SystemState
from services.actuation.redlines import RedlineMonitor, Trip, samples_needed
from services.actuation.valve_map import ValveMap
from services.common.settings import Settings, load_settings
from services.common.telemetry import TelemetryBatch

STAND = load_settings()
RATE = 10_000.0
ARMED, RUNNING, IDLE = SystemState.ARMED, SystemState.RUNNING, SystemState.IDLE


def batch(
    columns: dict[str, list[float]], seq: int = 0, session: str = "s1", rate_hz: float = RATE
) -> TelemetryBatch:
    n = len(next(iter(columns.values())))
    return TelemetryBatch(
        session=session,
        seq=seq,
        rate_hz=rate_hz,
        channels=tuple(columns),
        t=1000.0 + (seq + np.arange(n, dtype=np.float64)) / rate_hz,
        data=np.array([columns[c] for c in columns], dtype=np.float32).T.reshape(n, len(columns)),
    )


def monitor(*redlines: dict[str, Any]) -> RedlineMonitor:
    return RedlineMonitor(Settings.model_validate({"redlines": list(redlines)}))


def p5(values: list[float], seq: int = 0, session: str = "s1") -> TelemetryBatch:
    return batch({"P5": values}, seq, session)


def test_persistence_in_samples() -> None:
    assert samples_needed(10, 10_000) == 100
    assert samples_needed(20, 10_000) == 200
    assert samples_needed(0.3, 10_000) == 3  # 0.3 * 10 is 3.0000000000000004 in floating point
    assert samples_needed(0, 10_000) == 1
    assert samples_needed(1, 500) == 1
    assert samples_needed(3, 500) == 2


def test_the_shipped_chamber_red_line_trips_after_10_ms_above_25_bar() -> None:
    lines = RedlineMonitor(STAND)
    values = [20.0] * 10 + [26.0] * 99 + [30.0] + [20.0] * 90
    trip = lines.check(p5(values, seq=5000), ARMED)
    assert trip == Trip("P5", 25.0, "above", 30.0, 5000 + 109, 1000.0 + 5109 / RATE)
    assert lines.check(p5([26.0] * 99 + [20.0], seq=5200), ARMED) is None  # 99 samples: 9.9 ms


def test_a_run_continues_into_the_next_batch_of_the_same_session() -> None:
    lines = monitor({"channel": "P5", "above": 25.0, "persistence_ms": 10})
    assert lines.check(p5([20.0] * 40 + [27.0] * 60), ARMED) is None
    trip = lines.check(p5([26.0] * 100, seq=100), ARMED)
    assert trip is not None and (trip.seq, trip.value) == (139, 27.0)
    # the same run does not trip again
    assert lines.check(p5([26.0] * 100, seq=200), ARMED) is None
    # a new run does
    trip = lines.check(p5([20.0] + [26.0] * 99, seq=300), ARMED)
    assert trip is None
    trip = lines.check(p5([26.0] * 100, seq=400), RUNNING)
    assert trip is not None and trip.seq == 400
    assert trip.value == 26.0


@pytest.mark.parametrize(
    ("seq", "session"),
    [(101, "s1"), (99, "s1"), (100, "s2")],
    ids=["gap", "overlap", "new session"],
)
def test_a_gap_or_a_new_session_ends_the_run(seq: int, session: str) -> None:
    lines = monitor({"channel": "P5", "above": 25.0, "persistence_ms": 10})
    assert lines.check(p5([20.0] * 40 + [27.0] * 60), ARMED) is None
    assert lines.check(p5([26.0] * 99, seq=seq, session=session), ARMED) is None
    # from there on the batches continue, and the run started at `seq` trips at its 100th sample
    trip = lines.check(p5([26.0] * 10, seq=seq + 99, session=session), ARMED)
    assert trip is not None and trip.seq == seq + 99


def test_nan_never_trips_and_ends_a_run() -> None:
    lines = monitor({"channel": "P5", "above": 25.0, "persistence_ms": 1})  # 10 samples
    assert lines.check(p5([30.0] * 9 + [math.nan] + [30.0] * 9 + [math.nan] * 20), ARMED) is None
    assert lines.check(p5([30.0] * 9, seq=39), ARMED) is None  # the batch ended on NaN: no run carried
    assert lines.check(p5([math.nan] * 100, seq=48), ARMED) is None


def test_below_limits() -> None:
    lines = monitor({"channel": "P8", "below": 2.0, "persistence_ms": 0.5})  # 5 samples
    trip = lines.check(batch({"P8": [3.0, 1.5, 1.0, 0.5, 1.9, 1.0, 2.5]}), ARMED)
    assert trip == Trip("P8", 2.0, "below", 0.5, 5, 1000.0 + 5 / RATE)
    assert lines.check(batch({"P8": [2.0] * 20}, seq=7), ARMED) is None  # at the limit is not beyond it


def test_red_lines_apply_only_in_their_states() -> None:
    lines = RedlineMonitor(STAND)
    hot = batch({"Tbogaz1": [1900.0] * 600, "P5": [10.0] * 600})
    assert lines.check(hot, ARMED) is None  # throat temperature: running only
    assert lines.check(batch({"Tbogaz1": [1900.0] * 600}, seq=600), RUNNING) is not None
    assert lines.check(p5([30.0] * 200, seq=1200), IDLE) is None
    assert lines.check(p5([30.0] * 200, seq=1400), SystemState.ABORTING) is None
    # a run seen while inactive does not count once active
    assert lines.check(p5([30.0] * 99, seq=1600), ARMED) is None


def test_missing_channels_are_reported_and_their_rules_ignored() -> None:
    lines = RedlineMonitor(STAND)
    trip = lines.check(batch({"P1": [60.0] * 200}), ARMED)
    assert trip is not None and trip.channel == "P1"
    assert lines.missing_channels == ("P5", "P3", "Tbogaz1", "Tbogaz2")
    lines.check(batch({c: [0.0] for c in STAND.channel_names}, seq=200), ARMED)
    assert len(lines.missing_channels) == 0


def test_the_earliest_trip_of_the_batch_wins() -> None:
    lines = RedlineMonitor(STAND)
    columns = {"P5": [0.0] * 50 + [30.0] * 250, "P1": [60.0] * 300, "P3": [50.0] * 300}
    trip = lines.check(batch(columns), RUNNING)
    assert trip is not None and (trip.channel, trip.seq) == ("P5", 149)
    # a tie goes to the first configured
    lines.reset()
    trip = lines.check(batch({"P3": [50.0] * 200, "P1": [60.0] * 200}, seq=300), RUNNING)
    assert trip is not None and (trip.channel, trip.seq) == ("P1", 499)


def test_reset_forgets_runs() -> None:
    lines = monitor({"channel": "P5", "above": 25.0, "persistence_ms": 10})
    lines.check(p5([30.0] * 99), ARMED)
    lines.reset()
    assert lines.check(p5([30.0] * 99, seq=99), ARMED) is None


def reference_trips(values: list[float], limit: float, needed: int) -> list[tuple[int, float]]:
    """Sample by sample: (index, extreme of the run so far) where each run reaches `needed`."""
    trips, run, worst = [], 0, -math.inf
    for i, value in enumerate(values):
        if value > limit:
            run, worst = run + 1, max(worst, value)
            if run == needed:
                trips.append((i, worst))
        else:
            run, worst = 0, -math.inf
    return trips


PERSISTENT = {
    ms: monitor({"channel": "P5", "above": 10.0, "persistence_ms": ms}) for ms in (0, 0.1, 0.3, 0.7, 1.5)
}


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.sampled_from([0.0, 9.0, 11.0, 12.5, math.nan]), min_size=1, max_size=120),
    cuts=st.lists(st.integers(1, 119), max_size=8),
    persistence_ms=st.sampled_from(sorted(PERSISTENT)),
)
def test_batches_find_the_same_trips_as_a_sample_by_sample_reference(
    values: list[float], cuts: list[int], persistence_ms: float
) -> None:
    lines = PERSISTENT[persistence_ms]
    lines.reset()
    expected = reference_trips(values, 10.0, samples_needed(persistence_ms, RATE))
    bounds = sorted({0, len(values), *(c for c in cuts if c < len(values))})
    for start, stop in itertools.pairwise(bounds):
        trip = lines.check(p5(values[start:stop], seq=start), ARMED)
        inside = [(i, worst) for i, worst in expected if start <= i < stop]
        assert (trip.seq, trip.value) == inside[0] if trip else not inside


def test_a_chamber_red_line_applies_whenever_a_run_valve_may_be_open_and_in_its_phases() -> None:
    gox2 = ValveMap(STAND).mask_of(["GOX2"])
    lines = RedlineMonitor(STAND)
    assert lines.check(p5([30.0] * 200), IDLE) is None
    trip = lines.check(p5([30.0] * 200, seq=200), IDLE, open_mask=gox2)
    assert trip is not None and trip.channel == "P5"
    phased = monitor({"channel": "P5", "above": 25.0, "states": [], "phases": ["mainstage"]})
    assert phased.check(p5([30.0] * 200), IDLE, phase="countdown") is None
    assert phased.check(p5([30.0] * 200, seq=200), IDLE, phase="mainstage") is not None
