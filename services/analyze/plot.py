"""Channels against UTC time, decimated to a min/max envelope per time bucket so spikes survive.

The time range is cut into `buckets` equal buckets (about one per pixel column); each bucket keeps
the smallest and largest value of each channel. Drawing the two as one line (min, max, next min, ...)
shows every excursion at the plot's resolution, whatever the number of samples behind it. The line
breaks after a bucket whose last sample is followed by a gap in `seq` (or another session), so lost
samples show as holes, never as a straight line across.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import matplotlib as mpl
import matplotlib.dates as mdates
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from services.analyze.load import SessionIds, from_micros, micros
from services.common.minmax import fold_runs
from services.common.settings import Redline

FloatArray = npt.NDArray[np.float64]

REDLINE_COLOR = "tab:red"
# matplotlib's default cycle without its red, which is kept for red-lines
LINE_COLORS = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
)


@dataclass(frozen=True, slots=True)
class Envelope:
    """[start_us, end_us) in buckets: each one's centre (UTC µs), its sample count, whether a gap
    follows a sample in it, and each channel's min and max in it (NaN if none: the NaN rule of
    `services.common.minmax`)."""

    start_us: int
    end_us: int
    t_us: npt.NDArray[np.int64]
    counts: npt.NDArray[np.int64]
    breaks: npt.NDArray[np.bool_]
    low: dict[str, FloatArray]
    high: dict[str, FloatArray]


def envelope(
    batches: Iterable[pa.RecordBatch], channels: Sequence[str], start_us: int, end_us: int, buckets: int
) -> Envelope:
    """Min/max of `channels` per bucket of [start_us, end_us) from batches holding the key columns."""
    span = end_us - start_us
    counts = np.zeros(buckets, dtype=np.int64)
    breaks = np.zeros(buckets, dtype=bool)
    low = {name: np.full(buckets, np.nan) for name in channels}
    high = {name: np.full(buckets, np.nan) for name in channels}
    sessions = SessionIds()
    previous = np.zeros((3, 0), dtype=np.int64)  # (session id, seq, bucket) of the last sample read
    for batch in batches:
        index = np.clip((micros(batch.column("timestamp")) - start_us) * buckets // span, 0, buckets - 1)
        counts += np.bincount(index, minlength=buckets)
        session = sessions.ids(batch.column("session")).astype(np.int64)
        seq = batch.column("seq").to_numpy(zero_copy_only=False).astype(np.int64)
        keys = np.concatenate((previous, np.vstack((session, seq, index))), axis=1)
        jump = (np.diff(keys[1]) != 1) | (np.diff(keys[0]) != 0)
        breaks[keys[2, :-1][jump]] = True
        previous = keys[:, -1:]
        if len(index) == 0:
            continue
        order = np.argsort(index, kind="stable")  # each bucket's samples as one run
        starts = np.flatnonzero(np.r_[True, np.diff(index[order]) != 0])
        for name in channels:
            values = batch.column(name).to_numpy(zero_copy_only=False)[order]
            fold_runs(low[name], high[name], index[order][starts], values, starts)
    centres = start_us + ((np.arange(buckets) + 0.5) * span / buckets).astype(np.int64)
    return Envelope(start_us, end_us, centres, counts, breaks, low, high)


def trace(env: Envelope, name: str) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """x (UTC µs), y of the min/max line: per bucket with samples (min, max, NaN if a gap follows else
    max)."""
    keep = env.counts > 0
    x = np.repeat(env.t_us[keep], 3)
    high = env.high[name][keep]
    y = np.column_stack((env.low[name][keep], high, np.where(env.breaks[keep], np.nan, high))).ravel()
    return x, y


def by_unit(channels: Sequence[str], units: Mapping[str, str]) -> dict[str, list[str]]:
    """Channels grouped by unit (one axis each), in order of first appearance."""
    groups: dict[str, list[str]] = {}
    for name in channels:
        groups.setdefault(units.get(name, ""), []).append(name)
    return groups


def draw_redlines(ax: Axes, name: str, unit: str, redlines: Sequence[Redline]) -> None:
    """`name`'s red-lines as dashed lines, each labelled at the right edge."""
    for line in (r for r in redlines if r.channel == name):
        limit = line.above if line.above is not None else line.below
        if limit is None:
            continue
        sign = ">" if line.above is not None else "<"
        ax.axhline(
            limit,
            color=REDLINE_COLOR,
            linestyle="--",
            linewidth=1.3,
            label=f"{name} red-line {sign} {limit:g} {unit}",
        )
        ax.text(  # which line is whose, where several share an axis
            0.995,
            limit,
            f"{name} {sign} {limit:g}",
            transform=ax.get_yaxis_transform(),
            color=REDLINE_COLOR,
            fontsize="small",
            ha="right",
            va="bottom",
        )


def draw(
    env: Envelope,
    channels: Sequence[str],
    *,
    units: Mapping[str, str],
    redlines: Sequence[Redline],
    title: str,
    out: Path,
) -> None:
    """One axis per unit (channels sharing a unit share it), red-lines dashed, written to `out`."""
    groups = by_unit(channels, units)
    figure = Figure(figsize=(13, 1.2 + 3.2 * len(groups)), dpi=110, layout="constrained")
    axes = figure.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0]
    colors = iter(LINE_COLORS * (len(channels) // len(LINE_COLORS) + 1))
    for ax, (unit, names) in zip(axes, groups.items(), strict=True):
        for name in names:
            x, y = trace(env, name)
            ax.plot(x.astype("datetime64[us]"), y, color=next(colors), linewidth=0.8, label=name)
            draw_redlines(ax, name, unit, redlines)
        ax.set_ylabel(f"{', '.join(names)} [{unit}]" if unit else ", ".join(names))
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize="small")  # never over the data
    locator = mdates.AutoDateLocator(tz=UTC)  # type: ignore[no-untyped-call]
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))  # type: ignore[no-untyped-call]
    axes[-1].set_xlabel("time (UTC)")
    axes[-1].set_xlim(from_micros(env.start_us), from_micros(env.end_us))
    axes[0].set_title(title)
    FigureCanvasAgg(figure)
    with mpl.rc_context({"agg.path.chunksize": 10_000}):
        figure.savefig(out)
