"""The report of a run: one self-contained HTML page (PNG plots as data: URIs, no external fetch).

It holds the run's metadata, the figures test engineers ask first (services/analyze/burn.py), every
alarm, red-line and abort with its time, the channels over the run with phase bands and event markers,
the burn close up, every event, and what could not be read. Times are seconds from T-0 when the run
has one, else from the run's start. Every text from the run (names, notes, events) is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from services.analyze import continuity, report_html, report_plots, timeline
from services.analyze.burn import BurnFigures, burn_figures
from services.analyze.load import KEY_COLUMNS, TimeWindow, micros, scan
from services.analyze.plot import envelope
from services.analyze.report_html import figure_rows
from services.analyze.report_plots import Axis
from services.analyze.run import Run
from services.analyze.timeline import Timeline
from services.common import runs as layout
from services.common.settings import Settings

__all__ = ["Report", "Samples", "build", "figure_rows", "read_samples", "write"]

FloatArray = npt.NDArray[np.float64]
CLOSEUP_BEFORE_S = 1.0
CLOSEUP_AFTER_S = 1.5


@dataclass(frozen=True, slots=True)
class Samples:
    """The report's channels over the run, read alone (not the recording's full width)."""

    t_us: npt.NDArray[np.int64]
    seq: npt.NDArray[np.int64]
    sessions: int
    columns: dict[str, FloatArray]

    def device_clock(self, rate_hz: float) -> FloatArray | None:
        """Seconds on the device's sample clock, `seq / rate_hz`, from the first sample; None when the
        samples are not one session in seq order (then only the timestamps can order them)."""
        if self.sessions != 1 or len(self.seq) == 0 or np.any(np.diff(self.seq) <= 0):
            return None
        clock: FloatArray = (self.seq - self.seq[0]) / rate_hz
        return clock


def read_samples(run: Run, channels: Sequence[str]) -> Samples:
    """Only `channels`, the timestamps and seq, in time order."""
    times: list[npt.NDArray[np.int64]] = []
    seqs: list[npt.NDArray[np.int64]] = []
    sessions: set[str] = set()
    values: dict[str, list[FloatArray]] = {name: [] for name in channels}
    for batch in scan([run.samples], ["timestamp", "seq", "session", *channels]):
        times.append(micros(batch.column("timestamp")))
        seqs.append(batch.column("seq").to_numpy(zero_copy_only=False).astype(np.int64))
        sessions.update(str(s) for s in pc.unique(batch.column("session").cast(pa.string())).to_pylist())
        for name in channels:
            values[name].append(batch.column(name).to_numpy(zero_copy_only=False).astype(np.float64))
    if not times:
        empty = np.zeros(0, np.int64)
        return Samples(empty, empty, 0, {name: np.zeros(0) for name in channels})
    t_us = np.concatenate(times)
    order = np.argsort(t_us, kind="stable")
    return Samples(
        t_us[order],
        np.concatenate(seqs)[order],
        len(sessions),
        {name: np.concatenate(v)[order] for name, v in values.items()},
    )


def _continuity_notes(run: Run) -> list[str]:
    keys = continuity.read_keys(scan([run.samples], list(KEY_COLUMNS)))
    notes = []
    for s in continuity.check(keys):
        if s.gap_count:
            notes.append(
                f"session {s.session}: {s.missing} sample(s) lost in {s.gap_count} gap(s); "
                "integrals and crossings interpolate across them"
            )
        if s.duplicates:
            notes.append(f"session {s.session}: {s.duplicates} sample(s) recorded twice")
    return notes


def _device_clock(run: Run, samples: Samples, notes: list[str]) -> FloatArray | None:
    """The device's sample clock (`seq / rate_hz`, run.json's rate) for durations and integrals: the
    timestamps follow the host's clock, which acquisition slews by up to 10 % to keep with it. None
    (the timestamps, then) without a rate, or for samples not one session in seq order."""
    rate = run.meta.get("rate_hz")
    if not isinstance(rate, int | float) or isinstance(rate, bool) or not rate > 0:
        return None
    clock = samples.device_clock(float(rate))
    if clock is None:
        notes.append("the samples are not one session in seq order: durations on their timestamps")
    return clock


def _axis(run: Run, line: Timeline, first_us: int) -> Axis:
    t0 = line.t0 if line.t0 is not None else run.time("t0")
    if t0 is not None:
        return Axis(t0, "T-0")
    started = run.time("started_at")
    return Axis(started if started is not None else first_us / 1e6, "run start")


@dataclass(frozen=True, slots=True)
class Report:
    run: Run
    settings: Settings
    figures: BurnFigures
    timeline: Timeline
    axis: Axis
    plots: list[tuple[str, bytes]]
    samples: int
    first_us: int
    last_us: int

    def html(self) -> str:
        return report_html.page(self)


def build(run: Run, settings: Settings) -> Report:
    """Read, compute and draw the report of `run`."""
    cfg = settings.report
    notes = run.notes
    line = timeline.build(run.events, settings.valve_names, notes)
    wanted = list(dict.fromkeys([cfg.chamber_pressure, cfg.thrust, cfg.ox_flow, cfg.fuel_flow]))
    missing = [name for name in wanted if name not in run.samples.channels]
    if missing:
        notes.append(f"samples.parquet has no {', '.join(missing)}: read as undefined (NaN)")
    samples = read_samples(run, wanted)
    if len(samples.t_us) == 0:
        raise ValueError(f"{run.samples.path}: no samples")
    notes.extend(_continuity_notes(run))
    first_us, last_us = int(samples.t_us[0]), int(samples.t_us[-1])
    axis = _axis(run, line, first_us)
    host = samples.t_us / 1e6 - axis.origin_s
    device = _device_clock(run, samples, notes)
    figures = burn_figures(
        host if device is None else device,
        clock=None if device is None else host,
        pc=samples.columns[cfg.chamber_pressure],
        thrust=samples.columns[cfg.thrust],
        ox_flow=samples.columns[cfg.ox_flow],
        fuel_flow=samples.columns[cfg.fuel_flow],
        threshold_bar=cfg.burn_threshold_bar,
        threshold_fraction=cfg.burn_threshold_fraction,
        min_bar=cfg.burn_min_bar,
        merge_s=cfg.burn_merge_s,
        g0=settings.derived.g0,
        ignition_openings=[axis.seconds(o) for o in line.openings(cfg.ignition_valve)],
    )
    if figures.burn is not None and figures.burn.segments > 1:
        notes.append(
            f"{figures.burn.segments} separate burns: the burn window spans all of them, the burn "
            "duration is their sum"
        )
    plots = _plots(run, settings, line=line, axis=axis, figures=figures, first_us=first_us, last_us=last_us)
    return Report(run, settings, figures, line, axis, plots, len(samples.t_us), first_us, last_us)


def _plots(
    run: Run,
    settings: Settings,
    *,
    line: Timeline,
    axis: Axis,
    figures: BurnFigures,
    first_us: int,
    last_us: int,
) -> list[tuple[str, bytes]]:
    cfg = settings.report
    units = {c.name: c.unit for c in settings.channels}
    channels = [c for c in cfg.plot_channels if c in run.samples.channels]
    end_us = last_us + 1
    plots = []
    if channels:
        batches = scan([run.samples], [*KEY_COLUMNS, *channels])
        buckets = report_plots.bucket_count((end_us - first_us) / 1e6, cfg.plot_points)
        env = envelope(batches, channels, first_us, end_us, buckets)
        title = f"{run.meta.get('name') or run.id}: channels over the run"
        png = report_plots.overview(
            env,
            channels,
            units=units,
            redlines=settings.redlines,
            timeline=line,
            axis=axis,
            burn=figures.burn,
            title=title,
        )
        plots.append(("Channels over the run", png))
    burn = figures.burn
    pair = [cfg.chamber_pressure, cfg.thrust]
    if burn is not None and all(c in run.samples.channels for c in pair):
        lo = max(first_us, round((axis.origin_s + burn.start_s - CLOSEUP_BEFORE_S) * 1e6))
        hi = min(end_us, round((axis.origin_s + burn.end_s + CLOSEUP_AFTER_S) * 1e6))
        batches = scan([run.samples], [*KEY_COLUMNS, *pair], TimeWindow(lo, hi))
        buckets = report_plots.bucket_count((hi - lo) / 1e6, cfg.plot_points)
        env = envelope(batches, pair, lo, hi, buckets)
        png = report_plots.burn_closeup(env, *pair, units=units, timeline=line, axis=axis, burn=burn)
        plots.append(("The burn", png))
    return plots


def write(report: Report, out: Path | None = None) -> Path:
    """The page as `out` (default: report.html in the run directory), written aside then renamed."""
    path = out or report.run.path / layout.REPORT
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(report.html(), encoding="utf-8")
    partial.replace(path)
    return path
