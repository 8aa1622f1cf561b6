"""A recording (or a run's samples) as a plot wants it: chosen channels over a time range, min/max
reduced into buckets of equal time, and the same range as a CSV download.

Buckets are of equal *time* (not row count): a gap in the recording is an empty bucket, whose
minimum and maximum are NaN (answered null), so a plot breaks its line there. Only the row groups
whose timestamp statistics overlap the range are read, with only the asked columns, so zooming into a
few seconds of a 10-minute file reads a few row groups. The reduction is services/common/minmax.py's.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from services.common import recording, runs
from services.common.minmax import fold_runs
from services.gateway.recordings import BadQueryError, Cell, TooLargeError


@dataclass(frozen=True)
class Series:
    channels: list[str]
    first: float | None  # UNIX seconds of the recording's first and last sample (None: empty)
    last: float | None
    start: float  # the range reduced
    end: float
    n_source: int  # samples in the range
    t: list[float]  # each bucket's start
    min: dict[str, list[Cell]]
    max: dict[str, list[Cell]]


def resolve_run(data_dir: Path, run_id: str) -> Path:
    """A recorded run's `samples.parquet`; BadQueryError for an id that is no run id,
    FileNotFoundError when that run has no samples (unknown, or still recording)."""
    if not runs.valid_id(run_id):
        raise BadQueryError("not a run id (e.g. 20261202T014501Z-hotfire)")
    path = runs.run_dir(data_dir, run_id) / runs.SAMPLES
    if runs.read_run(data_dir, run_id) is None or not path.is_file():
        raise FileNotFoundError(run_id)
    return path


def channels_of(parquet: pq.ParquetFile, wanted: Sequence[str] | None) -> list[str]:
    """The asked channels (None: all) of this recording; BadQueryError naming how many are unknown."""
    try:
        available = recording.channels_of(parquet.schema_arrow)
    except ValueError as exc:
        raise BadQueryError("not a telemetry recording") from exc
    if not wanted:
        return available
    unknown = sum(1 for c in wanted if c not in available)
    if unknown:  # the names asked are not repeated: they may be anything
        raise BadQueryError(f"{unknown} unknown channels; this recording has {', '.join(available)}")
    return list(wanted)


def span(parquet: pq.ParquetFile) -> tuple[float, float] | None:
    """(first, last) sample time from the row groups' statistics, None for an empty file."""
    bounds = [b for b in (_group_bounds(parquet, i) for i in range(parquet.metadata.num_row_groups)) if b]
    if not bounds:
        return None
    return min(lo for lo, _ in bounds), max(hi for _, hi in bounds)


def reduce(
    path: Path,
    *,
    channels: Sequence[str] | None,
    start: float | None,
    end: float | None,
    points: int,
    max_cells: int,
) -> Series:
    """`channels` between `start` and `end` (UNIX s; None: the recording's ends) in at most `points`
    buckets (fewer when the range holds less than two samples per bucket)."""
    parquet = pq.ParquetFile(path)
    names = channels_of(parquet, channels)
    if points * 2 * len(names) > max_cells:
        fit = max(2, max_cells // (2 * len(names)))
        raise TooLargeError(
            f"{points} points × {len(names)} channels × 2 is more than {max_cells} cells per answer: "
            f"ask at most {fit} points or fewer channels"
        )
    whole = span(parquet)
    lo = start if start is not None else (whole[0] if whole else 0.0)
    hi = end if end is not None else (whole[1] if whole else lo)
    if hi < lo:
        raise BadQueryError("end is before start")
    points = _buckets(parquet, whole, hi - lo, points)
    width = max(hi - lo, 1e-6) / points
    low = np.full((points, len(names)), np.nan, dtype=np.float32)
    high = np.full((points, len(names)), np.nan, dtype=np.float32)
    n_source = 0
    for t, block in _blocks(parquet, names, lo, hi):
        which = np.minimum(((t - lo) / width).astype(np.int64), points - 1)
        order = np.argsort(which, kind="stable")  # a bucket once per fold, even if time steps back
        which = which[order]
        starts = np.flatnonzero(np.r_[True, which[1:] != which[:-1]])
        fold_runs(low, high, which[starts], block[order], starts)
        n_source += len(t)
    return Series(
        channels=names,
        first=whole[0] if whole else None,
        last=whole[1] if whole else None,
        start=lo,
        end=hi,
        n_source=n_source,
        t=(lo + width * np.arange(points)).tolist(),
        min={name: _cells(low[:, i]) for i, name in enumerate(names)},
        max={name: _cells(high[:, i]) for i, name in enumerate(names)},
    )


def csv_chunks(
    path: Path, *, channels: Sequence[str] | None, start: float | None, end: float | None
) -> Iterator[bytes]:
    """The rows between `start` and `end` as CSV (`timestamp` ISO-8601 UTC, `seq`, `session`, the
    channels), one chunk per row group; the header first even when no row falls in the range."""
    parquet = pq.ParquetFile(path)
    names = channels_of(parquet, channels)
    columns = [*recording.FIXED_COLUMNS, *names]
    header = True
    lo = -np.inf if start is None else start
    hi = np.inf if end is None else end
    for index in _groups(parquet, lo, hi):
        table = parquet.read_row_group(index, columns=columns)
        micros = table.column("timestamp").cast(pa.int64())
        keep = pc.and_(pc.greater_equal(micros, _micros(lo)), pc.less_equal(micros, _micros(hi)))
        table = table.filter(keep)
        table = table.set_column(2, "session", table.column("session").cast(pa.string()))
        yield _csv(table, header)
        header = False
    if header:
        empty = pa.table({name: pa.array([], pa.string()) for name in columns})
        yield _csv(empty, True)


def _csv(table: pa.Table, header: bool) -> bytes:
    out = io.BytesIO()
    pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=header))
    return out.getvalue()


def _micros(seconds: float) -> int:
    bound = float(np.clip(seconds, -1e12, 1e12))  # ±inf: beyond any sample
    return round(bound * 1e6)


def _buckets(parquet: pq.ParquetFile, whole: tuple[float, float] | None, seconds: float, points: int) -> int:
    """`points`, or fewer so that a bucket holds about two samples at the recording's mean rate: finer
    buckets would be empty between samples, which reads as gaps."""
    rows = parquet.metadata.num_rows
    if whole is None or whole[1] <= whole[0] or rows < 2:
        return points
    rate = (rows - 1) / (whole[1] - whole[0])
    return max(2, min(points, int(seconds * rate / 2)))


def _blocks(
    parquet: pq.ParquetFile, names: list[str], lo: float, hi: float
) -> Iterator[tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]]:
    """(time in s, samples × channels) of each overlapping row group, only the rows in [lo, hi]."""
    for index in _groups(parquet, lo, hi):
        table = parquet.read_row_group(index, columns=["timestamp", *names])
        t = table.column("timestamp").to_numpy().astype("datetime64[us]").astype(np.int64) / 1e6
        inside = (t >= lo) & (t <= hi)
        if not inside.any():
            continue
        values = np.column_stack([table.column(name).to_numpy().astype(np.float32) for name in names])
        yield t[inside], values[inside]


def _groups(parquet: pq.ParquetFile, lo: float, hi: float) -> Iterator[int]:
    """The row groups that may hold samples in [lo, hi] (all, where a group has no statistics)."""
    for index in range(parquet.metadata.num_row_groups):
        bounds = _group_bounds(parquet, index)
        if bounds is None and parquet.metadata.row_group(index).num_rows == 0:
            continue
        if bounds is None or (bounds[1] >= lo and bounds[0] <= hi):
            yield index


def _group_bounds(parquet: pq.ParquetFile, index: int) -> tuple[float, float] | None:
    group = parquet.metadata.row_group(index)
    if group.num_rows == 0:
        return None
    column = group.column(0)  # `timestamp` is the first column of every recording
    stats = column.statistics
    if stats is None or not stats.has_min_max:
        return None
    return _seconds(stats.min), _seconds(stats.max)


def _seconds(value: object) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int):  # raw µs
        return value / 1e6
    raise BadQueryError("a recording whose timestamps have no statistics")


def _cells(values: npt.NDArray[np.float32]) -> list[Cell]:
    as64 = values.astype(np.float64)
    cells: list[Cell] = as64.tolist()
    for i in np.flatnonzero(~np.isfinite(as64)).tolist():
        cells[i] = None
    return cells
