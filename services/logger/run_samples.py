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
import pyarrow.parquet as pq

from services.common.recording import IntervalSet, recording_metadata, telemetry_schema, write_options
from services.logger.segments import Chunk, rows_batch

PARTIAL_SUFFIX = ".partial"


class RunSamples:
    def __init__(self, path: Path, channels: tuple[str, ...], *, row_group_rows: int, compression_level: int):
        self.path = path
        self.channels = channels
        self._schema = telemetry_schema(channels)
        self._partial = path.with_name(path.name + PARTIAL_SUFFIX)
        self._writer = pq.ParquetWriter(
            self._partial, self._schema, **write_options(self._schema, compression_level)
        )
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
        """Give up (the disk failed): close and remove the partial file."""
        try:
            self._writer.close()
        finally:
            self._partial.unlink(missing_ok=True)

    def _write_held(self) -> None:
        if self._held:
            held, self._held, self._held_rows = self._held, [], 0
            self._writer.write_batch(rows_batch(self._schema, held), row_group_size=self._row_group_rows)
