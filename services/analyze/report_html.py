"""The report's HTML: one self-contained page (services/analyze/report.py builds what it shows).

Every text that comes from the run (names, notes, operators, events) is escaped; images are PNG
`data:` URIs; no script, no style sheet or font fetched.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from services.analyze.report_plots import Axis

if TYPE_CHECKING:
    from services.analyze.report import Report

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


def page(report: Report) -> str:
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
