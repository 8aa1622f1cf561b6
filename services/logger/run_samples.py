"""One test run's `samples.parquet`: a recording like the continuous files (services/common/recording.py:
same columns, encodings and `rcs.*` metadata), plus `rcs.run`, written as the run goes.

Rows are held until `row_group_rows` are there, then written as one row group of
`samples.parquet.partial` (memory stays bounded whatever the run's length); `close` adds the key-value
metadata, closes, fsyncs and renames the file into place. Rows must come in order of seq within a
session (the caller's job); a row whose seq does not continue its session is a gap, recorded as such
in `rcs.sessions`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from services.common.recording import IntervalSet, recording_metadata, telemetry_schema, write_options
from services.logger.segments import Chunk, rows_batch

PARTIAL_SUFFIX = ".partial"
CUT_SUFFIX = ".cut.partial"


class RunSamples:
    def __init__(self, path: Path, channels: tuple[str, ...], *, row_group_rows: int, compression_level: int):
        self.path = path
        self.channels = channels
        self._schema = telemetry_schema(channels)
        self._partial = path.with_name(path.name + PARTIAL_SUFFIX)
        self._options = write_options(self._schema, compression_level)
        self._writer = pq.ParquetWriter(self._partial, self._schema, **self._options)
        self._row_group_rows = row_group_rows
        self._held: list[Chunk] = []
        self._held_rows = 0
        self.intervals = IntervalSet()
        self.rows = 0
        self.first: tuple[str, int] | None = None  # (session, seq) of the first row
        self.last: tuple[str, int] | None = None
        self.first_t: float | None = None
        self.last_t: float | None = None

    def append(
        self, session: str, first_seq: int, t: npt.NDArray[np.float64], data: npt.NDArray[np.float32]
    ) -> None:
        n = len(t)
        if n == 0:
            return
        self._held.append(Chunk(session, first_seq, t, data))
        self._held_rows += n
        self.intervals.add(session, first_seq, first_seq + n - 1)
        self.rows += n
        if self.first is None:
            self.first, self.first_t = (session, first_seq), float(t[0])
        self.last, self.last_t = (session, first_seq + n - 1), float(t[-1])
        if self._held_rows >= self._row_group_rows:
            self._write_held()

    def cut_after(self, end: float) -> None:
        """Drop the rows taken after `end` (UNIX s): the run's end may be known only after later live
        samples were written (its state is QoS 1, telemetry QoS 0: the broker does not keep them in
        order). The file written so far is copied a row group at a time, without them."""
        self._write_held()
        if self.last_t is None or self.last_t <= end:
            return
        self._writer.close()
        source, self._partial = self._partial, self.path.with_name(self.path.name + CUT_SUFFIX)
        self._writer = pq.ParquetWriter(self._partial, self._schema, **self._options)
        self.intervals, self.rows, self.first, self.last, self.first_t, self.last_t = (
            IntervalSet(),
            0,
            None,
            None,
            None,
            None,
        )
        limit = round(end * 1e6)
        reader = pq.ParquetFile(source)
        for index in range(reader.num_row_groups):
            group = reader.read_row_group(index)
            micros = group.column("timestamp").cast(pa.int64()).fill_null(0).to_numpy()
            kept = group.filter(pa.array(micros <= limit))
            if kept.num_rows:
                self._writer.write_table(kept, row_group_size=self._row_group_rows)
                self._count(kept)
        source.unlink()

    def _count(self, table: pa.Table) -> None:
        for batch in table.to_batches():
            if not batch.num_rows:
                continue
            self.intervals.add_batch(batch)
            self.rows += batch.num_rows
            seq = batch.column("seq")
            sessions = batch.column("session")
            micros = batch.column("timestamp").cast(pa.int64())
            if self.first is None:
                self.first, self.first_t = (sessions[0].as_py(), seq[0].as_py()), micros[0].as_py() / 1e6
            self.last, self.last_t = (sessions[-1].as_py(), seq[-1].as_py()), micros[-1].as_py() / 1e6

    def close(self, run_metadata: dict[str, str]) -> Path:
        """Write what is held, the metadata (`rcs.*` and `run_metadata`), and put the file in place."""
        self._write_held()
        self._writer.add_key_value_metadata(
            recording_metadata(self.channels, self.intervals.intervals()) | run_metadata
        )
        self._writer.close()
        fd = os.open(self._partial, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self._partial, self.path)
        return self.path

    def discard(self) -> None:
        """Give up (the disk failed): close and remove the partial files."""
        try:
            self._writer.close()
        finally:
            self._partial.unlink(missing_ok=True)
            self.path.with_name(self.path.name + PARTIAL_SUFFIX).unlink(missing_ok=True)

    def _write_held(self) -> None:
        if self._held:
            held, self._held, self._held_rows = self._held, [], 0
            self._writer.write_batch(rows_batch(self._schema, held), row_group_size=self._row_group_rows)
