"""The report's figures as PNG bytes: channels over the run (min/max envelopes, services/common/minmax.py
through `plot.envelope`) against seconds from the run's reference time, with phase bands and markers
for valve changes, alarms, red-lines and aborts; and the burn, close up.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from services.analyze.burn import Burn
from services.analyze.plot import LINE_COLORS, Envelope, by_unit, draw_redlines, trace
from services.analyze.timeline import Category, Timeline
from services.common.settings import Redline

PHASE_COLORS = ("#e8f0fb", "#fdf1e3", "#eaf6ea", "#f6eaf4", "#f3f1e6", "#e9f5f6", "#f7e9e9", "#eeeeee")
MARKER_STYLES: dict[Category, tuple[str, str, float]] = {  # color, line style, width
    "valve": ("#777777", ":", 0.8),
    "alarm": ("tab:orange", "-", 1.2),
    "redline": ("tab:red", "-", 1.6),
    "abort": ("darkred", "-", 2.2),
}
BURN_COLOR = "#ffd27f"


@dataclass(frozen=True, slots=True)
class Axis:
    """Seconds from `origin_s` (UNIX seconds); `label` names the origin (T-0, run start)."""

    origin_s: float
    label: str

    def seconds(self, unix_s: float) -> float:
        return unix_s - self.origin_s


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    with mpl.rc_context({"agg.path.chunksize": 10_000}):
        figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _decorate(
    ax: Axes, timeline: Timeline, axis: Axis, view: tuple[float, float], *, label_phases: bool
) -> None:
    """Phase bands and event lines inside `view` (seconds); the bands named above the axes."""
    lo, hi = view
    for i, band in enumerate(timeline.phases):
        start = max(lo, axis.seconds(band.start))
        stop = min(hi, hi if band.end is None else axis.seconds(band.end))
        if stop <= start:
            continue
        ax.axvspan(start, stop, color=PHASE_COLORS[i % len(PHASE_COLORS)], zorder=0, linewidth=0)
        if label_phases:
            height = 1.01 + 0.05 * (i % 2)  # staggered: short phases' names do not overlap
            ax.text(
                start, height, band.name, transform=ax.get_xaxis_transform(), fontsize="x-small", va="bottom"
            )
    for marker in timeline.markers:
        style = MARKER_STYLES.get(marker.category)
        if style is not None and lo <= axis.seconds(marker.t) <= hi:
            color, line, width = style
            ax.axvline(axis.seconds(marker.t), color=color, linestyle=line, linewidth=width, zorder=1)


def overview(
    env: Envelope,
    channels: Sequence[str],
    *,
    units: Mapping[str, str],
    redlines: Sequence[Redline],
    timeline: Timeline,
    axis: Axis,
    burn: Burn | None,
    title: str,
) -> bytes:
    """One axis per unit over the whole run; phases as bands, events as vertical lines."""
    groups = by_unit(channels, units)
    figure = Figure(figsize=(13, 1.0 + 2.6 * len(groups)), dpi=90, layout="constrained")
    axes = figure.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0]
    start_s, end_s = axis.seconds(env.start_us / 1e6), axis.seconds(env.end_us / 1e6)
    colors = iter(LINE_COLORS * (len(channels) // len(LINE_COLORS) + 1))
    for i, (ax, (unit, names)) in enumerate(zip(axes, groups.items(), strict=True)):
        _decorate(ax, timeline, axis, (start_s, end_s), label_phases=i == 0)
        if burn is not None:
            ax.axvspan(burn.start_s, burn.end_s, color=BURN_COLOR, alpha=0.35, zorder=0, linewidth=0)
        for name in names:
            x_us, y = trace(env, name)
            ax.plot(x_us / 1e6 - axis.origin_s, y, color=next(colors), linewidth=0.8, label=name)
            draw_redlines(ax, name, unit, redlines)
        ax.set_ylabel(f"[{unit}]" if unit else "")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize="small")
    axes[-1].set_xlim(start_s, end_s)
    axes[-1].set_xlabel(f"seconds from {axis.label}")
    figure.suptitle(title)
    return _png(figure)


def burn_closeup(
    env: Envelope,
    pc: str,
    thrust: str,
    *,
    units: Mapping[str, str],
    timeline: Timeline,
    axis: Axis,
    burn: Burn,
) -> bytes:
    """Chamber pressure and thrust around the burn: the threshold, the burn window, the events."""
    figure = Figure(figsize=(13, 4.2), dpi=90, layout="constrained")
    ax = figure.subplots()
    start_s, end_s = axis.seconds(env.start_us / 1e6), axis.seconds(env.end_us / 1e6)
    _decorate(ax, timeline, axis, (start_s, end_s), label_phases=True)
    ax.axvspan(burn.start_s, burn.end_s, color=BURN_COLOR, alpha=0.35, zorder=0, linewidth=0)
    x_us, y = trace(env, pc)
    ax.plot(x_us / 1e6 - axis.origin_s, y, color="tab:blue", linewidth=0.9, label=pc)
    ax.axhline(burn.threshold, color="tab:blue", linestyle="--", linewidth=0.8, label="burn threshold")
    ax.set_ylabel(f"{pc} [{units.get(pc, '')}]")
    right = ax.twinx()
    x_us, y = trace(env, thrust)
    right.plot(x_us / 1e6 - axis.origin_s, y, color="tab:green", linewidth=0.9, label=thrust)
    right.set_ylabel(f"{thrust} [{units.get(thrust, '')}]")
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper right", fontsize="small")
    ax.set_xlim(start_s, end_s)
    ax.set_xlabel(f"seconds from {axis.label}")
    ax.grid(True, alpha=0.3)
    return _png(figure)


def bucket_count(span_s: float, points: int) -> int:
    """Buckets for a span: `points`, but no finer than the samples (at most one per ms)."""
    return int(np.clip(span_s * 1000, 10, points))
