"""The figures of a hot fire from its sample arrays: pure, vectorised numpy functions.

Times are seconds (float64) on any common origin, samples in time order. A NaN sample is undefined
(docs/protocol.md) and is left out: integrals and crossings interpolate across it, as across lost
samples (a gap in `seq`).

- The burn: chamber pressure above a threshold. The threshold is `burn_threshold_bar` when set, else
  `burn_threshold_fraction` of the steady chamber pressure (`steady_level`: from medians of 20 ms
  blocks, so a hard-start spike does not move it), never below `burn_min_bar` (cold flow and noise
  are no burn). Crossings are interpolated between the samples either side; dips shorter than
  `burn_merge_s` do not end the burn. The burn window runs from the first rise to the last fall.
- Integrals are trapezoids over the samples, cut at the window's ends by linear interpolation.
- Mean Isp = burn impulse / ((oxidiser + fuel mass over the burn) · g0); O/F = oxidiser / fuel mass.
- Ignition delay: from the last opening of the ignition valve at or before the burn's start, to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
STEADY_WINDOW_S = 0.02


@dataclass(frozen=True, slots=True)
class Burn:
    start_s: float
    end_s: float
    duration_s: float  # the burns' durations summed (a dip shorter than burn_merge_s ends none)
    segments: int  # separate burns (more than one: a restart, or a long dip)
    threshold: float


@dataclass(frozen=True, slots=True)
class BurnFigures:
    """What test engineers ask first; NaN where it cannot be known (no burn, no flow)."""

    burn: Burn | None
    threshold: float
    steady_pc: float
    peak_pc: float
    mean_pc: float
    peak_thrust: float
    mean_thrust: float
    impulse_run: float
    impulse_burn: float
    ox_mass: float
    fuel_mass: float
    mixture_ratio: float
    mean_isp: float
    ignition_delay_s: float | None


def finite(t: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The samples whose value is defined."""
    keep = np.isfinite(y) & np.isfinite(t)
    return t[keep], y[keep]


def steady_level(t: FloatArray, y: FloatArray, window_s: float = STEADY_WINDOW_S) -> float:
    """The plateau: the median of the `window_s` blocks' medians that are above half the largest one.

    Block medians leave out spikes shorter than half a block (a hard start), which the peak does not.
    NaN if no sample is defined.
    """
    t, y = finite(t, y)
    if len(y) == 0:
        return math.nan
    step = float(np.median(np.diff(t))) if len(t) > 1 else window_s
    width = max(1, round(window_s / step)) if step > 0 else 1
    blocks = len(y) // width
    medians = (
        np.median(y[: blocks * width].reshape(blocks, width), axis=1) if blocks else np.median(y[None], 1)
    )
    top = float(medians.max())
    if top <= 0:
        return math.nan
    return float(np.median(medians[medians >= 0.5 * top]))


def burn_threshold(
    t: FloatArray, pc: FloatArray, absolute: float | None, fraction: float, floor: float
) -> float:
    if absolute is not None:
        return absolute
    steady = steady_level(t, pc)
    return floor if math.isnan(steady) else max(floor, fraction * steady)


def segments_above(t: FloatArray, y: FloatArray, level: float) -> tuple[FloatArray, FloatArray]:
    """(starts, ends) of the runs of samples above `level`, crossings interpolated (defined samples)."""
    t, y = finite(t, y)
    above = y > level
    if not above.any():
        return np.zeros(0), np.zeros(0)
    step = np.diff(above.astype(np.int8))
    rise = np.flatnonzero(step == 1) + 1  # first sample above
    fall = np.flatnonzero(step == -1)  # last sample above
    if above[0]:
        rise = np.r_[0, rise]
    if above[-1]:
        fall = np.r_[fall, len(y) - 1]
    starts = _crossing(t, y, rise - 1, rise, level)
    ends = _crossing(t, y, fall, fall + 1, level)
    return starts, ends


def _crossing(
    t: FloatArray, y: FloatArray, before: npt.NDArray[np.intp], after: npt.NDArray[np.intp], level: float
) -> FloatArray:
    """Where the line between samples `before` and `after` meets `level` (at the edge: that sample)."""
    edge = (before < 0) | (after >= len(y))
    b, a = np.clip(before, 0, len(y) - 1), np.clip(after, 0, len(y) - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.clip((level - y[b]) / (y[a] - y[b]), 0.0, 1.0)
    times: FloatArray = t[b] + np.nan_to_num(fraction) * (t[a] - t[b])
    return np.where(edge, np.where(before < 0, t[a], t[b]), times)


def find_burn(t: FloatArray, pc: FloatArray, threshold: float, merge_s: float) -> Burn | None:
    starts, ends = segments_above(t, pc, threshold)
    if len(starts) == 0:
        return None
    separate = starts[1:] - ends[:-1] >= merge_s
    first = np.r_[True, separate]
    last = np.r_[separate, True]
    burn_starts, burn_ends = starts[first], ends[last]
    duration = float((burn_ends - burn_starts).sum())
    return Burn(float(burn_starts[0]), float(burn_ends[-1]), duration, len(burn_starts), threshold)


def integrate(t: FloatArray, y: FloatArray, start: float | None = None, end: float | None = None) -> float:
    """∫ y dt (trapezoids) over [start, end] (default: every sample), the ends interpolated."""
    t, y = finite(t, y)
    if len(t) == 0:
        return math.nan
    lo = float(t[0]) if start is None else max(start, float(t[0]))
    hi = float(t[-1]) if end is None else min(end, float(t[-1]))
    if hi <= lo:
        return 0.0
    inside = (t > lo) & (t < hi)
    tt = np.r_[lo, t[inside], hi]
    yy = np.r_[np.interp(lo, t, y), y[inside], np.interp(hi, t, y)]
    return float(np.sum(0.5 * (yy[1:] + yy[:-1]) * np.diff(tt)))


def peak(t: FloatArray, y: FloatArray, start: float, end: float) -> float:
    values = y[(t >= start) & (t <= end) & np.isfinite(y)]
    return float(values.max()) if len(values) else math.nan


def ignition_delay(openings: Sequence[float], burn_start: float) -> float | None:
    """From the last ignition-valve opening at or before the burn's start; None if it never opened."""
    before = [t for t in openings if t <= burn_start]
    return burn_start - max(before) if before else None


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 and math.isfinite(numerator) else math.nan


def burn_figures(
    t: FloatArray,
    *,
    pc: FloatArray,
    thrust: FloatArray,
    ox_flow: FloatArray,
    fuel_flow: FloatArray,
    threshold_bar: float | None,
    threshold_fraction: float,
    min_bar: float,
    merge_s: float,
    g0: float,
    ignition_openings: Sequence[float] = (),
) -> BurnFigures:
    """Every figure of the report from the run's arrays (`t` in seconds, the others per sample)."""
    threshold = burn_threshold(t, pc, threshold_bar, threshold_fraction, min_bar)
    burn = find_burn(t, pc, threshold, merge_s)
    impulse_run = integrate(t, thrust)
    if burn is None:
        nan = math.nan
        return BurnFigures(
            None,
            threshold,
            steady_level(t, pc),
            nan,
            nan,
            nan,
            nan,
            impulse_run,
            nan,
            nan,
            nan,
            nan,
            nan,
            None,
        )
    a, b = burn.start_s, burn.end_s
    span = b - a
    impulse_burn = integrate(t, thrust, a, b)
    ox, fuel = integrate(t, ox_flow, a, b), integrate(t, fuel_flow, a, b)
    return BurnFigures(
        burn=burn,
        threshold=threshold,
        steady_pc=steady_level(t, pc),
        peak_pc=peak(t, pc, a, b),
        mean_pc=_ratio(integrate(t, pc, a, b), span),
        peak_thrust=peak(t, thrust, a, b),
        mean_thrust=_ratio(impulse_burn, span),
        impulse_run=impulse_run,
        impulse_burn=impulse_burn,
        ox_mass=ox,
        fuel_mass=fuel,
        mixture_ratio=_ratio(ox, fuel),
        mean_isp=_ratio(impulse_burn, (ox + fuel) * g0),
        ignition_delay_s=ignition_delay(ignition_openings, a),
    )
