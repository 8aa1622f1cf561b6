"""The report of a run: one self-contained HTML page (PNG plots as data: URIs, no external fetch).

It holds the run's metadata, the figures test engineers ask first (services/analyze/burn.py), every
alarm, red-line and abort with its time, the channels over the run with phase bands and event markers,
the burn close up, every event, and what could not be read. Times are seconds from T-0 when the run
has one, else from the run's start. Every text from the run (names, notes, events) is escaped.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.analyze import continuity, report_plots, timeline
from services.analyze.burn import BurnFigures, burn_figures
from services.analyze.load import KEY_COLUMNS, TimeWindow, micros, scan
from services.analyze.plot import envelope
from services.analyze.report_plots import Axis
from services.analyze.run import REPORT_FILE, Run
from services.analyze.timeline import Timeline
from services.common.settings import Settings

FloatArray = npt.NDArray[np.float64]
CLOSEUP_BEFORE_S = 1.0
CLOSEUP_AFTER_S = 1.5
CATEGORY_NAMES = {
    "abort": "abort",
    "redline": "red-line",
    "alarm": "alarm",
    "valve": "valves",
    "phase": "phase",
    "state": "state",
    "command": "command",
    "data": "data",
    "other": "other",
}


@dataclass(frozen=True, slots=True)
class Samples:
    """The report's channels over the run, read alone (not the recording's full width)."""

    t_us: npt.NDArray[np.int64]
    columns: dict[str, FloatArray]


def read_samples(run: Run, channels: Sequence[str]) -> Samples:
    """Only `channels` and the timestamps, in time order."""
    times: list[npt.NDArray[np.int64]] = []
    values: dict[str, list[FloatArray]] = {name: [] for name in channels}
    for batch in scan([run.samples], ["timestamp", *channels]):
        times.append(micros(batch.column("timestamp")))
        for name in channels:
            values[name].append(batch.column(name).to_numpy(zero_copy_only=False).astype(np.float64))
    if not times:
        return Samples(np.zeros(0, np.int64), {name: np.zeros(0) for name in channels})
    t_us = np.concatenate(times)
    order = np.argsort(t_us, kind="stable")
    return Samples(t_us[order], {name: np.concatenate(v)[order] for name, v in values.items()})


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
        return _page(self)


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
    t = samples.t_us / 1e6 - axis.origin_s
    figures = burn_figures(
        t,
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
    path = out or report.run.path / REPORT_FILE
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(report.html(), encoding="utf-8")
    partial.replace(path)
    return path


# --- HTML ---------------------------------------------------------------------------------------

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1250px}
h1{margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0} td,th{padding:.2em .7em;border-bottom:1px solid #eee;
text-align:left;vertical-align:top} td.n{text-align:right;font-variant-numeric:tabular-nums}
.abort{color:#8b0000;font-weight:bold} .redline{color:#c00} .alarm{color:#c60}
.notes li{color:#8a4b00} img{max-width:100%} pre{background:#f6f6f6;padding:.6em;overflow:auto}
.result{font-weight:bold}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"


def _when(axis: Axis, unix_s: float) -> str:
    s = axis.seconds(unix_s)
    if axis.label == "T-0":
        return f"T{s:+.3f} s"
    return f"{s:+.3f} s"


def _utc(unix_s: float | None) -> str:
    if unix_s is None:
        return "—"
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _rows(rows: Iterable[Sequence[str]], header: Sequence[str] | None = None, numeric: int = -1) -> str:
    """A table of already escaped cells; column `numeric` right-aligned."""
    head = "" if header is None else "<tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>"
    body = "".join(
        "<tr>"
        + "".join(f'<td class="n">{c}</td>' if i == numeric else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table>{head}{body}</table>"


def figure_rows(report: Report) -> list[tuple[str, str, str, str]]:
    """(figure, value, unit, how) of the figures table, values formatted, nothing escaped yet."""
    f, cfg, axis = report.figures, report.settings.report, report.axis
    units = {c.name: c.unit for c in report.settings.channels}
    pc_unit, thrust_unit = units.get(cfg.chamber_pressure, ""), units.get(cfg.thrust, "")
    burn = f.burn
    window = "—" if burn is None else f"{burn.start_s:+.3f} … {burn.end_s:+.3f}"
    return [
        ("burn duration", _fmt(None if burn is None else burn.duration_s), "s",
         f"{cfg.chamber_pressure} above {_fmt(f.threshold)} {pc_unit}"),
        ("burn window", window, f"s from {axis.label}", "first rise to last fall through the threshold"),
        ("peak chamber pressure", _fmt(f.peak_pc), pc_unit, f"{cfg.chamber_pressure}, over the burn"),
        ("mean chamber pressure", _fmt(f.mean_pc), pc_unit, "time average over the burn"),
        ("peak thrust", _fmt(f.peak_thrust), thrust_unit, f"{cfg.thrust}, over the burn"),
        ("mean thrust", _fmt(f.mean_thrust), thrust_unit, "time average over the burn"),
        ("total impulse", _fmt(f.impulse_run), f"{thrust_unit}·s", f"∫ {cfg.thrust} dt over the run"),
        ("burn impulse", _fmt(f.impulse_burn), f"{thrust_unit}·s", f"∫ {cfg.thrust} dt over the burn"),
        ("mean Isp", _fmt(f.mean_isp), "s", "burn impulse / (propellant mass · g0)"),
        ("oxidiser mass", _fmt(f.ox_mass), "kg", f"∫ {cfg.ox_flow} dt over the burn"),
        ("fuel mass", _fmt(f.fuel_mass), "kg", f"∫ {cfg.fuel_flow} dt over the burn"),
        ("O/F", _fmt(f.mixture_ratio), "", "oxidiser mass / fuel mass"),
        ("ignition delay", _fmt(f.ignition_delay_s), "s",
         f"{cfg.ignition_valve} opening → {cfg.chamber_pressure} above the threshold"),
    ]  # fmt: skip


def _figures(report: Report) -> str:
    rows = [(_e(a), _e(b), _e(c), _e(d)) for a, b, c, d in figure_rows(report)]
    table = _rows(rows, ("figure", "value", "unit", "how"), numeric=1)
    if report.figures.burn is None:
        table = (
            f"<p><b>No burn</b>: {_e(report.settings.report.chamber_pressure)} never rose above "
            f"{_e(_fmt(report.figures.threshold))}.</p>" + table
        )
    safety = report.timeline.of("abort", "redline", "alarm")
    if not safety:
        return table + "<p>No alarm, red-line or abort.</p>"
    rows2 = [
        (f'<span class="{m.category}">{_e(CATEGORY_NAMES[m.category])}</span>', _e(_when(report.axis, m.t)),
         _e(m.label))
        for m in safety
    ]  # fmt: skip
    return table + "<h3>Alarms, red-lines and aborts</h3>" + _rows(rows2, ("", "time", "what"))


def _metadata(report: Report) -> str:
    meta, run = report.run.meta, report.run
    operators = meta.get("operators")
    if isinstance(operators, list):
        operators = ", ".join(str(o) for o in operators)
    tare = meta.get("tare")
    rows = [
        ("run", run.id),
        ("name", meta.get("name", "—")),
        ("stand", meta.get("stand", report.settings.stand_name)),
        ("operators", operators or "—"),
        ("procedure", meta.get("procedure") or "—"),
        ("result", meta.get("result") or "—"),
        ("started", _utc(run.time("started_at"))),
        ("ended", _utc(run.time("ended_at"))),
        ("samples", f"{report.samples} from {_utc(report.first_us / 1e6)} to {_utc(report.last_us / 1e6)}"),
        ("time origin", f"{report.axis.label} = {_utc(report.axis.origin_s)}"),
        ("pre-trigger", f"{meta['pretrigger_s']} s" if "pretrigger_s" in meta else "—"),
        ("config sha256", meta.get("config_sha256", "—")),
        ("version", meta.get("version", "—")),
        ("tare", json.dumps(tare) if tare is not None else "—"),
    ]
    table = _rows((_e(k), _e(v)) for k, v in rows)
    notes = meta.get("notes")
    if notes:
        table += f"<h3>Notes</h3><pre>{_e(notes)}</pre>"
    return table


def _events(report: Report) -> str:
    rows = [
        (_e(_when(report.axis, m.t)), f'<span class="{m.category}">{_e(CATEGORY_NAMES[m.category])}</span>',
         _e(m.label))
        for m in report.timeline.markers
    ]  # fmt: skip
    if not rows:
        return "<p>No events.</p>"
    return _rows(rows, ("time", "", "event"))


def _images(report: Report) -> str:
    parts = []
    for title, png in report.plots:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<h3>{_e(title)}</h3><img alt="{_e(title)}" src="data:image/png;base64,{data}">')
    return "".join(parts) or "<p>No channel to plot.</p>"


def _page(report: Report) -> str:
    meta = report.run.meta
    title = f"{meta.get('name') or report.run.id}"
    notes = "".join(f"<li>{_e(n)}</li>" for n in report.run.notes)
    config = meta.get("config_yaml")
    config_html = (
        f"<details><summary>stand configuration of the run</summary><pre>{_e(config)}</pre></details>"
        if config
        else ""
    )
    result = meta.get("result")
    result_html = f' · <span class="result">{_e(result)}</span>' if result else ""
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>Run report: {_e(title)}</title>'
        f"<style>{STYLE}</style></head><body>"
        f"<h1>Run report: {_e(title)}</h1>"
        f"<p>{_e(report.run.id)} · {_e(_utc(report.run.time('started_at')))}"
        f"{result_html}</p>"
        f"<h2>Figures</h2>{_figures(report)}"
        f"<h2>Plots</h2>{_images(report)}"
        f"<h2>Run</h2>{_metadata(report)}{config_html}"
        + (f'<h2>What could not be read</h2><ul class="notes">{notes}</ul>' if notes else "")
        + f"<h2>Events</h2>{_events(report)}"
        f"<p><small>rcs-analyze report, {_e(_utc(datetime.now(UTC).timestamp()))}</small></p>"
        "</body></html>\n"
    )
