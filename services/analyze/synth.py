"""Synthetic recordings of a hot fire, written exactly like the logger's files.

The signals come from the stand model the STM32 emulator also runs (services/common/stand_physics.py) driven
through the stand's own sequences: idle, `preburning` (feed lines pressurise), `burningstart`
(igniter), `burning` (propellants to the chamber: chamber pressure, thrust, throat and wall
temperatures rise), then the abort sequence (shutdown, vent, purge) and cool-down. A short hard-start
pressure spike marks ignition. Sensor noise and the 12-bit ADC's quantisation are applied as on the
real stand, and the derived channels are computed by the `Derivation` acquisition also uses
(services/common/derived.py): a tool imports shared code, never a service.

Gaps are whole telemetry batches lost (seq jumps, as with dropped serial frames), never at the
start. Files rotate like the logger's: one per `rotate_s` seconds of recording.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from services.analyze import writing
from services.analyze.load import from_micros, to_micros
from services.common import recording
from services.common.derived import Derivation
from services.common.settings import Sequence as StandSequence
from services.common.settings import Settings
from services.common.stand_physics import QUANTITIES, Adc, Plant, Sensors
from services.common.valve_pattern import parse_pattern

# Profile, as fractions of the recording: when each sequence starts.
PROFILE = (("preburning", 0.10), ("burningstart", 0.20), ("burning", 0.22))
SHUTDOWN_AT = 0.60  # the abort sequence ends the burn
PLANT_BLOCK_S = 0.005  # the plant's targets are frozen over blocks this long (see stand_physics.py)
HARD_START_BAR = 9.0  # chamber pressure spike at ignition...
HARD_START_TAU_S = 0.002  # ...decaying with this time constant
MAX_GAP_BATCHES = 20

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SynthPlan:
    start: datetime
    seconds: float
    rate_hz: float
    gaps: int
    rotate_s: float
    seed: int = 0

    @property
    def samples(self) -> int:
        return round(self.seconds * self.rate_hz)


def valve_schedule(settings: Settings, seconds: float) -> tuple[list[float], list[int]]:
    """(times in s, valve masks) of the hot-fire profile: mask[i] holds from times[i] on."""
    times, masks = [0.0], [0]

    def run(sequence: StandSequence, at: float) -> None:
        names = settings.valve_names
        for step, after in zip(sequence.steps, sequence.patterns(names), strict=True):
            if after is not None:
                times.append(at)
                masks.append(parse_pattern([int(name in after) for name in names], len(names)))
            at += step.wait_ms / 1000

    for name, fraction in PROFILE:
        if name in settings.sequences:
            run(settings.sequences[name], fraction * seconds)
    run(settings.sequences[settings.abort_sequence_name], SHUTDOWN_AT * seconds)
    order = np.argsort(times, kind="stable")
    return [times[i] for i in order], [masks[i] for i in order]


def gap_ranges(plan: SynthPlan, batch: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """`plan.gaps` disjoint (start, stop) seq ranges of whole batches, none at the very start."""
    batches = plan.samples // batch
    if plan.gaps == 0 or batches < 4:
        return []
    ranges: list[tuple[int, int]] = []
    slots = rng.choice(np.arange(1, batches - 1), size=min(plan.gaps, batches - 2), replace=False)
    for first in np.sort(slots):
        length = int(rng.integers(1, MAX_GAP_BATCHES + 1))
        start, stop = int(first) * batch, min(int(first) + length, batches - 1) * batch
        if ranges and start <= ranges[-1][1]:  # touching or overlapping the previous gap: merge
            ranges[-1] = (ranges[-1][0], max(stop, ranges[-1][1]))
        else:
            ranges.append((start, stop))
    return ranges


class _Stand:
    """The emulator's plant and sensors stepped through the valve schedule, a chunk at a time."""

    def __init__(self, settings: Settings, plan: SynthPlan, rng: np.random.Generator) -> None:
        self._plant = Plant(settings.valve_names, settings.emulator)
        self._state = self._plant.initial_state()
        self._sensors = Sensors(settings.measured_channels, settings.emulator.noise_fraction)
        self._adc = Adc(settings.measured_channels)
        self._times, self._masks = valve_schedule(settings, plan.seconds)
        self._dt = 1 / plan.rate_hz
        self._block = max(1, round(PLANT_BLOCK_S * plan.rate_hz))
        self._rng = rng
        self._ignition_s: float | None = None
        self._p5 = QUANTITIES.index("P5")

    def measure(self, first: int, n: int) -> FloatArray:
        """Measured channels (engineering units) of samples first .. first + n - 1."""
        values = np.empty((n, len(QUANTITIES)))
        for a in range(0, n, self._block):
            k = min(self._block, n - a)
            now = (first + a) * self._dt
            valves = self._masks[bisect_right(self._times, now) - 1]
            self._state, values[a : a + k] = self._plant.advance(self._state, valves, k, self._dt)
            if self._ignition_s is None and self._state.burning:
                self._ignition_s = now
        if self._ignition_s is not None:
            since = (first + np.arange(n)) * self._dt - self._ignition_s
            spike = HARD_START_BAR * np.exp(-np.clip(since, 0, None) / HARD_START_TAU_S)
            values[:, self._p5] += np.where(since >= 0, spike, 0.0)
        measured = self._sensors.measure(values, self._rng)
        return self._adc.engineering(self._adc.counts(measured))


def held(first: int, stop: int, gaps: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The inclusive seq intervals of first .. stop - 1 outside the (start, stop) gaps."""
    intervals, cursor = [], first
    for gap_start, gap_stop in gaps:
        if gap_stop <= cursor or gap_start >= stop:
            continue
        if gap_start > cursor:
            intervals.append((cursor, gap_start - 1))
        cursor = max(cursor, gap_stop)
    if cursor < stop:
        intervals.append((cursor, stop - 1))
    return intervals


class Synthesizer:
    """The recording of `plan`, generated a chunk at a time in seq order (bounded memory)."""

    def __init__(self, settings: Settings, plan: SynthPlan) -> None:
        rng = np.random.default_rng(plan.seed)
        self.session = f"{plan.start:%Y%m%dT%H%M%SZ}-{rng.bytes(3).hex()}"  # like acquisition's ids
        batch = max(1, round(plan.rate_hz * settings.acquisition.batch_ms / 1000))
        self.gaps = gap_ranges(plan, batch, rng)
        self._stand = _Stand(settings, plan, rng)
        self._derivation = Derivation(settings)
        self._channels = settings.channel_names
        self._start_us = to_micros(plan.start)
        self._rate_hz = plan.rate_hz
        self._next = 0

    def time_us(self, seq: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """When samples were taken: the device's clock, evenly spaced."""
        t: npt.NDArray[np.int64] = self._start_us + np.rint(seq * (1e6 / self._rate_hz)).astype(np.int64)
        return t

    def chunk(self, first: int, stop: int) -> pa.Table:
        """Rows of samples first .. stop - 1 outside the gaps, in the telemetry schema (no metadata).

        Chunks must be asked for in order, each starting where the previous one stopped.
        """
        if first != self._next:
            raise ValueError(f"chunk from {first}: the next sample to simulate is {self._next}")
        self._next = stop
        seq = np.arange(first, stop, dtype=np.int64)
        t_us = self.time_us(seq)
        rows = self._derivation.compute(t_us / 1e6, self._stand.measure(first, stop - first))
        keep = np.zeros(stop - first, dtype=bool)
        for a, b in held(first, stop, self.gaps):
            keep[a - first : b - first + 1] = True
        n = int(keep.sum())
        session = pa.DictionaryArray.from_arrays(np.zeros(n, dtype=np.int32), pa.array([self.session]))
        columns = [
            pa.array(t_us[keep], pa.timestamp("us", tz="UTC")),
            pa.array(seq[keep].astype(np.uint64)),
            session,
            *(pa.array(rows[keep, j]) for j in range(len(self._channels))),
        ]
        return pa.Table.from_arrays(columns, schema=recording.telemetry_schema(self._channels))


def write(
    settings: Settings, plan: SynthPlan, out_dir: Path, advance: Callable[[int], None] | None = None
) -> list[tuple[Path, int]]:
    """The recording as files in `out_dir`, rotated every `plan.rotate_s`: [(path, rows)].

    Each file is named after its first sample with the first free `n` for that second.
    """
    synth = Synthesizer(settings, plan)
    per_file = max(1, round(plan.rotate_s * plan.rate_hz))
    chunk_rows = settings.logger.row_group_rows
    written = []
    for first in range(0, plan.samples, per_file):
        stop = min(first + per_file, plan.samples)
        intervals = held(first, stop, synth.gaps)
        chunks = (synth.chunk(a, min(a + chunk_rows, stop)) for a in range(first, stop, chunk_rows))
        if not intervals:
            for _ in chunks:  # all lost: the stand still runs through it
                pass
            continue
        start = from_micros(int(synth.time_us(np.array([intervals[0][0]]))[0]))
        n = 0
        while (out_dir / recording.parquet_name(start, n)).exists():
            n += 1
        path = out_dir / recording.parquet_name(start, n)
        schema = recording.telemetry_schema(settings.channel_names).with_metadata(
            recording.recording_metadata(settings.channel_names, {synth.session: intervals})
        )
        writing.write_recording(chunks, path, schema, settings.logger, advance)
        written.append((path, sum(b - a + 1 for a, b in intervals)))
    return written
