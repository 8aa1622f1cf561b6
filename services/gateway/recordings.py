"""The logger's recordings for the REST API: listing, safe name resolution, and reading a window of rows.

Only `sensor_log_*.parquet` files directly inside the data directory are ever opened. Reads go row
group by row group with only the requested columns, so a 10-minute file (6 M rows × 22 channels) is
never in memory at once. With `points`, the window is cut into buckets of equal row count and each
bucket gives two rows: its first timestamp/seq with every channel's minimum, then its last
timestamp/seq with every channel's maximum, so spikes survive the reduction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from services.common import recording
from services.common.minmax import fold_runs

Cell = float | int | str | None


class BadQueryError(ValueError):
    """A request this file cannot answer (unknown column); the text says why."""


class TooLargeError(BadQueryError):
    """The answer would hold more cells than allowed; the text says how many rows fit."""


@dataclass(frozen=True)
class FileInfo:
    name: str
    size: float  # KB
    path: str


@dataclass(frozen=True)
class Rows:
    columns: list[str]
    row_count: int  # rows in the whole file
    offset: int
    reduced: bool
    data: dict[str, list[Cell]]


def list_files(data_dir: Path) -> list[FileInfo]:
    """Every recording in `data_dir`, newest first (by the start time and number in the name)."""
    found: list[tuple[tuple[Any, int], FileInfo]] = []
    if not data_dir.is_dir():
        return []
    for path in data_dir.iterdir():
        parsed = recording.parse_name(path.name)
        if parsed is None or not path.is_file():
            continue
        try:
            size = path.stat().st_size
        except FileNotFoundError:  # removed by retention meanwhile
            continue
        found.append((parsed, FileInfo(path.name, round(size / 1024, 1), str(data_dir / path.name))))
    return [info for _, info in sorted(found, key=lambda item: item[0], reverse=True)]


def resolve(data_dir: Path, filename: str) -> Path:
    """The recording `filename` inside `data_dir`.

    Raises BadQueryError for a name that is not a recording's (traversal, other files) and
    FileNotFoundError when there is no such recording.
    """
    if not recording.is_recording_name(filename):
        raise BadQueryError("only sensor_log_<yyyymmdd_HHMMSS>_<n>.parquet files of the data directory")
    root = data_dir.resolve()
    path = (root / filename).resolve()
    if path.parent != root or not path.is_file():
        raise FileNotFoundError(filename)
    return path


def read_rows(
    path: Path,
    *,
    offset: int,
    limit: int | None,
    columns: Sequence[str] | None,
    points: int | None,
    max_cells: int,
) -> Rows:
    """Rows `offset … offset+limit` (None: to the end) of these columns (None: all), maybe reduced.

    Raises TooLargeError, before reading any row, when the answer would hold more than `max_cells`.
    """
    parquet = pq.ParquetFile(path)
    available = parquet.schema_arrow.names
    selected = list(columns) if columns else list(available)
    unknown = sum(1 for c in selected if c not in available)
    if unknown:  # the names asked are not repeated: they may be anything
        raise BadQueryError(f"{unknown} unknown columns; this file has {', '.join(available)}")
    total = parquet.metadata.num_rows
    start = min(offset, total)
    stop = total if limit is None else min(total, start + limit)
    reduce = points is not None and stop - start > points
    rows = points if reduce and points is not None else stop - start
    if rows * len(selected) > max_cells:
        fit = max(1, max_cells // len(selected))
        raise TooLargeError(
            f"{rows} rows × {len(selected)} columns is more than {max_cells} cells per answer: "
            f"ask at most {fit} rows (limit or points) or fewer columns, and page with offset"
        )
    if reduce and points is not None:
        data = _reduced(parquet, selected, start, stop, max(1, points // 2))
        return Rows(selected, total, start, True, data)
    data = {name: [] for name in selected}
    for table in _tables(parquet, selected, start, stop):
        for name in selected:
            data[name].extend(_cells(table.column(name)))
    return Rows(selected, total, start, False, data)


def _tables(parquet: pq.ParquetFile, columns: list[str], start: int, stop: int) -> Iterator[pa.Table]:
    """The rows `start … stop` as one table per row group, only `columns` read."""
    first = 0
    for index in range(parquet.metadata.num_row_groups):
        rows = parquet.metadata.row_group(index).num_rows
        lo, hi = max(start, first), min(stop, first + rows)
        if lo < hi:
            table = parquet.read_row_group(index, columns=columns)
            yield table.slice(lo - first, hi - lo)
        first += rows
        if first >= stop:
            return


def _cells(column: pa.ChunkedArray) -> list[Cell]:
    kind = column.type
    if pa.types.is_timestamp(kind):
        return _iso(column.to_numpy().astype("datetime64[us]").astype(np.int64))
    if pa.types.is_floating(kind):
        return _floats(column.to_numpy().astype(np.float64))
    values: list[Cell] = column.to_pylist()
    return values


def _iso(micros: npt.NDArray[np.int64]) -> list[Cell]:
    text = np.datetime_as_string(micros.astype("datetime64[us]").astype("datetime64[ms]"), unit="ms")
    return [f"{t}Z" for t in text.tolist()]


def _floats(values: npt.NDArray[np.float64]) -> list[Cell]:
    cells: list[Cell] = values.tolist()
    for i in np.flatnonzero(~np.isfinite(values)).tolist():
        cells[i] = None
    return cells


@dataclass
class _Bucket:
    """Running reduction of one column over every bucket."""

    low: npt.NDArray[Any]
    high: npt.NDArray[Any]


def _reduced(
    parquet: pq.ParquetFile, columns: list[str], start: int, stop: int, buckets: int
) -> dict[str, list[Cell]]:
    edges = np.linspace(start, stop, buckets + 1).astype(np.int64)  # equal row counts, none empty
    texts: dict[str, list[Cell]] = {}
    running: dict[str, _Bucket] = {}
    position = start
    for table in _tables(parquet, columns, start, stop):
        rows = np.arange(position, position + table.num_rows)
        which = np.searchsorted(edges, rows, side="right") - 1
        starts = np.flatnonzero(np.r_[True, which[1:] != which[:-1]])
        ids = which[starts]
        for name in columns:
            column = table.column(name)
            if pa.types.is_dictionary(column.type) or pa.types.is_string(column.type):
                firsts = texts.setdefault(name, [None] * buckets)
                for b, value in zip(ids.tolist(), column.take(pa.array(starts)).to_pylist(), strict=True):
                    if firsts[b] is None:
                        firsts[b] = value
                continue
            if name not in running:
                running[name] = _Bucket(np.full(buckets, np.nan), np.full(buckets, np.nan))
            fold_runs(running[name].low, running[name].high, ids, _numbers(column), starts)
        position += table.num_rows
    data: dict[str, list[Cell]] = {}
    for name in columns:
        if name not in running:  # text columns: the bucket's first value, twice
            data[name] = [value for value in texts.get(name, [None] * buckets) for _ in range(2)]
            continue
        interleaved = np.column_stack([running[name].low, running[name].high]).ravel()
        kind = parquet.schema_arrow.field(name).type
        if pa.types.is_timestamp(kind):
            data[name] = _iso(interleaved.astype(np.int64))
        elif pa.types.is_integer(kind):
            data[name] = [int(v) for v in interleaved.tolist()]
        else:
            data[name] = _floats(interleaved)
    return data


def _numbers(column: pa.ChunkedArray) -> npt.NDArray[np.float64]:
    """A numeric or timestamp column as float64 (timestamps in µs; exact below 2**53)."""
    if pa.types.is_timestamp(column.type):
        micros: npt.NDArray[np.int64] = column.to_numpy().astype("datetime64[us]").astype(np.int64)
        return micros.astype(np.float64)
    values: npt.NDArray[np.float64] = np.asarray(column.to_numpy(), dtype=np.float64)
    return values
