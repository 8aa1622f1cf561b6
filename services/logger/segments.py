"""The open segment of the recording, and its conversion to a Parquet file.

The logger appends telemetry to a `SegmentWriter` (in memory) and flushes it every `flush_s`: the
rows become one record batch at the end of an Arrow IPC *stream* file, `<stem>.arrows` in data_dir,
followed by fsync. A stream needs no footer, so every batch flushed before a kill -9 or a power cut
can be read back. On rotation the segment is closed and converted to `<stem>.parquet` (see
`recording`), written as `<stem>.parquet.tmp`, fsynced and renamed, so a `.parquet` is always whole;
only then is the `.arrows` deleted. At start, `recover` converts the segments a crash left behind.

The stem is the Parquet name without its suffix (`sensor_log_<UTC start>_<n>`), chosen when the
segment's file is created with an `n` no file in data_dir has used for that second.

Rotation in two steps keeps the slow part off the hot path:

    arrows = writer.close_segment()       # fast (a flush); the next append starts a new segment
    parquet = convert_segment(arrows, s)  # slow (~0.5 s per 1.2 M rows of 22 channels): another thread

`rotate()` does both in turn. A `SegmentWriter` belongs to one thread; `convert_segment` touches only
the files of the segment it is given. Disk errors (OSError) propagate and lose nothing: rows that did
not reach the disk stay buffered and the next `flush()` writes them exactly once; a failed conversion
leaves the `.arrows` in place (convert it again, or `recover` will).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from services.common.recording import (
    Intervals,
    IntervalSet,
    channels_of,
    parquet_name,
    parse_name,
    read_stream,
    recording_metadata,
    telemetry_schema,
    write_options,
)
from services.common.settings import LoggerSettings

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".arrows"
TMP_SUFFIX = ".tmp"


@dataclass(frozen=True, slots=True)
class Chunk:
    """Consecutive samples of one session: seq `first_seq`, `first_seq + 1`, ..."""

    session: str
    first_seq: int
    t: NDArray[np.float64]
    data: NDArray[np.float32]


class _Pending:
    """The IPC writer's sink (a file to pyarrow): serialized bytes wait here until they are on disk."""

    closed = False

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


class SegmentWriter:
    """The segment being recorded: an Arrow IPC *stream* file `<stem>.arrows` in data_dir (crash-readable:
    every record batch already written can be read back after a kill -9), turned into Parquet on rotation.
    """

    def __init__(
        self,
        data_dir: Path,
        channels: Sequence[str],
        settings: LoggerSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._dir = data_dir
        self._schema = telemetry_schema(channels)
        self._width = len(channels)
        self._settings = settings
        self._clock = clock
        self._last_stem: tuple[datetime, int] | None = None
        self._new_segment()

    def _new_segment(self) -> None:
        self._start: float | None = None  # clock() at the segment's first append
        self._chunks: list[Chunk] = []
        self._chunk_rows = 0
        self._sink = _Pending()
        self._sink_rows = 0
        self._writer: pa.RecordBatchStreamWriter | None = None
        self._path: Path | None = None
        self._fd: int | None = None
        self._size = 0  # bytes of the file known to be on disk
        self._intervals = IntervalSet()
        self._unwritten = IntervalSet()  # the buffered rows' seqs

    @property
    def buffered_rows(self) -> int:
        """Rows appended but not yet on disk."""
        return self._chunk_rows + self._sink_rows

    @property
    def path(self) -> Path | None:
        """The open segment's `.arrows` file (None until its first flush with data)."""
        return self._path

    def intervals(self) -> Intervals:
        """The seq intervals the open segment holds, buffered rows included."""
        return self._intervals.intervals()

    def unwritten(self) -> Intervals:
        """The seq intervals of the buffered rows: what a stop would lose if the disk refuses them."""
        return self._unwritten.intervals()

    def append(self, session: str, first_seq: int, t: NDArray[np.float64], data: NDArray[np.float32]) -> None:
        """Buffer rows `seq = first_seq + i` (copies: the caller may reuse its arrays).

        `t` is UNIX seconds, stored to the microsecond; a non-finite `t` is stored as a null timestamp.
        """
        n = len(t)
        if t.ndim != 1 or data.shape != (n, self._width):
            raise ValueError(f"t {t.shape} and data {data.shape} must be (n,) and (n, {self._width})")
        if not session or first_seq < 0:
            raise ValueError(f"session {session!r} must be non-empty, first_seq {first_seq} >= 0")
        if n == 0:
            return
        if self._start is None:
            self._start = self._clock()
        self._chunks.append(Chunk(session, first_seq, np.array(t, np.float64), np.array(data, np.float32)))
        self._chunk_rows += n
        self._intervals.add(session, first_seq, first_seq + n - 1)
        self._unwritten.add(session, first_seq, first_seq + n - 1)

    def flush(self) -> None:
        """Buffered rows to the end of the stream file, then fsync; opens the file on the first rows.

        On OSError nothing is lost: the rows stay buffered and the next flush writes them once.
        """
        if self._chunk_rows == 0 and not self._sink.data:
            return
        if self._fd is None:
            self._open()
        if self._chunks:
            if self._writer is None:
                self._writer = pa.ipc.new_stream(self._sink, self._schema)
            self._writer.write_batch(self._record_batch())
            self._sink_rows += self._chunk_rows
            self._chunks, self._chunk_rows = [], 0
        self._write_pending()

    def due(self, now: float) -> bool:
        """Rotation is due: `rotate_s` since the segment's first row, or its file passed `rotate_bytes`."""
        if self._start is None:
            return False
        return now - self._start >= self._settings.rotate_s or self._size >= self._settings.rotate_bytes

    def close_segment(self) -> Path | None:
        """Flush and close the segment (fast); its `.arrows`, or None if it held no rows.

        The next append starts a new segment. Convert the returned file with `convert_segment`.
        """
        if self._start is None:
            return None
        self.flush()
        path, fd = self._path, self._fd
        self._new_segment()
        if fd is not None:
            os.close(fd)
        return path

    def rotate(self) -> Path | None:
        """`close_segment` then `convert_segment`: the Parquet file, or None if the segment was empty."""
        arrows = self.close_segment()
        return None if arrows is None else convert_segment(arrows, self._settings)

    def _open(self) -> None:
        assert self._start is not None
        self._dir.mkdir(parents=True, exist_ok=True)
        start = datetime.fromtimestamp(self._start, UTC).replace(microsecond=0)
        n = _next_free_n(self._dir, start)
        if self._last_stem is not None and self._last_stem[0] == start:
            n = max(n, self._last_stem[1] + 1)
        while True:
            path = (self._dir / parquet_name(start, n)).with_suffix(SEGMENT_SUFFIX)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                n += 1
                continue
            break
        try:
            _fsync_dir(self._dir)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._path, self._fd, self._last_stem = path, fd, (start, n)

    def _record_batch(self) -> pa.RecordBatch:
        return rows_batch(self._schema, self._chunks)

    def _write_pending(self) -> None:
        """The sink's bytes at the file's durable end, then fsync. A failed attempt is overwritten by
        the next (same offset), and cut off meanwhile, so the file never holds a torn batch for long."""
        assert self._fd is not None
        data = memoryview(self._sink.data)
        written = 0
        try:
            while written < len(data):
                written += os.pwrite(self._fd, data[written:], self._size + written)
            os.fsync(self._fd)
        except OSError:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                log.warning("could not cut a failed write off %s; the next flush overwrites it", self._path)
            raise
        finally:
            data.release()
        self._size += written
        self._sink.data.clear()
        self._sink_rows = 0
        if not self._chunks:  # every buffered row is on disk
            self._unwritten = IntervalSet()


def convert_segment(arrows: Path, settings: LoggerSettings) -> Path | None:
    """A segment's IPC stream to `<stem>.parquet`, atomically; deletes the `.arrows` once that is durable.

    Reads every complete record batch and ignores a torn tail (a kill -9 mid-write). Returns None, and
    removes the file, if it holds no rows. Never leaves a partial `.parquet`, nor on error a `.tmp`.
    ValueError if the stream is not telemetry (the file stays). Memory: about the `.arrows`'s size.
    """
    read = read_stream(arrows.read_bytes())
    schema, batches = read.schema, read.batches
    channels = [] if schema is None else channels_of(schema)
    batches = [batch for batch in batches if batch.num_rows]
    if schema is None or not batches:
        log.info("%s holds no complete record batch: removed", arrows.name)
        arrows.unlink()
        _fsync_dir(arrows.parent)
        return None
    final = arrows.with_suffix(".parquet")
    tmp = final.with_name(final.name + TMP_SUFFIX)
    recording = schema.with_metadata(recording_metadata(channels, _intervals(batches)))
    try:
        _write_parquet(tmp, recording, batches, settings)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(final.parent)
    arrows.unlink()
    _fsync_dir(arrows.parent)
    return final


def recover(data_dir: Path, settings: LoggerSettings) -> list[Path]:
    """On start, before any SegmentWriter: delete stale `.tmp` files and convert every leftover segment.

    Returns the Parquet files made. A segment that is not a telemetry stream is logged and left alone;
    OSError propagates.
    """
    if not data_dir.is_dir():
        return []
    for tmp in data_dir.glob(f"sensor_log_*{TMP_SUFFIX}"):
        if parse_name(tmp.name.removesuffix(TMP_SUFFIX)) is not None:
            log.info("removing %s, left by an interrupted conversion", tmp.name)
            tmp.unlink()
    made = []
    for arrows in sorted(data_dir.glob(f"sensor_log_*{SEGMENT_SUFFIX}")):
        if parse_name(arrows.with_suffix(".parquet").name) is None:
            continue
        try:
            parquet = convert_segment(arrows, settings)
        except ValueError as exc:  # pa.ArrowInvalid is one
            log.error("cannot convert %s, left as it is: %s", arrows.name, exc)
            continue
        if parquet is not None:
            log.info("recovered %s", parquet.name)
            made.append(parquet)
    return made


def _intervals(batches: list[pa.RecordBatch]) -> Intervals:
    intervals = IntervalSet()
    for batch in batches:
        intervals.add_batch(batch)
    return intervals.intervals()


def rows_batch(schema: pa.Schema, chunks: Sequence[Chunk]) -> pa.RecordBatch:
    """The chunks, in order, as one record batch of the telemetry schema `schema`."""
    lengths = np.array([len(c.t) for c in chunks])
    t = np.concatenate([c.t for c in chunks])
    micros = np.round(t * 1e6)
    finite = np.isfinite(micros)
    timestamps = pa.array(
        np.where(finite, micros, 0).astype(np.int64),
        type=schema.field("timestamp").type,
        mask=None if finite.all() else ~finite,
    )
    # row i of the batch, in chunk k: seq = first_seq[k] + i - (rows before chunk k)
    first_seq = np.array([c.first_seq for c in chunks], np.int64)
    offsets = np.repeat(first_seq - (np.cumsum(lengths) - lengths), lengths)
    seq = pa.array((offsets + np.arange(len(t), dtype=np.int64)).astype(np.uint64))
    names = list(dict.fromkeys(c.session for c in chunks))
    codes = np.repeat(np.array([names.index(c.session) for c in chunks], np.int32), lengths)
    session = pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(names, pa.string()))
    columns = np.ascontiguousarray(np.concatenate([c.data for c in chunks]).T)
    return pa.record_batch(
        [timestamps, seq, session, *(pa.array(column) for column in columns)], schema=schema
    )


def _write_parquet(
    path: Path, schema: pa.Schema, batches: list[pa.RecordBatch], settings: LoggerSettings
) -> None:
    """The batches as a recording of `schema` (with its metadata) to `path`, fsynced."""
    table = pa.Table.from_batches(batches, schema)
    with pq.ParquetWriter(path, schema, **write_options(schema, settings.compression_level)) as writer:
        writer.write_table(table, row_group_size=settings.row_group_rows)
    _fsync_file(path)


def _next_free_n(data_dir: Path, start: datetime) -> int:
    """One more than the highest `n` any file of `data_dir` uses for this second (0 if none)."""
    prefix = parquet_name(start, 0).removesuffix("0.parquet")
    used = [-1]
    for path in data_dir.glob(f"{prefix}*"):
        stem = path.name.split(".", 1)[0]
        parsed = parse_name(f"{stem}.parquet")
        if parsed is not None:
            used.append(parsed[1])
    return max(used) + 1


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
