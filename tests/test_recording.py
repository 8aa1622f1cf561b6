"""The on-disk contract: schema, file names, encodings, seq intervals in the footer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.recording import (
    FILE_PATTERN,
    IntervalSet,
    is_recording_name,
    merge_intervals,
    parquet_name,
    parse_name,
    read_intervals,
    recording_metadata,
    telemetry_schema,
    write_options,
)

CHANNELS = ("P1", "THRUST", "ISP")


def test_schema_columns_and_types() -> None:
    schema = telemetry_schema(CHANNELS)
    assert schema.names == ["timestamp", "seq", "session", *CHANNELS]
    assert schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert schema.field("seq").type == pa.uint64()
    assert schema.field("session").type == pa.dictionary(pa.int32(), pa.string())
    assert all(schema.field(name).type == pa.float32() for name in CHANNELS)


@pytest.mark.parametrize("channels", [(), ("P1", "P1"), ("seq",), ("P1", "timestamp")])
def test_schema_refuses_bad_channels(channels: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="channel"):
        telemetry_schema(channels)


@given(
    start=st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(9998, 12, 31),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=3)), timezone(timedelta(hours=-7))]),
    ),
    n=st.integers(0, 10**6),
)
def test_names_round_trip(start: datetime, n: int) -> None:
    name = parquet_name(start, n)
    assert Path(name).match(FILE_PATTERN)
    assert is_recording_name(name)
    assert parse_name(name) == (start.astimezone(UTC).replace(microsecond=0), n)


def test_name_is_utc_and_second_resolution() -> None:
    start = datetime(2026, 11, 24, 16, 7, 0, 999_999, tzinfo=timezone(timedelta(hours=3)))
    assert parquet_name(start, 2) == "sensor_log_20261124_130700_2.parquet"
    with pytest.raises(ValueError, match="timezone"):
        parquet_name(datetime(2026, 11, 24), 0)


@pytest.mark.parametrize(
    "name",
    [
        "sensor_log_20261124_130700_0.parquet.tmp",
        "sensor_log_20261124_130700_0.arrows",
        "sensor_log_20261124_130700_01.parquet",
        "sensor_log_20261124_130700_-1.parquet",
        "sensor_log_20261399_130700_0.parquet",
        "sensor_log_20261124_1307_0.parquet",
        "xsensor_log_20261124_130700_0.parquet",
        "sensor_log_20261124_130700_0.parquet ",
        "sensor_log_20261124_130700.parquet",
        "notes.parquet",
    ],
)
def test_strict_names(name: str) -> None:
    assert not is_recording_name(name)
    assert parse_name(name) is None


@given(
    st.lists(st.tuples(st.sampled_from(["s1", "s2"]), st.integers(0, 300), st.integers(0, 5)), max_size=40)
)
def test_interval_set_is_the_set_of_seqs(runs: list[tuple[str, int, int]]) -> None:
    intervals = IntervalSet()
    held: dict[str, set[int]] = {}
    for session, first, length in runs:
        intervals.add(session, first, first + length)
        held.setdefault(session, set()).update(range(first, first + length + 1))
    result = intervals.intervals()
    assert result.keys() == held.keys()
    for session, runs_of_session in result.items():
        assert {s for a, b in runs_of_session for s in range(a, b + 1)} == held[session]
        # sorted, disjoint and not adjacent: the canonical form
        assert all(b1 + 1 < a2 for (_, b1), (a2, _) in pairwise(runs_of_session))
        assert merge_intervals(runs_of_session) == runs_of_session


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 60)), min_size=1, max_size=200))
def test_intervals_of_a_record_batch(rows: list[tuple[str, int]]) -> None:
    names = sorted({s for s, _ in rows})
    session = pa.DictionaryArray.from_arrays(
        pa.array([names.index(s) for s, _ in rows], pa.int32()), pa.array(names)
    )
    batch = pa.record_batch([pa.array([q for _, q in rows], pa.uint64()), session], names=["seq", "session"])
    from_batch, one_by_one = IntervalSet(), IntervalSet()
    from_batch.add_batch(batch)
    for s, q in rows:
        one_by_one.add(s, q, q)
    assert from_batch.intervals() == one_by_one.intervals()


def small_table(n: int = 1000) -> pa.Table:
    schema = telemetry_schema(CHANNELS)
    rng = np.random.default_rng(0)
    t = np.arange(n, dtype=np.int64) * 100 + 1_780_000_000_000_000
    session = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array(["s"]))
    floats = [pa.array(rng.standard_normal(n).astype(np.float32)) for _ in CHANNELS]
    columns = [pa.array(t, schema.field("timestamp").type), pa.array(np.arange(n, dtype=np.uint64)), session]
    return pa.Table.from_arrays([*columns, *floats], schema=schema)


def test_write_options_encode_floats_without_dictionary(tmp_path: Path) -> None:
    table = small_table()
    path = tmp_path / "x.parquet"
    pq.write_table(table, path, **write_options(table.schema, 3))
    metadata = pq.ParquetFile(path).metadata
    columns = metadata.row_group(0)
    encodings = {
        columns.column(i).path_in_schema: columns.column(i).encodings for i in range(columns.num_columns)
    }
    for name in CHANNELS:
        assert "BYTE_STREAM_SPLIT" in encodings[name]
        assert not {"RLE_DICTIONARY", "PLAIN_DICTIONARY"} & set(encodings[name])
    assert "RLE_DICTIONARY" in encodings["session"]
    assert "DELTA_BINARY_PACKED" in encodings["timestamp"]
    assert "DELTA_BINARY_PACKED" in encodings["seq"]
    assert all(columns.column(i).compression == "ZSTD" for i in range(columns.num_columns))
    assert columns.column(1).statistics.has_min_max


def test_read_intervals_from_the_footer(tmp_path: Path) -> None:
    table = small_table()
    intervals = {"s": [(0, 9), (20, 999)], "older": [(5, 5)]}
    schema = table.schema.with_metadata(recording_metadata(CHANNELS, intervals))
    path = tmp_path / "x.parquet"
    pq.write_table(table.cast(schema), path, **write_options(schema, 3))
    assert read_intervals(path) == intervals
    assert pq.read_schema(path).metadata[b"rcs.format"] == b"1"

    pq.write_table(table, tmp_path / "plain.parquet")
    with pytest.raises(ValueError, match=r"rcs\.sessions"):
        read_intervals(tmp_path / "plain.parquet")
