"""Finding and reading recordings: the logger's `sensor_log_*.parquet` files, streamed by row group.

Every reader here takes a subset of columns and a time window, skips row groups whose `timestamp`
statistics fall outside the window, and yields Arrow record batches: a file's full width is never in
memory at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from services.common import recording

KEY_COLUMNS = recording.FIXED_COLUMNS
BATCH_ROWS = 131_072
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Int64Array = npt.NDArray[np.int64]


class RecordingError(Exception):
    """A file or directory that is missing, unreadable or not an rcs recording."""


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """UTC microseconds, start inclusive, end exclusive; None = unbounded."""

    start_us: int | None = None
    end_us: int | None = None

    def overlaps(self, first_us: int, last_us: int) -> bool:
        return (self.start_us is None or last_us >= self.start_us) and (
            self.end_us is None or first_us < self.end_us
        )

    def mask(self, t_us: Int64Array) -> npt.NDArray[np.bool_] | None:
        """Which of these times lie inside; None when the window is unbounded."""
        if self.start_us is None and self.end_us is None:
            return None
        inside = np.ones(t_us.shape, dtype=bool)
        if self.start_us is not None:
            inside &= t_us >= self.start_us
        if self.end_us is not None:
            inside &= t_us < self.end_us
        return inside


def to_micros(moment: datetime) -> int:
    """UTC microseconds since the epoch; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_micros(t_us: int) -> datetime:
    return EPOCH + timedelta(microseconds=t_us)


def micros(column: pa.Array | pa.ChunkedArray) -> Int64Array:
    """A timestamp[us] column as int64 UTC microseconds."""
    values: Int64Array = pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False)
    return values


@dataclass(frozen=True, slots=True)
class Recording:
    path: Path
    file: pq.ParquetFile
    channels: tuple[str, ...]
    span_us: tuple[int, int] | None  # first and last timestamp; None for an empty file

    def row_groups(self, window: TimeWindow) -> list[int]:
        """The row groups that may hold samples inside `window` (by their timestamp statistics)."""
        metadata = self.file.metadata
        selected = []
        for i in range(metadata.num_row_groups):
            group = metadata.row_group(i)
            if group.num_rows == 0:
                continue
            span = _statistics_span(group.column(0).statistics)
            if span is None or window.overlaps(*span):
                selected.append(i)
        return selected


def _statistics_span(statistics: pq.Statistics | None) -> tuple[int, int] | None:
    if statistics is None or not statistics.has_min_max:
        return None
    low, high = statistics.min, statistics.max
    if not isinstance(low, datetime) or not isinstance(high, datetime):
        return None
    return to_micros(low), to_micros(high)


def open_recording(path: Path) -> Recording:
    """Open one file; RecordingError if it is missing, unreadable or not an rcs recording."""
    if not path.is_file():
        raise RecordingError(f"{path}: no such file")
    try:
        # pre_buffer would read every selected row group's column chunks up front: the whole file
        return _recording(path, pq.ParquetFile(path, pre_buffer=False))
    except (OSError, pa.ArrowException) as exc:
        raise RecordingError(f"{path}: cannot read it as Parquet ({exc})") from exc
    except ValueError as exc:  # channels_of: some other table
        raise RecordingError(f"{path}: not an rcs recording ({exc})") from exc


def _recording(path: Path, file: pq.ParquetFile) -> Recording:
    channels = tuple(recording.channels_of(file.schema_arrow))
    metadata = file.metadata
    spans = [
        _statistics_span(metadata.row_group(i).column(0).statistics) for i in range(metadata.num_row_groups)
    ]
    if any(span is None for span in spans):
        t = micros(file.read(columns=["timestamp"]).column(0))
        span_us = (int(t.min()), int(t.max())) if len(t) else None
    else:
        known = [span for span in spans if span is not None]
        span_us = (min(s[0] for s in known), max(s[1] for s in known)) if known else None
    return Recording(path, file, channels, span_us)


def open_segment(path: Path) -> tuple[Recording | None, str]:
    """The logger's open segment (an Arrow IPC stream it is still appending to, or one a crash left):
    its complete record batches as a recording held in memory, and a line saying what was read.

    Reading never disturbs the logger (read-only, and a batch it is writing is a torn tail, left out).
    """
    try:
        read = recording.read_stream(path.read_bytes())
    except OSError as exc:
        raise RecordingError(f"{path}: cannot read it ({exc})") from exc
    rows = sum(b.num_rows for b in read.batches)
    torn = " (a batch being written, or torn by a crash, left out)" if read.torn else ""
    if read.schema is None or rows == 0:
        return None, f"{path.name}: the logger's open segment holds no complete samples yet{torn}: skipped"
    try:
        recording.channels_of(read.schema)
    except ValueError as exc:
        raise RecordingError(f"{path}: not an rcs open segment ({exc})") from exc
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_batches(read.batches, read.schema), buffer, row_group_size=BATCH_ROWS)
    in_memory = pq.ParquetFile(pa.BufferReader(buffer.getvalue()))
    opened = _recording(path, in_memory)
    last = "" if opened.span_us is None else f" up to {from_micros(opened.span_us[1]):%H:%M:%S.%f} UTC"
    note = (
        f"{path.name}: the logger's open segment (still being written): "
        f"read its {rows} complete rows{last}{torn}"
    )
    return opened, note


def find_recordings(paths: Sequence[Path], on_note: Callable[[str], None] | None = None) -> list[Recording]:
    """Files as given, directories as every `sensor_log_*.parquet` in them, and their open segments
    (`sensor_log_*.arrows`: what is complete of them, each said to `on_note`); in time order, each once."""
    files: dict[Path, None] = {}
    segments: dict[Path, None] = {}
    for path in paths:
        if path.is_dir():
            found = [p for p in path.glob(recording.FILE_PATTERN) if recording.is_recording_name(p.name)]
            open_ = [
                p
                for p in path.glob(recording.SEGMENT_PATTERN)
                if recording.is_recording_name(p.with_suffix(".parquet").name)
            ]
            if not found and not open_:
                raise RecordingError(f"{path}: no {recording.FILE_PATTERN} in this directory")
            files.update(dict.fromkeys(p.resolve() for p in found))
            segments.update(dict.fromkeys(p.resolve() for p in open_))
        elif path.suffix == ".arrows":
            segments[path.resolve() if path.exists() else path] = None
        else:
            files[path.resolve() if path.exists() else path] = None
    recordings = [open_recording(path) for path in files]
    for path in sorted(segments):
        segment, note = open_segment(path)
        if on_note is not None:
            on_note(note)
        if segment is not None:
            recordings.append(segment)
    return sorted(recordings, key=lambda r: (r.span_us or (2**63, 2**63), str(r.path)))


def channel_union(recordings: Sequence[Recording]) -> tuple[str, ...]:
    """Every channel of any of the files, in the order they first appear."""
    return tuple(dict.fromkeys(name for r in recordings for name in r.channels))


def progress_bar(console: Console) -> Progress:
    """The progress display for long reads and writes (transient: gone when the work is done)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def scan(
    recordings: Sequence[Recording],
    columns: Sequence[str],
    window: TimeWindow = TimeWindow(),
    progress: Progress | None = None,
) -> Iterator[pa.RecordBatch]:
    """Record batches of `columns` (key columns or channels) from every file, inside `window`.

    A channel a file lacks reads as NaN ("undefined", as on the bus). Row groups outside the window
    are not read; batches are cut to the window exactly.
    """
    plan = [(r, r.row_groups(window)) for r in recordings]
    total = sum(r.file.metadata.row_group(i).num_rows for r, groups in plan for i in groups)
    task = progress.add_task("reading", total=total) if progress is not None else None
    filter_column = "timestamp"
    for rec, groups in plan:
        if not groups:
            continue
        present = [c for c in columns if c in KEY_COLUMNS or c in rec.channels]
        wanted = list(dict.fromkeys([*present, filter_column]))
        try:
            for read in rec.file.iter_batches(batch_size=BATCH_ROWS, row_groups=groups, columns=wanted):
                if progress is not None and task is not None:
                    progress.advance(task, read.num_rows)
                inside = window.mask(micros(read.column(filter_column)))
                batch = read if inside is None else read.filter(pa.array(inside))
                if batch.num_rows:
                    yield _with_columns(batch, columns)
        except (OSError, pa.ArrowException) as exc:
            raise RecordingError(f"{rec.path}: cannot read its data ({exc})") from exc


def _with_columns(batch: pa.RecordBatch, columns: Sequence[str]) -> pa.RecordBatch:
    names = set(batch.schema.names)
    arrays = [
        batch.column(name) if name in names else pa.array(np.full(batch.num_rows, np.nan, np.float32))
        for name in columns
    ]
    return pa.RecordBatch.from_arrays(arrays, names=list(columns))


class SessionIds:
    """Small integer ids for session names, the same across files (each file has its own dictionary).

    Ids are given in order of first appearance, so with files scanned in time order they sort sessions
    chronologically.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self._ids: dict[str, int] = {}

    def ids(self, column: pa.Array) -> npt.NDArray[np.int32]:
        encoded = column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column)
        lookup = np.array([self._id(str(name)) for name in encoded.dictionary.to_pylist()], dtype=np.int32)
        indices = encoded.indices.to_numpy(zero_copy_only=False)
        ids: npt.NDArray[np.int32] = lookup[indices]
        return ids

    def _id(self, name: str) -> int:
        if name not in self._ids:
            self._ids[name] = len(self.names)
            self.names.append(name)
        return self._ids[name]
