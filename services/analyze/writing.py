"""Writing recordings as the logger does (services/common/recording.py): schema, options, metadata."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from services.common import recording
from services.common.settings import LoggerSettings


def plain_schema(channels: Sequence[str]) -> pa.Schema:
    """The telemetry schema with `session` as plain strings: tables from several files merge in it."""
    schema = recording.telemetry_schema(channels)
    index = schema.get_field_index("session")
    return schema.set(index, pa.field("session", pa.string(), nullable=False))


def encode(table: pa.Table) -> pa.Table:
    """A plain-schema table in the telemetry schema, with the `rcs.*` metadata of what it holds."""
    channels = table.schema.names[len(recording.FIXED_COLUMNS) :]
    schema = recording.telemetry_schema(channels)
    session = table.column("session").dictionary_encode().cast(schema.field("session").type)
    table = table.set_column(2, schema.field("session"), session).cast(schema)
    intervals = recording.IntervalSet()
    for batch in table.to_batches():
        intervals.add_batch(batch)
    return table.replace_schema_metadata(recording.recording_metadata(channels, intervals.intervals()))


def write_recording(
    parts: Iterable[pa.Table],
    out: Path,
    schema: pa.Schema,
    settings: LoggerSettings,
    advance: Callable[[int], None] | None = None,
) -> None:
    """Tables in `schema` (the telemetry schema with its `rcs.*` metadata) as one recording file, in
    row groups of the logger's size; written aside, then renamed into place like the logger's."""
    partial = out.with_name(out.name + ".tmp")
    options = recording.write_options(schema, settings.compression_level)
    try:
        with pq.ParquetWriter(partial, schema, **options) as writer:
            for part in parts:
                writer.write_table(part, row_group_size=settings.row_group_rows)
                if advance is not None:
                    advance(part.num_rows)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out)
