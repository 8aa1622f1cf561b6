"""Red-lines: a channel beyond its limit for long enough, while the limit applies, trips.

A limit applies while the system state is one of its `states`, or the running sequence is in one of its
`phases`, or any of its `while_open` valves may be open (the mask the caller passes: commanded,
acknowledged or on its way). The same monitor watches the channels' warning limits (alarms, no abort).

Each batch is evaluated with numpy, rule by rule. A run of violating samples carries over to the next
batch only when that batch continues it exactly (same session, `seq` = the previous batch's
`next_seq`); a gap, a new session, an inactive state or a missing channel ends the run. NaN never
violates, so it ends a run too. A run trips once, on the sample where it reaches the persistence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from services.actuation.core import SystemState
from services.actuation.valve_map import ValveMap
from services.common.settings import Redline, Settings
from services.common.telemetry import TelemetryBatch


@dataclass(frozen=True)
class Trip:
    channel: str
    limit: float
    direction: Literal["above", "below"]
    value: float  # the extreme value of the violating run, up to `seq`
    seq: int  # index (within the session) of the sample where the run reached the persistence
    t: float  # that sample's time


@dataclass(frozen=True)
class _Run:
    """The violating run at the end of the previous batch."""

    length: int = 0
    extreme: float = math.nan
    tripped: bool = False


_NO_RUN = _Run()


def samples_needed(persistence_ms: float, rate_hz: float) -> int:
    """Consecutive violating samples that make `persistence_ms` at `rate_hz` (at least 1)."""
    return max(1, math.ceil(round(persistence_ms * rate_hz / 1000, 9)))


class RedlineMonitor:
    def __init__(self, settings: Settings, rules: tuple[Redline, ...] | None = None) -> None:
        """`rules`: the limits to watch (default: the red-lines)."""
        self._rules = settings.redlines if rules is None else rules
        valves = ValveMap(settings)
        self._while_open = tuple(valves.mask_of(rule.while_open) for rule in self._rules)
        self._runs = [_NO_RUN] * len(self._rules)
        self._session: str | None = None
        self._next_seq = 0
        self._missing: tuple[str, ...] = ()

    @property
    def missing_channels(self) -> tuple[str, ...]:
        """Red-line channels absent from the last batch checked (their rules were ignored)."""
        return self._missing

    def reset(self) -> None:
        self._runs = [_NO_RUN] * len(self._rules)
        self._session = None

    @property
    def rules(self) -> tuple[Redline, ...]:
        return self._rules

    def beyond(self) -> tuple[int, ...]:
        """Indexes of the rules whose limit is exceeded, long enough, at the end of the last batch."""
        return tuple(i for i, run in enumerate(self._runs) if run.tripped)

    def check(
        self, batch: TelemetryBatch, state: SystemState, *, phase: str | None = None, open_mask: int = 0
    ) -> Trip | None:
        """The earliest trip in `batch` (by sample; ties: configuration order), or None."""
        if batch.session != self._session or batch.seq != self._next_seq:
            self._runs = [_NO_RUN] * len(self._rules)
        self._session, self._next_seq = batch.session, batch.next_seq
        missing: list[str] = []
        trips: list[Trip] = []
        for i, rule in enumerate(self._rules):
            if rule.channel not in batch.channels:
                missing.append(rule.channel)
                self._runs[i] = _NO_RUN
            elif not (state.value in rule.states or phase in rule.phases or open_mask & self._while_open[i]):
                self._runs[i] = _NO_RUN
            else:
                values = batch.data[:, batch.channels.index(rule.channel)].astype(np.float64)
                trip, self._runs[i] = _scan(rule, self._runs[i], values, batch)
                if trip is not None:
                    trips.append(trip)
        self._missing = tuple(dict.fromkeys(missing))
        return min(trips, key=lambda trip: trip.seq, default=None)


def _scan(
    rule: Redline, run: _Run, values: npt.NDArray[np.float64], batch: TelemetryBatch
) -> tuple[Trip | None, _Run]:
    """One rule over one batch: its first trip, and the run left open at the end of the batch."""
    above = rule.above is not None
    limit = rule.above if rule.above is not None else rule.below
    assert limit is not None  # the settings give exactly one
    extreme = np.maximum if above else np.minimum
    bad = values > limit if above else values < limit
    needed = samples_needed(rule.persistence_ms, batch.rate_hz)

    index = np.arange(len(values))
    last_good = np.maximum.accumulate(np.where(bad, -1, index))  # last non-violating sample so far
    carried = last_good < 0  # still in the run that came from the previous batch
    length = index - last_good + np.where(carried, run.length, 0)
    hits = bad & (length >= needed)
    if run.tripped:
        hits &= ~carried

    trip = None
    if hits.any():
        k = int(np.argmax(hits))
        worst = _run_extreme(values, int(last_good[k]) + 1, k + 1, run if carried[k] else _NO_RUN, extreme)
        direction: Literal["above", "below"] = "above" if above else "below"
        trip = Trip(rule.channel, limit, direction, worst, batch.seq + k, float(batch.t[k]))

    if not bad[-1]:
        return trip, _NO_RUN
    end = len(values)
    start = int(last_good[-1]) + 1
    before = run if carried[-1] else _NO_RUN
    return trip, _Run(
        length=int(length[-1]),
        extreme=_run_extreme(values, start, end, before, extreme),
        tripped=bool(length[-1] >= needed) or before.tripped,
    )


def _run_extreme(
    values: npt.NDArray[np.float64], start: int, stop: int, before: _Run, extreme: np.ufunc
) -> float:
    """The extreme of `values[start:stop]` and of the part of the run seen in earlier batches."""
    segment = np.append(values[start:stop], before.extreme) if before.length else values[start:stop]
    return float(extreme.reduce(segment))
