"""The open segment: round trip to Parquet, recovery after a real kill -9, torn tails, names, disk errors."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.recording import Intervals, merge_intervals, read_intervals
from services.common.settings import PROJECT_ROOT, LoggerSettings
from services.logger.segments import SegmentWriter, convert_segment, recover

CHANNELS = ("P1", "P2", "THRUST", "ISP")
SETTINGS = LoggerSettings()
T0 = 1_780_000_000.0
NOW = T0 + 0.5  # a fixed clock: every segment starts in the same second


def block(first_seq: int, n: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]:
    """Samples that say which they are: t = T0 + seq / 10 kHz, channel k = seq + k / 4, ISP NaN on odd seq."""
    seq = np.arange(first_seq, first_seq + n, dtype=np.float64)
    data = (seq[:, None] + np.arange(len(CHANNELS)) / 4).astype(np.float32)
    data[seq % 2 == 1, -1] = np.nan
    return T0 + seq / 10_000, data


@dataclass
class Appended:
    """What a test appended, in order: the expected content of the recording."""

    sessions: list[str]
    seq: list[npt.NDArray[np.int64]]
    t: list[npt.NDArray[np.float64]]
    data: list[npt.NDArray[np.float32]]

    @classmethod
    def empty(cls) -> Appended:
        return cls([], [], [], [])

    def add(self, writer: SegmentWriter, session: str, first_seq: int, n: int) -> None:
        t, data = block(first_seq, n)
        writer.append(session, first_seq, t, data)
        self.sessions += [session] * n
        self.seq.append(np.arange(first_seq, first_seq + n))
        self.t.append(t)
        self.data.append(data)

    def assert_table(self, table: pa.Table) -> None:
        assert table.column("session").to_pylist() == self.sessions
        np.testing.assert_array_equal(table.column("seq").to_numpy(), np.concatenate(self.seq))
        micros = table.column("timestamp").cast(pa.int64()).to_numpy()
        np.testing.assert_array_equal(micros, np.round(np.concatenate(self.t) * 1e6).astype(np.int64))
        values = np.stack([table.column(name).to_numpy() for name in CHANNELS], axis=1)
        # bit for bit, NaN included
        np.testing.assert_array_equal(values.view(np.uint32), np.concatenate(self.data).view(np.uint32))


def writer_in(data_dir: Path, settings: LoggerSettings = SETTINGS) -> SegmentWriter:
    return SegmentWriter(data_dir, CHANNELS, settings, clock=lambda: NOW)


def files(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_dir.iterdir())


# --- round trip -------------------------------------------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["run-a", "run-b"]), st.integers(0, 3), st.integers(1, 300)),
        st.just("flush"),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(operations)
def test_round_trip(ops: list[tuple[str, int, int] | str]) -> None:
    """append -> flush -> rotate -> read equals the input; intervals (with gaps) in the footer."""
    with tempfile.TemporaryDirectory() as tmp:
        writer = writer_in(Path(tmp))
        appended = Appended.empty()
        next_seq: dict[str, int] = {}
        expected: Intervals = {}
        for op in ops:
            if isinstance(op, str):  # "flush"
                writer.flush()
                assert writer.buffered_rows == 0
                continue
            session, gap, n = op
            first = next_seq.get(session, 0) + gap
            appended.add(writer, session, first, n)
            next_seq[session] = first + n
            expected[session] = merge_intervals([*expected.get(session, []), (first, first + n - 1)])
        assert writer.intervals() == expected
        parquet = writer.rotate()
        if not expected:
            assert parquet is None
            assert files(Path(tmp)) == []
            return
        assert parquet is not None
        assert files(Path(tmp)) == [parquet.name]
        assert read_intervals(parquet) == expected
        appended.assert_table(pq.read_table(parquet))
        assert writer.path is None
        assert writer.intervals() == {}


def test_parquet_encodings_and_row_groups(tmp_path: Path) -> None:
    writer = writer_in(tmp_path)
    appended = Appended.empty()
    for first in range(0, 250_000, 25_000):
        appended.add(writer, "s", first, 25_000)
        writer.flush()
    parquet = writer.rotate()
    assert parquet is not None
    metadata = pq.ParquetFile(parquet).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [
        100_000,
        100_000,
        50_000,
    ]
    group = metadata.row_group(0)
    columns = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    for name in CHANNELS:
        assert "BYTE_STREAM_SPLIT" in columns[name].encodings
        assert not {"RLE_DICTIONARY", "PLAIN_DICTIONARY"} & set(columns[name].encodings)
        assert columns[name].compression == "ZSTD"
    assert "RLE_DICTIONARY" in columns["session"].encodings
    assert columns["seq"].statistics.min == 0
    assert columns["seq"].statistics.max == 99_999
    appended.assert_table(pq.read_table(parquet))


def test_empty_segment_makes_no_file(tmp_path: Path) -> None:
    writer = writer_in(tmp_path)
    writer.flush()
    assert writer.close_segment() is None
    assert writer.rotate() is None
    assert writer.path is None
    assert files(tmp_path) == []


def test_append_refuses_misshapen_rows(tmp_path: Path) -> None:
    writer = writer_in(tmp_path)
    t, data = block(0, 10)
    with pytest.raises(ValueError, match="must be"):
        writer.append("s", 0, t, data[:, :2])
    with pytest.raises(ValueError, match="first_seq"):
        writer.append("s", -1, t, data)
    assert writer.buffered_rows == 0


def test_due_by_time_and_by_size(tmp_path: Path) -> None:
    clock = [T0]
    writer = SegmentWriter(
        tmp_path, CHANNELS, LoggerSettings(rotate_s=10, rotate_bytes=1 << 20), clock=lambda: clock[0]
    )
    assert not writer.due(T0 + 1000)  # nothing recorded: nothing to rotate
    writer.append("s", 0, *block(0, 100))
    assert not writer.due(T0 + 9.9)
    assert writer.due(T0 + 10)
    writer.close_segment()
    clock[0] = T0 + 50
    writer.append("s", 100, *block(100, 40_000))
    writer.flush()
    assert writer.path is not None
    assert writer.path.stat().st_size >= 1 << 20
    assert writer.due(T0 + 50)


# --- names --------------------------------------------------------------------------------------------


def test_names_never_repeat(tmp_path: Path) -> None:
    writer = writer_in(tmp_path)
    made = []
    for i in range(4):  # four rotations in the same second
        writer.append("s", i * 10, *block(i * 10, 10))
        parquet = writer.rotate()
        assert parquet is not None
        made.append(parquet.name)
    assert made == [f"sensor_log_20260528_202640_{n}.parquet" for n in range(4)]
    # a file of another writer (or an earlier run) with a higher n, even a segment or a .tmp, is respected
    (tmp_path / "sensor_log_20260528_202640_7.arrows").touch()
    other = writer_in(tmp_path)
    other.append("s", 0, *block(0, 10))
    other.flush()
    assert other.path is not None
    assert other.path.name == "sensor_log_20260528_202640_8.arrows"
    # deleting the newest file does not make a name come back
    (tmp_path / "sensor_log_20260528_202640_7.arrows").unlink()
    arrows = other.close_segment()
    assert arrows is not None
    convert_segment(arrows, SETTINGS)
    (tmp_path / "sensor_log_20260528_202640_8.parquet").unlink()
    other.append("s", 10, *block(10, 10))
    parquet = other.rotate()
    assert parquet is not None
    assert parquet.name == "sensor_log_20260528_202640_9.parquet"


def test_two_segments_convert_while_the_next_records(tmp_path: Path) -> None:
    """close_segment is the hot-path half: the next segment records while the last one converts."""
    writer = writer_in(tmp_path)
    first, second = Appended.empty(), Appended.empty()
    first.add(writer, "s", 0, 500)
    closed = writer.close_segment()
    second.add(writer, "s", 500, 500)
    writer.flush()
    assert closed is not None
    assert writer.path is not None
    assert writer.path != closed
    parquet = convert_segment(closed, SETTINGS)
    assert parquet is not None
    first.assert_table(pq.read_table(parquet))
    assert read_intervals(parquet) == {"s": [(0, 499)]}
    assert writer.intervals() == {"s": [(500, 999)]}
    last = writer.rotate()
    assert last is not None
    second.assert_table(pq.read_table(last))


# --- crashes ------------------------------------------------------------------------------------------


def stream_with_flush_sizes(data_dir: Path, flushes: int, rows: int) -> tuple[Path, list[int]]:
    """A segment left open (as by a crash) after `flushes` flushes; its size after each."""
    writer = writer_in(data_dir)
    sizes = []
    for i in range(flushes):
        writer.append("s", i * rows, *block(i * rows, rows))
        writer.flush()
        assert writer.path is not None
        sizes.append(writer.path.stat().st_size)
    assert writer.path is not None
    return writer.path, sizes


@pytest.fixture(scope="module")
def open_stream(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[int], str]:
    arrows, sizes = stream_with_flush_sizes(tmp_path_factory.mktemp("stream"), flushes=4, rows=50)
    return arrows.read_bytes(), sizes, arrows.name


@settings(max_examples=60, deadline=None)
@given(cut=st.floats(0, 1))
def test_torn_tail_is_ignored(open_stream: tuple[bytes, list[int], str], cut: float) -> None:
    """A stream cut anywhere converts to exactly the record batches wholly before the cut."""
    stream, sizes, name = open_stream
    length = int(cut * len(stream))
    whole = sum(1 for size in sizes if size <= length)
    with tempfile.TemporaryDirectory() as tmp:
        arrows = Path(tmp) / name
        arrows.write_bytes(stream[:length])
        parquet = convert_segment(arrows, SETTINGS)
        if whole == 0:
            assert parquet is None
            assert files(Path(tmp)) == []
            return
        assert parquet is not None
        assert files(Path(tmp)) == [parquet.name]
        assert pq.read_table(parquet).column("seq").to_pylist() == list(range(whole * 50))
        assert read_intervals(parquet) == {"s": [(0, whole * 50 - 1)]}


CHILD = """
import sys
from pathlib import Path
from services.common.settings import LoggerSettings
from services.logger.segments import SegmentWriter
from tests.test_segments import CHANNELS, block

writer = SegmentWriter(Path(sys.argv[1]), CHANNELS, LoggerSettings())
seq = 0
while True:
    for _ in range(10):
        writer.append("crash", seq, *block(seq, 2_000))
        seq += 2_000
    writer.flush()
    print(seq, flush=True)
"""


@pytest.mark.parametrize("flushes", [1, 4])
def test_kill_9_then_recover(tmp_path: Path, flushes: int) -> None:
    """A real child process appending and flushing is SIGKILLed mid-way: every flushed row, once."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    try:
        reported = [int(child.stdout.readline()) for _ in range(flushes)][-1]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    child.stdout.close()
    assert [p.suffix for p in tmp_path.iterdir()] == [".arrows"]

    made = recover(tmp_path, SETTINGS)
    assert len(made) == 1
    assert files(tmp_path) == [made[0].name]
    table = pq.read_table(made[0])
    seq = table.column("seq").to_numpy()
    # what was flushed before the report, and maybe flushes after it, never a partial one
    assert len(seq) >= reported
    assert len(seq) % 20_000 == 0
    np.testing.assert_array_equal(seq, np.arange(len(seq)))
    t, data = block(0, len(seq))
    values = np.stack([table.column(name).to_numpy() for name in CHANNELS], axis=1)
    np.testing.assert_array_equal(values.view(np.uint32), data.view(np.uint32))
    np.testing.assert_array_equal(
        table.column("timestamp").cast(pa.int64()).to_numpy(), np.round(t * 1e6).astype(np.int64)
    )
    assert read_intervals(made[0]) == {"crash": [(0, len(seq) - 1)]}


def test_recover_cleans_up_and_keeps_what_it_does_not_own(tmp_path: Path) -> None:
    arrows, _ = stream_with_flush_sizes(tmp_path, flushes=2, rows=10)
    stale = tmp_path / "sensor_log_20260528_202640_3.parquet.tmp"
    stale.write_bytes(b"half a parquet")
    foreign = ["notes.tmp", "sensor_log_notes.arrows", "other.arrows"]
    for name in foreign:
        (tmp_path / name).write_bytes(b"x")
    not_telemetry = tmp_path / "sensor_log_20260528_202640_5.arrows"
    with pa.ipc.new_stream(not_telemetry, pa.schema([("x", pa.int8())])) as stream:
        stream.write_batch(pa.record_batch([pa.array([1], pa.int8())], names=["x"]))
    empty = tmp_path / "sensor_log_20260528_202640_6.arrows"
    empty.touch()

    made = recover(tmp_path, SETTINGS)
    assert [p.name for p in made] == [arrows.with_suffix(".parquet").name]
    assert files(tmp_path) == sorted([*foreign, not_telemetry.name, made[0].name])
    assert pq.read_table(made[0]).num_rows == 20
    assert recover(tmp_path, SETTINGS) == []
    assert recover(tmp_path / "absent", SETTINGS) == []


def test_converting_twice_after_a_crash_between_rename_and_delete(tmp_path: Path) -> None:
    arrows, _ = stream_with_flush_sizes(tmp_path, flushes=2, rows=10)
    kept = tmp_path / "copy"
    shutil.copy(arrows, kept)
    parquet = convert_segment(arrows, SETTINGS)
    assert parquet is not None
    os.replace(kept, arrows)  # as if the crash came before the .arrows was deleted
    assert recover(tmp_path, SETTINGS) == [parquet]
    assert files(tmp_path) == [parquet.name]
    assert pq.read_table(parquet).column("seq").to_pylist() == list(range(20))


# --- disk errors --------------------------------------------------------------------------------------


@contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Writes past `limit` bytes of any file fail (EFBIG, after a partial write), as a full disk fails them
    (ENOSPC). RLIMIT_FSIZE binds root too, unlike a read-only mode, and needs no mount."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_flush_failure_keeps_rows_for_the_retry(tmp_path: Path) -> None:
    writer = writer_in(tmp_path)
    appended = Appended.empty()
    appended.add(writer, "s", 0, 1000)
    writer.flush()
    assert writer.path is not None
    durable = writer.path.stat().st_size
    appended.add(writer, "s", 1000, 1000)
    appended.add(writer, "s", 2500, 1000)
    with file_size_limit(durable + 100), pytest.raises(OSError):
        writer.flush()  # a partial write, then EFBIG
    assert writer.buffered_rows == 2000
    assert writer.path.stat().st_size == durable  # the torn batch is cut off
    with file_size_limit(durable + 100), pytest.raises(OSError):
        writer.close_segment()
    assert writer.path is not None
    appended.add(writer, "s", 3500, 10)
    writer.flush()  # the disk is back: written once, in order
    assert writer.buffered_rows == 0
    parquet = writer.rotate()
    assert parquet is not None
    appended.assert_table(pq.read_table(parquet))
    assert read_intervals(parquet) == {"s": [(0, 1999), (2500, 3509)]}


def test_unwritable_directory_keeps_rows(tmp_path: Path) -> None:
    """The segment's file cannot even be created (data_dir is a file): rows wait, then go to disk."""
    data_dir = tmp_path / "data"
    data_dir.write_bytes(b"")
    writer = writer_in(data_dir)
    appended = Appended.empty()
    appended.add(writer, "s", 0, 100)
    with pytest.raises(OSError):
        writer.flush()
    assert writer.buffered_rows == 100
    assert writer.path is None
    data_dir.unlink()
    writer.flush()
    parquet = writer.rotate()
    assert parquet is not None
    appended.assert_table(pq.read_table(parquet))


def test_conversion_failure_leaves_the_segment_and_no_parquet(tmp_path: Path) -> None:
    writer = writer_in(tmp_path)
    appended = Appended.empty()
    appended.add(writer, "s", 0, 20_000)
    arrows = writer.close_segment()
    assert arrows is not None
    with file_size_limit(4096), pytest.raises(OSError):
        convert_segment(arrows, SETTINGS)
    assert files(tmp_path) == [arrows.name]
    parquet = convert_segment(arrows, SETTINGS)
    assert parquet is not None
    assert files(tmp_path) == [parquet.name]
    appended.assert_table(pq.read_table(parquet))
