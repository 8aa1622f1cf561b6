"""The telemetry recording on disk: the contract between the logger, the analysis tool and the gateway.

`data_dir` holds one Parquet file per segment of recording, named `sensor_log_<UTC start>_<n>.parquet`
(`parquet_name`). Each file's columns are `timestamp` (µs, UTC), `seq` (the sample's index within its
session, see docs/protocol.md), `session`, then one float32 column per channel in the meta's order
(`telemetry_schema`). Its key-value metadata says what it holds without reading the data:

    rcs.format    "1"
    rcs.channels  JSON list of the channel columns
    rcs.sessions  JSON {session: [[first_seq, last_seq], ...]}: the seq intervals held, inclusive

A file only ever appears complete (written elsewhere, then renamed): a `sensor_log_*.parquet` that exists
is whole. `write_options` is the one place that decides how the columns are encoded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FORMAT_VERSION = "1"
FILE_PATTERN = "sensor_log_*.parquet"
SEGMENT_PATTERN = "sensor_log_*.arrows"  # the logger's open segment (services/logger/segments.py)
FIXED_COLUMNS = ("timestamp", "seq", "session")
META_FORMAT = "rcs.format"
META_CHANNELS = "rcs.channels"
META_SESSIONS = "rcs.sessions"

_NAME = re.compile(r"sensor_log_(\d{8}_\d{6})_(0|[1-9][0-9]*)\.parquet")
_STAMP = "%Y%m%d_%H%M%S"

Intervals = dict[str, list[tuple[int, int]]]
"""Per session, the sorted, disjoint, non-adjacent inclusive seq intervals [first, last]."""


def telemetry_schema(channels: Sequence[str]) -> pa.Schema:
    """The columns of a recording (and of the logger's open segment) for these channels, in order."""
    if not channels:
        raise ValueError("a recording needs at least one channel")
    names = [*FIXED_COLUMNS, *channels]
    if len(set(names)) != len(names):
        raise ValueError(f"channel names must be unique and not one of {FIXED_COLUMNS}: {list(channels)}")
    return pa.schema(
        [
            pa.field("timestamp", pa.timestamp("us", tz="UTC")),
            pa.field("seq", pa.uint64(), nullable=False),
            pa.field("session", pa.dictionary(pa.int32(), pa.string()), nullable=False),
            *(pa.field(name, pa.float32()) for name in channels),
        ]
    )


def channels_of(schema: pa.Schema) -> list[str]:
    """The channel columns of a telemetry schema; ValueError if `schema` is not one."""
    names = list(schema.names)
    channels = names[len(FIXED_COLUMNS) :]
    if tuple(names[: len(FIXED_COLUMNS)]) != FIXED_COLUMNS or not channels:
        raise ValueError(f"not a telemetry schema: columns {names}")
    if not schema.remove_metadata().equals(telemetry_schema(channels)):
        raise ValueError(f"not a telemetry schema: {schema}")
    return channels


def parquet_name(start: datetime, n: int) -> str:
    """`sensor_log_<yyyymmdd_HHMMSS UTC>_<n>.parquet`; `start` must be timezone-aware."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return f"sensor_log_{start.astimezone(UTC).strftime(_STAMP)}_{n}.parquet"


def parse_name(name: str) -> tuple[datetime, int] | None:
    """(start, n) of a recording's file name, or None if `name` is not exactly one."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    try:
        start = datetime.strptime(match[1], _STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None
    return start, int(match[2])


def is_recording_name(name: str) -> bool:
    return parse_name(name) is not None


def write_options(schema: pa.Schema, compression_level: int) -> dict[str, Any]:
    """Keyword arguments of `pq.ParquetWriter` for a recording of `schema` (row groups: the caller's).

    zstd; dictionary encoding for `session` only. Noisy float32 samples hardly repeat, so a dictionary
    costs more than it saves (a file larger than the raw samples); BYTE_STREAM_SPLIT instead groups the
    floats' exponent and mantissa bytes so zstd finds their redundancy. `timestamp` and `seq` increase
    by nearly constant steps: DELTA_BINARY_PACKED stores them in a few bits per sample.
    """
    encoding = dict.fromkeys(channels_of(schema), "BYTE_STREAM_SPLIT")
    encoding.update(timestamp="DELTA_BINARY_PACKED", seq="DELTA_BINARY_PACKED")
    return {
        "compression": "zstd",
        "compression_level": compression_level,
        "use_dictionary": ["session"],
        "column_encoding": encoding,
        "write_statistics": True,
        "store_schema": True,
    }


class IntervalSet:
    """Collects seq runs per session; `intervals()` merges them (overlapping or adjacent runs join)."""

    def __init__(self) -> None:
        self._runs: dict[str, list[tuple[int, int]]] = {}

    def add(self, session: str, first: int, last: int) -> None:
        runs = self._runs.setdefault(session, [])
        if runs and runs[-1][0] <= first <= runs[-1][1] + 1 and last >= runs[-1][1]:
            runs[-1] = (runs[-1][0], last)  # the usual case: the run continues
        else:
            runs.append((first, last))

    def add_batch(self, batch: pa.RecordBatch) -> None:
        """Every (session, seq) of a telemetry record batch."""
        if batch.num_rows == 0:
            return
        session = batch.column("session")
        codes = session.indices.to_numpy(zero_copy_only=False)
        seq = batch.column("seq").to_numpy().astype(np.int64)
        # a run ends where the session changes or seq does not continue
        ends = np.flatnonzero((np.diff(codes) != 0) | (np.diff(seq) != 1)) + 1
        starts = np.concatenate(([0], ends))
        stops = np.concatenate((ends, [len(seq)])) - 1
        names = session.dictionary.to_pylist()
        for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
            self.add(names[codes[start]], int(seq[start]), int(seq[stop]))

    def intervals(self) -> Intervals:
        return {session: merge_intervals(runs) for session, runs in self._runs.items()}


def merge_intervals(runs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in sorted(runs):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(last, merged[-1][1]))
        else:
            merged.append((first, last))
    return merged


def recording_metadata(channels: Sequence[str], intervals: Intervals) -> dict[str, str]:
    """The key-value metadata of a recording (see the module docstring)."""
    sessions = {session: [list(run) for run in runs] for session, runs in sorted(intervals.items())}
    return {
        META_FORMAT: FORMAT_VERSION,
        META_CHANNELS: json.dumps(list(channels)),
        META_SESSIONS: json.dumps(sessions, separators=(",", ":")),
    }


def read_intervals(path: Path) -> Intervals:
    """The seq intervals a recording holds, per session, from its footer alone."""
    metadata = pq.read_metadata(path).metadata or {}
    raw = metadata.get(META_SESSIONS.encode())
    if raw is None:
        raise ValueError(f"{path}: no {META_SESSIONS} metadata (not a recording?)")
    sessions = json.loads(raw)
    return {session: [(int(a), int(b)) for a, b in runs] for session, runs in sessions.items()}


@dataclass(frozen=True, slots=True)
class StreamRead:
    """What an Arrow IPC stream (an open segment) holds: its schema (None: not even that), every
    complete record batch, and whether it ended in a torn batch (a crash, or a write under way)."""

    schema: pa.Schema | None
    batches: list[pa.RecordBatch]
    torn: bool


def read_stream(stream: bytes) -> StreamRead:
    """The schema and every complete record batch of an IPC stream; a torn tail ends it.

    Parsing bytes already in memory, any error is the data's (a real read error was raised reading
    the file), so Arrow's OSError ("expected to read N bytes") is a torn tail too.
    """
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(stream))
    except (pa.ArrowInvalid, OSError):
        return StreamRead(None, [], bool(stream))
    batches = []
    while True:
        try:
            batches.append(reader.read_next_batch())
        except StopIteration:
            return StreamRead(reader.schema, batches, False)
        except (pa.ArrowInvalid, OSError):
            return StreamRead(reader.schema, batches, True)
