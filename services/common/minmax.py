"""Min/max bucketing: the one reduction behind every envelope (live display, history, recordings, plots).

A bucket keeps each channel's smallest and largest value, so a one-sample spike survives however
many samples a bucket covers.

The NaN rule (the same everywhere): NaN means "undefined" on the bus (e.g. ISP without propellant
flow), so a NaN sample is ignored, and a bucket whose values are all NaN (or that holds no sample)
reduces to NaN, for min and max alike. ±inf are ordinary values. This is `numpy.fmin`/`numpy.fmax`
(a NaN wins only against another NaN), with no warnings, unlike `numpy.nanmin`.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import numpy.typing as npt

Number = TypeVar("Number", np.float32, np.float64)


def block_minmax(
    data: npt.NDArray[Number], columns: npt.NDArray[np.intp] | None = None
) -> tuple[npt.NDArray[Number], npt.NDArray[Number]]:
    """(min, max) over the rows of `data` (n x channels), for `columns` only when given; each (k,)."""
    if data.ndim != 2 or data.shape[0] == 0:
        raise ValueError(f"expected a non-empty (n, channels) array, got shape {data.shape}")
    block = data if columns is None else data[:, columns]
    return np.fmin.reduce(block, axis=0), np.fmax.reduce(block, axis=0)


def runs_minmax(
    values: npt.NDArray[Number], starts: npt.NDArray[np.integer]
) -> tuple[npt.NDArray[Number], npt.NDArray[Number]]:
    """(min, max) of each run of rows `values[starts[i]:starts[i+1]]` (the last to the end).

    `starts` is strictly increasing, the first 0; the results have one row per run.
    """
    return np.fmin.reduceat(values, starts, axis=0), np.fmax.reduceat(values, starts, axis=0)


def merge_runs(
    low: npt.NDArray[Number], high: npt.NDArray[Number], starts: npt.NDArray[np.integer]
) -> tuple[npt.NDArray[Number], npt.NDArray[Number]]:
    """Runs of (min, max) rows of finer buckets merged into coarser buckets starting at `starts`."""
    return np.fmin.reduceat(low, starts, axis=0), np.fmax.reduceat(high, starts, axis=0)


def fold_runs(
    low: npt.NDArray[Number],
    high: npt.NDArray[Number],
    buckets: npt.NDArray[np.integer],
    values: npt.NDArray[Number],
    starts: npt.NDArray[np.integer],
) -> None:
    """Fold each run of `values` (as in `runs_minmax`) into the running `low`/`high` of its bucket.

    `buckets[i]` is run i's bucket; a bucket appears at most once per call. `low`/`high` start as
    NaN (no sample yet).
    """
    run_low, run_high = runs_minmax(values, starts)
    low[buckets] = np.fmin(low[buckets], run_low)
    high[buckets] = np.fmax(high[buckets], run_high)


def buckets_minmax(
    data: npt.NDArray[Number], buckets: int, columns: npt.NDArray[np.intp] | None = None
) -> tuple[npt.NDArray[np.intp], npt.NDArray[Number], npt.NDArray[Number]]:
    """Split the rows into at most `buckets` runs of equal length (the last may be shorter).

    Returns (first row of each bucket, min (b x k), max (b x k)).
    """
    n = data.shape[0]
    if buckets <= 0:
        raise ValueError(f"buckets must be positive, got {buckets}")
    size = -(-n // buckets)  # ceil
    starts = np.arange(0, n, size, dtype=np.intp)
    block = data if columns is None else data[:, columns]
    low, high = runs_minmax(block, starts)
    return starts, low, high
