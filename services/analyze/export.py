"""Merge recordings into one file: a time cut, chosen channels, sorted by (session, seq), each sample once.

The cut is held in memory (its selected columns only) to be sorted: cut long recordings to the part
you need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from rich.progress import Progress

from services.analyze import writing
from services.analyze.continuity import Keys, read_keys
from services.analyze.load import KEY_COLUMNS
from services.common.settings import LoggerSettings

Format = Literal["parquet", "csv"]
CSV_ROWS = 100_000


@dataclass(frozen=True, slots=True)
class Merged:
    table: pa.Table  # telemetry schema, session as plain strings
    duplicates: int  # rows dropped because an earlier row had the same (session, seq)


def merge(batches: Iterable[pa.RecordBatch], channels: Sequence[str]) -> Merged:
    """Batches (key columns + `channels`) to one table sorted by (session, seq) without duplicates.

    Sessions sort in order of first appearance (chronological for files read in time order); of
    duplicate rows the first read is kept.
    """
    schema = writing.plain_schema(channels)
    table = pa.Table.from_batches([_normalised(b, schema) for b in batches], schema=schema)
    if table.num_rows == 0:
        return Merged(table, 0)
    keys = read_keys(table.select(list(KEY_COLUMNS)).to_batches())
    order = keys.order()
    keep = order[_first_of_each_key(keys, order)]
    return Merged(table.take(pa.array(keep)), len(order) - len(keep))


def _normalised(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    session = batch.column("session")
    if pa.types.is_dictionary(session.type):
        batch = batch.set_column(
            batch.schema.get_field_index("session"), "session", session.dictionary_decode()
        )
    return batch.cast(schema)


def _first_of_each_key(keys: Keys, order: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Along `order`, which rows are the first of their (session, seq)."""
    session, seq = keys.session[order], keys.seq[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (session[1:] != session[:-1]) | (seq[1:] != seq[:-1])
    return first


def write(
    merged: Merged, out: Path, fmt: Format, settings: LoggerSettings, progress: Progress | None
) -> None:
    """As a recording (the logger's schema, Parquet options and metadata), or as CSV with ISO 8601
    UTC timestamps."""
    task = progress.add_task(f"writing {out.name}", total=merged.table.num_rows) if progress else None

    def advance(rows: int) -> None:
        if progress is not None and task is not None:
            progress.advance(task, rows)

    if fmt == "csv":
        _write_csv(merged.table, out, advance)
        return
    table = writing.encode(merged.table)
    rows = settings.row_group_rows
    parts = (table.slice(offset, rows) for offset in range(0, table.num_rows, rows))
    writing.write_recording(parts, out, table.schema, settings, advance)


def _write_csv(table: pa.Table, out: Path, advance: Callable[[int], None]) -> None:
    iso = pc.strftime(table.column("timestamp"), format="%Y-%m-%dT%H:%M:%SZ")
    table = table.set_column(0, pa.field("timestamp", pa.string()), iso)
    with pa_csv.CSVWriter(out, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=CSV_ROWS):
            writer.write_batch(batch)
            advance(batch.num_rows)
