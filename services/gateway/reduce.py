"""Display-mode reduction: per-channel minimum and maximum of blocks of samples, vectorised.

NaN means "undefined" on the bus (e.g. ISP without propellant flow): it is ignored by the reduction
and a block whose values are all NaN reduces to NaN (no warnings, unlike numpy.nanmin).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def block_minmax(
    data: npt.NDArray[np.float32], columns: npt.NDArray[np.intp] | None = None
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(min, max) over the rows of `data` (n x channels), for `columns` only when given; each (k,)."""
    if data.ndim != 2 or data.shape[0] == 0:
        raise ValueError(f"expected a non-empty (n, channels) array, got shape {data.shape}")
    block = data if columns is None else data[:, columns]
    # fmin/fmax propagate a NaN only when both operands are NaN: all-NaN columns stay NaN.
    return np.fmin.reduce(block, axis=0), np.fmax.reduce(block, axis=0)


def buckets_minmax(
    data: npt.NDArray[np.float32], buckets: int, columns: npt.NDArray[np.intp] | None = None
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Split the rows into at most `buckets` runs of equal length (the last may be shorter).

    Returns (first row of each bucket, min (b x k), max (b x k)).
    """
    n = data.shape[0]
    if buckets <= 0:
        raise ValueError(f"buckets must be positive, got {buckets}")
    size = -(-n // buckets)  # ceil
    starts = np.arange(0, n, size, dtype=np.intp)
    block = data if columns is None else data[:, columns]
    return starts, np.fmin.reduceat(block, starts, axis=0), np.fmax.reduceat(block, starts, axis=0)
