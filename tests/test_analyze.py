"""rcs-analyze through its command line, on recordings made by its own `synth` (3 s at 1 kHz).

Numbers are checked against numpy on the same files read whole with pyarrow; continuity against
the seq intervals the files' metadata declare; exports against the time cut asked for.
"""

from __future__ import annotations

import csv
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner, Result

from services.analyze.__main__ import app
from services.analyze.load import TimeWindow, find_recordings, scan, to_micros
from services.analyze.stats import summarise
from services.common import recording
from services.common.settings import load_settings

START = datetime(2026, 11, 24, 13, 7, tzinfo=UTC)
RATE_HZ = 1000
SECONDS = 3
runner = CliRunner()


def run(*args: str | Path) -> Result:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def synth(out: Path, *options: str) -> list[Path]:
    result = run("synth", "--out", out, "--minutes", str(SECONDS / 60), "--rate", str(RATE_HZ), *options)
    assert result.exit_code == 0, result.output
    return sorted(out.glob("sensor_log_*.parquet"))


@pytest.fixture(scope="module")
def gappy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s at 1 kHz in 1 s files, with 3 injected gaps."""
    out = tmp_path_factory.mktemp("gappy")
    files = synth(out, "--gaps", "3", "--rotate-s", "1", "--start", START.isoformat(), "--seed", "7")
    assert len(files) == 3
    return out


def read_all(directory: Path) -> pa.Table:
    """Every file of a directory read whole, sessions as plain strings (dictionaries differ by file)."""
    tables = [pq.read_table(p) for p in sorted(directory.glob("sensor_log_*.parquet"))]
    return pa.concat_tables(
        [t.set_column(2, "session", t.column("session").cast(pa.string())) for t in tables]
    )


def declared_intervals(directory: Path) -> dict[str, list[tuple[int, int]]]:
    runs: dict[str, list[tuple[int, int]]] = {}
    for path in sorted(directory.glob("sensor_log_*.parquet")):
        for session, intervals in recording.read_intervals(path).items():
            runs.setdefault(session, []).extend(intervals)
    return {session: recording.merge_intervals(r) for session, r in runs.items()}


def test_synth_writes_the_loggers_format(gappy: Path) -> None:
    settings = load_settings()
    files = sorted(gappy.glob("sensor_log_*.parquet"))
    assert [recording.parse_name(f.name) for f in files] == [(START.replace(second=i), 0) for i in range(3)]
    for path in files:
        schema = pq.read_schema(path)
        assert recording.channels_of(schema) == list(settings.channel_names)
        assert schema.metadata[b"rcs.format"] == b"1"
    table = read_all(gappy)
    seq = table.column("seq").to_numpy()
    held = [s for a, b in next(iter(declared_intervals(gappy).values())) for s in range(a, b + 1)]
    np.testing.assert_array_equal(seq, held)  # the metadata tells the truth
    assert 0 < SECONDS * RATE_HZ - len(seq) <= 3 * 20 * 10  # 3 gaps of at most 20 batches of 10
    t = table.column("timestamp").cast(pa.int64()).to_numpy()
    np.testing.assert_array_equal(t, to_micros(START) + seq * 1000)
    thrust = table.column("THRUST").to_numpy()
    assert thrust.max() > 200 and np.median(thrust[:500]) < 20  # a burn, and an idle start


def stats_rows(output: str) -> dict[str, list[str]]:
    names = load_settings().channel_names
    rows = {}
    for line in output.splitlines():
        cells = line.split()
        if cells and cells[0] in names:
            rows[cells[0]] = cells[1:]
    return rows


def test_stats_match_numpy(gappy: Path) -> None:
    result = run("stats", gappy)
    assert result.exit_code == 0, result.output
    table = read_all(gappy)
    rows = stats_rows(result.stdout)
    units = {c.name: c.unit for c in load_settings().channels}
    assert set(rows) == set(units)
    for name, (unit, count, nans, *numbers) in rows.items():
        values = table.column(name).to_numpy().astype(np.float64)
        valid = values[~np.isnan(values)]
        assert unit == units[name]
        assert int(count) == len(valid) and int(nans) == len(values) - len(valid)
        expected = (valid.min(), valid.max(), valid.mean(), valid.std()) if len(valid) else (np.nan,) * 4
        printed = [np.nan if n == "—" else float(n) for n in numbers]
        np.testing.assert_allclose(printed, expected, rtol=1e-5, atol=1e-9, err_msg=name)
    assert f"rows   {table.num_rows}" in result.stdout
    assert "2026-11-24 13:07:00.000 → 2026-11-24 13:07:02.999 UTC" in result.stdout
    session = table.column("session")[0].as_py()
    assert f"session {session}: {table.num_rows} rows" in result.stdout
    assert np.isnan(table.column("ISP").to_numpy()).any()  # undefined without flow: the NaN column counts


def test_streamed_statistics_equal_numpy_over_a_time_window(gappy: Path) -> None:
    """Accumulated over many small batches (Chan's merge), in a time window, to numpy's precision."""
    window = TimeWindow(to_micros(START) + 500_000, to_micros(START) + 2_500_000)
    batches = (
        small
        for batch in scan(find_recordings([gappy]), ["timestamp", "session", "P5", "ISP"], window)
        for small in (batch.slice(offset, 97) for offset in range(0, batch.num_rows, 97))
    )
    summary = summarise(batches, ["P5", "ISP"])
    table = read_all(gappy)
    t = table.column("timestamp").cast(pa.int64()).to_numpy()
    inside = (t >= window.start_us) & (t < window.end_us)
    assert summary.rows == inside.sum()
    for name in ("P5", "ISP"):
        values = table.column(name).to_numpy().astype(np.float64)[inside]
        s = summary.channels[name]
        assert s.nan_count == np.isnan(values).sum()
        expected = (np.nanmin(values), np.nanmax(values), np.nanmean(values), np.nanstd(values))
        np.testing.assert_allclose((s.minimum, s.maximum, s.mean, s.std), expected, rtol=1e-9)


def test_check_reports_the_injected_gaps_and_exits_1(gappy: Path) -> None:
    result = run("check", gappy)
    assert result.exit_code == 1, result.output
    intervals = next(iter(declared_intervals(gappy).values()))
    gaps = list(zip([b for _, b in intervals[:-1]], [a for a, _ in intervals[1:]], strict=True))
    assert len(gaps) == 3
    assert f"{len(gaps)} gap(s), 0 duplicate(s)" in result.stdout
    missing = sum(nxt - after - 1 for after, nxt in gaps)
    assert re.search(rf"\s{len(gaps)}\s+{missing}\s+0\s*$", result.stdout, re.MULTILINE)
    listed = re.findall(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+\d\d:\d\d:", result.stdout, re.MULTILINE)
    assert sorted((int(a), int(n)) for a, n, _ in listed) == sorted(gaps)
    assert all(int(m) == int(n) - int(a) - 1 for a, n, m in listed)


def test_check_of_a_continuous_recording_exits_0(tmp_path: Path) -> None:
    synth(tmp_path, "--seed", "3")
    result = run("check", tmp_path)
    assert result.exit_code == 0, result.output
    assert "continuous: no gaps, no duplicates" in result.stdout


def test_check_finds_duplicates_of_an_overlapping_export_and_export_drops_them(
    gappy: Path, tmp_path: Path
) -> None:
    overlap = tmp_path / "overlap.parquet"
    cut = ("--start", "2026-11-24T13:07:00.500", "--end", "2026-11-24T13:07:01.500")
    assert run("export", gappy, "--out", overlap, *cut).exit_code == 0
    copied = pq.read_metadata(overlap).num_rows
    assert copied > 0

    result = run("check", gappy, overlap)
    assert result.exit_code == 1
    assert f"3 gap(s), {copied} duplicate(s)" in result.stdout

    merged = tmp_path / "merged.parquet"
    result = run("export", gappy, overlap, "--out", merged)
    assert result.exit_code == 0, result.output
    assert f"({copied} duplicate rows dropped)" in result.stdout
    assert "3 gap(s), 0 duplicate(s)" in run("check", merged).stdout


def test_check_of_a_hand_written_file_out_of_order(tmp_path: Path) -> None:
    """Rows out of seq order, one written twice, one lost, and a second session: all seen."""
    seq = [3, 0, 1, 2, 2, 5, 0, 1]
    sessions = ["a"] * 6 + ["b"] * 2
    schema = recording.telemetry_schema(["P1"])
    table = pa.table(
        {
            "timestamp": pa.array([to_micros(START) + 1000 * s for s in seq], pa.timestamp("us", tz="UTC")),
            "seq": pa.array(seq, pa.uint64()),
            "session": pa.array(sessions).dictionary_encode(),
            "P1": pa.array(np.arange(len(seq), dtype=np.float32)),
        },
        schema=schema,
    )
    path = tmp_path / recording.parquet_name(START, 0)
    pq.write_table(table, path)
    result = run("check", path)
    assert result.exit_code == 1
    assert re.search(r"^\s*a\s+6\s+0…5\s+1\s+1\s+1\s*$", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^\s*b\s+2\s+0…1\s+0\s+0\s+0\s*$", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^\s*3\s+5\s+1\s+13:07:00.003\s+13:07:00.005\s+0.002000 s", result.stdout, re.MULTILINE)


def test_plot_writes_a_png(gappy: Path, tmp_path: Path) -> None:
    out = tmp_path / "plot.png"
    result = run(
        "plot", gappy, "--channels", "P1,P5,THRUST,Tbogaz1", "--out", out, "--points", "500",
        "--start", "2026-11-24T13:07:00.200", "--end", "2026-11-24T13:07:02.800",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 20_000


def test_export_cuts_the_time_range_and_writes_csv(gappy: Path, tmp_path: Path) -> None:
    out = tmp_path / "cut.csv"
    start, end = "2026-11-24T13:07:01.250", "2026-11-24T13:07:02.250"
    result = run("export", gappy, "--out", out, "--start", start, "--end", end, "--channels", "P5,THRUST")
    assert result.exit_code == 0, result.output
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["timestamp", "seq", "session", "P5", "THRUST"]
    times = [datetime.fromisoformat(r["timestamp"]) for r in rows]
    assert times[0] == datetime.fromisoformat(start).replace(tzinfo=UTC)
    assert max(times) < datetime.fromisoformat(end).replace(tzinfo=UTC)
    table = read_all(gappy)
    t = table.column("timestamp").cast(pa.int64()).to_numpy()
    inside = (t >= to_micros(datetime.fromisoformat(start))) & (t < to_micros(datetime.fromisoformat(end)))
    assert len(rows) == inside.sum()
    np.testing.assert_array_equal([int(r["seq"]) for r in rows], table.column("seq").to_numpy()[inside])
    np.testing.assert_allclose(
        [float(r["P5"]) for r in rows], table.column("P5").to_numpy()[inside], rtol=1e-6
    )


def test_export_parquet_is_a_recording(gappy: Path, tmp_path: Path) -> None:
    out = tmp_path / "cut.parquet"
    result = run("export", gappy, "--out", out, "--start", "2026-11-24T13:07:01", "--channels", "D1,D2")
    assert result.exit_code == 0, result.output
    schema = pq.read_schema(out)
    assert recording.channels_of(schema) == ["D1", "D2"]
    table = pq.read_table(out)
    seq = table.column("seq").to_numpy()
    assert seq[0] == 1000 and np.all(np.diff(seq) > 0)
    session = table.column("session")[0].as_py()
    held = [s for a, b in recording.read_intervals(out)[session] for s in range(a, b + 1)]
    np.testing.assert_array_equal(seq, held)
    assert run("stats", out).exit_code == 0


@pytest.mark.parametrize("kind", ["missing", "garbage", "other parquet", "corrupt data", "empty directory"])
def test_a_bad_file_exits_2_with_a_message(kind: str, gappy: Path, tmp_path: Path) -> None:
    path = tmp_path / "sensor_log_20261124_130700_0.parquet"
    if kind == "garbage":
        path.write_bytes(b"not parquet at all")
    elif kind == "other parquet":
        pq.write_table(pa.table({"a": [1, 2]}), path)
    elif kind == "corrupt data":  # the footer is fine, the pages are not
        data = bytearray(next(gappy.glob("sensor_log_*.parquet")).read_bytes())
        data[200 : len(data) // 2] = bytes(len(data) // 2 - 200)
        path.write_bytes(data)
    elif kind == "empty directory":
        path = tmp_path
    for command in (
        ["stats"],
        ["check"],
        ["plot", "--channels", "P1"],
        ["export", "--out", tmp_path / "x.csv"],
    ):
        result = run(*command, path)
        assert result.exit_code == 2, (command, result.output)
        assert "error:" in result.output and "Traceback" not in result.output


def test_unknown_channel_and_bad_time_exit_2(gappy: Path) -> None:
    assert run("plot", gappy, "--channels", "P1,NOPE").exit_code == 2
    assert run("stats", gappy, "--start", "yesterday").exit_code == 2
    assert (
        run(
            "export",
            gappy,
            "--out",
            gappy / "x.csv",
            "--start",
            "2026-11-24T14:00",
            "--end",
            "2026-11-24T13:00",
        ).exit_code
        == 2
    )
