"""rcs-analyze report, and runs for stats/check/plot/export: on run directories made from the emulator's
own stand model driven through the hot-fire procedure (services/analyze/synth_run.py, 1 kHz), whose
burn (the time the plant burns) and total impulse (its noise-free thrust integrated) are known.

The report is read as a person would: its HTML, its figures table, its images; the command as the
logger runs it: `python -m services.analyze report <run dir>`, its exit code and output lines.
"""

from __future__ import annotations

import base64
import json
import math
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner, Result

from services.analyze import burn, synth_run, timeline
from services.analyze.__main__ import app
from services.common.settings import load_settings
from services.common.stand_physics import CHAMBER_RATE
from services.logger.segments import SegmentWriter  # the logger's own writer makes an open segment

START = datetime(2026, 11, 24, 13, 7, tzinfo=UTC)
RUN_ID = "20261124T130700Z-hotfire"
runner = CliRunner()


def cli(*args: str | Path) -> Result:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def as_logger_runs_it(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "services.analyze", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def hotfire(data_dir: Path) -> tuple[Path, synth_run.Truth]:
    """A completed hot fire: 2 s before the procedure, 2 s after."""
    directory = data_dir / "runs" / RUN_ID
    meta = {"name": "HF-7 <b>full duration</b>", "notes": "new injector & <script>alert(1)</script>"}
    truth = synth_run.write(load_settings(), synth_run.RunPlan(start=START, meta=meta), directory)
    return directory, truth


@pytest.fixture(scope="module")
def aborted(data_dir: Path) -> tuple[Path, synth_run.Truth]:
    """A hot fire a red-line aborts 1.5 s after T-0."""
    directory = data_dir / "runs" / "20261124T131000Z-aborted"
    plan = synth_run.RunPlan(start=START.replace(minute=10), abort_after_t0_s=1.5, seed=3)
    return directory, synth_run.write(load_settings(), plan, directory)


def copy_of(run: Path, directory: Path, *names: str) -> Path:
    """A new run directory holding copies of `run`'s files `names`."""
    directory.mkdir()
    for name in names:
        (directory / name).write_bytes((run / name).read_bytes())
    return directory


def figure(page: str, name: str) -> float:
    match = re.search(rf"<td>{re.escape(name)}</td><td class=\"n\">([^<]+)</td>", page)
    assert match, f"no figure {name!r} in the report"
    return float(match[1])


def test_the_report_matches_the_emulated_burn(hotfire: tuple[Path, synth_run.Truth]) -> None:
    directory, truth = hotfire
    done = as_logger_runs_it("report", directory)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(directory / "report.html")
    page = (directory / "report.html").read_text()
    assert 3.0 < truth.burn_s < 3.3 and 900 < truth.impulse_ns < 1200  # the hot fire's, as configured
    assert figure(page, "burn duration") == pytest.approx(truth.burn_s, rel=0.02)
    assert figure(page, "total impulse") == pytest.approx(truth.impulse_ns, rel=0.02)
    assert truth.ignition_unix_s is not None and truth.t0_unix_s is not None
    # the igniter opens at T-0, the propellants 0.3 s later and light at once; the chamber (time
    # constant 50 ms) is half way up ln 2 · 50 ms later
    expected = truth.ignition_unix_s - truth.t0_unix_s + math.log(2) / CHAMBER_RATE
    assert figure(page, "ignition delay") == pytest.approx(expected, abs=0.015)
    assert 200 < figure(page, "peak thrust") < 330 and 10 < figure(page, "mean chamber pressure") < 14
    assert figure(page, "burn impulse") < figure(page, "total impulse")
    assert figure(page, "oxidiser mass") > 0 and figure(page, "fuel mass") > 0
    ratio = figure(page, "oxidiser mass") / figure(page, "fuel mass")
    assert figure(page, "O/F") == pytest.approx(ratio, rel=0.01)
    isp = figure(page, "burn impulse") / (
        (figure(page, "oxidiser mass") + figure(page, "fuel mass")) * 9.80665
    )
    assert figure(page, "mean Isp") == pytest.approx(isp, rel=0.01)
    assert "No alarm, red-line or abort." in page


def test_the_report_is_self_contained_and_escapes_the_runs_text(
    hotfire: tuple[Path, synth_run.Truth],
) -> None:
    directory, _ = hotfire
    assert cli("report", directory).exit_code == 0
    page = (directory / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    images = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(images) == 2  # the run, and the burn close up
    for source in images:
        assert source.startswith("data:image/png;base64,")
        png = base64.b64decode(source.removeprefix("data:image/png;base64,"), validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert "HF-7 &lt;b&gt;full duration&lt;/b&gt;" in page
    assert "new injector &amp; &lt;script&gt;alert(1)&lt;/script&gt;" in page
    for phase in ("countdown", "feed", "ignition", "mainstage", "shutdown", "purge", "vent", "safing"):
        assert f"phase {phase}" in page  # in the event list, and as a band in the plots
    assert "GOX2, FUEL2 opened" in page and "T-0" in page


def test_every_alarm_red_line_and_abort_is_in_the_report_with_its_time(
    aborted: tuple[Path, synth_run.Truth],
) -> None:
    directory, truth = aborted
    done = as_logger_runs_it("report", directory.name, "--data-dir", directory.parent.parent)
    assert done.returncode == 0, done.stderr
    page = (directory / "report.html").read_text()
    safety = page[page.index("<h3>Alarms, red-lines and aborts</h3>") :]
    safety = safety[: safety.index("</table>")]
    assert re.search(r"red-line</span></td><td>T\+1\.500 s</td><td>red-line P5 above 25\.0 \(value", safety)
    assert re.search(r"alarm</span></td><td>T\+1\.500 s</td><td>redline P5 above 25: active", safety)
    assert re.search(r"abort</span></td><td>T\+1\.500 s</td><td>ABORT: red-line: P5 above 25", safety)
    assert "phase abort" in page
    # the abort ends the burn: 1.5 s after T-0, less the 0.3 s before the propellants
    assert truth.burn_s == pytest.approx(1.2, abs=0.02)
    assert figure(page, "burn duration") == pytest.approx(truth.burn_s, rel=0.02)
    assert figure(page, "total impulse") == pytest.approx(truth.impulse_ns, rel=0.02)


def test_what_cannot_be_read_is_said_in_the_report(
    tmp_path: Path, hotfire: tuple[Path, synth_run.Truth]
) -> None:
    source, _ = hotfire
    directory = copy_of(source, tmp_path / "copy", "run.json", "samples.parquet")
    meta = json.loads((directory / "run.json").read_text()) | {
        "problems": ["12 samples no longer in the ring"]
    }
    (directory / "run.json").write_text(json.dumps(meta))
    events = (source / "events.jsonl").read_text().splitlines(keepends=True)
    (directory / "events.jsonl").write_text(
        "".join([*events[:3], "not json\n", "[1, 2]\n", *events[3:], '{"ts"'])
    )
    result = cli("report", directory)
    assert result.exit_code == 0, result.output
    page = (directory / "report.html").read_text()
    assert "while recording: 12 samples no longer in the ring" in page
    assert "events.jsonl: 2 line(s) are not JSON objects, skipped (lines 4, 5)" in page
    assert (
        "events.jsonl: its last line is incomplete (5 bytes: still being written, or a crash?): skipped"
        in page
    )
    assert "events.jsonl: 2 line(s) are not JSON objects" in result.output  # said on the terminal too
    (directory / "events.jsonl").unlink()
    assert cli("report", directory).exit_code == 0
    assert "events.jsonl is missing" in (directory / "report.html").read_text()


def test_the_report_uses_the_stand_configuration_the_run_was_recorded_with(
    tmp_path: Path, hotfire: tuple[Path, synth_run.Truth]
) -> None:
    source, _ = hotfire
    directory = copy_of(source, tmp_path / "another-stand-yaml", "samples.parquet", "events.jsonl")
    meta = json.loads((source / "run.json").read_text())
    recorded = yaml.safe_load(meta["config_yaml"])
    recorded["report"] = {**recorded.get("report", {}), "burn_min_bar": 50.0}  # that stand: no burn here
    (directory / "run.json").write_text(json.dumps(meta | {"config_yaml": yaml.safe_dump(recorded)}))
    assert cli("report", directory).exit_code == 0
    page = (directory / "report.html").read_text()
    assert "<b>No burn</b>: P5 never rose above 50" in page, "today's stand.yaml finds the burn"

    (directory / "run.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "config_yaml"}))
    result = cli("report", directory)
    assert result.exit_code == 0
    assert "has no copy of stand.yaml: today's configuration is used" in result.output
    assert "No burn" not in (directory / "report.html").read_text()


def test_durations_are_on_the_device_clock_when_the_run_names_its_rate(
    tmp_path: Path, hotfire: tuple[Path, synth_run.Truth]
) -> None:
    """Acquisition slews the timestamps by up to 10 % toward the host's clock (a device running behind
    it: an emulator starved of CPU): the device's own clock, seq / rate_hz, still counts true."""
    source, truth = hotfire
    table = pq.read_table(source / "samples.parquet")
    t_us = table.column("timestamp").cast(pa.int64()).to_numpy()
    squeezed = t_us[0] + np.rint((t_us - t_us[0]) * 0.9).astype(np.int64)  # 10 % slew all along
    table = table.set_column(0, table.schema.field(0), pa.array(squeezed, pa.timestamp("us", tz="UTC")))
    meta = json.loads((source / "run.json").read_text())
    for name, rate in (("with-rate", meta["rate_hz"]), ("without-rate", None)):
        directory = copy_of(source, tmp_path / name, "events.jsonl")
        pq.write_table(table, directory / "samples.parquet")
        (directory / "run.json").write_text(json.dumps({**meta, "rate_hz": rate}))
        assert cli("report", directory).exit_code == 0
    page = (tmp_path / "with-rate" / "report.html").read_text()
    assert figure(page, "burn duration") == pytest.approx(truth.burn_s, rel=0.02)
    assert figure(page, "total impulse") == pytest.approx(truth.impulse_ns, rel=0.02)
    on_timestamps = (tmp_path / "without-rate" / "report.html").read_text()
    assert figure(on_timestamps, "burn duration") == pytest.approx(0.9 * truth.burn_s, rel=0.02)


def bad_run(kind: str, tmp_path: Path, good: Path) -> Path:
    directory = tmp_path / "runs" / "20261124T130700Z-bad"
    directory.mkdir(parents=True)
    if kind == "no such run":
        directory.rmdir()
        return directory
    if kind == "still recording":
        (directory / "samples.parquet.partial").write_bytes(b"PAR1")
        return directory
    if kind != "no run.json":
        (directory / "run.json").write_text("{not json" if kind == "run.json not JSON" else '{"id": "x"}')
    if kind == "samples not Parquet":
        (directory / "samples.parquet").write_bytes(b"garbage")
    elif kind == "samples not a recording":
        pq.write_table(pa.table({"a": [1]}), directory / "samples.parquet")
    elif kind != "no samples":
        (directory / "samples.parquet").write_bytes((good / "samples.parquet").read_bytes())
    return directory


@pytest.mark.parametrize(
    "kind",
    [
        "no such run",
        "no run.json",
        "run.json not JSON",
        "no samples",
        "samples not Parquet",
        "samples not a recording",
        "still recording",
    ],
)
def test_a_bad_run_directory_is_one_line_and_a_non_zero_exit(
    kind: str, tmp_path: Path, hotfire: tuple[Path, synth_run.Truth]
) -> None:
    directory = bad_run(kind, tmp_path, hotfire[0])
    result = cli("report", directory)
    assert result.exit_code == 2, (kind, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (kind, result.stderr)
    assert result.stdout == ""
    assert not (directory / "report.html").exists()


def test_a_bad_run_directory_as_the_logger_sees_it(
    tmp_path: Path, hotfire: tuple[Path, synth_run.Truth]
) -> None:
    directory = bad_run("samples not a recording", tmp_path, hotfire[0])
    done = as_logger_runs_it("report", directory)
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()  # the logger keeps the last line as the reason
    assert line.startswith(f"error: {directory} is not a complete run: ") and "not an rcs recording" in line


def test_a_bad_run_id_is_refused_before_it_becomes_a_path(tmp_path: Path) -> None:
    result = cli("report", "../../rcs-no-such-run", "--data-dir", tmp_path)  # neither a directory nor an id
    assert result.exit_code == 2 and "no such run directory" in result.output


def test_stats_plot_export_and_check_take_a_run(
    hotfire: tuple[Path, synth_run.Truth], data_dir: Path, tmp_path: Path
) -> None:
    rows = pq.read_metadata(hotfire[0] / "samples.parquet").num_rows
    stats = cli("stats", "--run", RUN_ID, "--data-dir", data_dir, "--channels", "P5,THRUST")
    assert stats.exit_code == 0, stats.output
    assert f"rows   {rows}" in stats.stdout
    assert cli("check", "--run", RUN_ID, "--data-dir", data_dir).exit_code == 0
    png = tmp_path / "run.png"
    plotted = cli("plot", "--run", RUN_ID, "--data-dir", data_dir, "--channels", "P5", "--out", png)
    assert plotted.exit_code == 0, plotted.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = tmp_path / "run.csv"
    exported = cli("export", "--run", str(hotfire[0]), "--channels", "THRUST", "--out", csv)
    assert exported.exit_code == 0, exported.output
    assert len(csv.read_text().splitlines()) == rows + 1
    both = cli("stats", hotfire[0] / "samples.parquet", "--run", RUN_ID, "--data-dir", data_dir)
    assert both.exit_code == 2 and "not both" in both.output
    assert cli("stats", "--run", "20991231T000000Z-none", "--data-dir", data_dir).exit_code == 2
    assert cli("stats").exit_code == 2


# --- the open segment: read what is readable, and say so ------------------------------------------


def test_the_loggers_open_segment_is_read_and_named(tmp_path: Path) -> None:
    settings = load_settings()
    channels = settings.channel_names
    writer = SegmentWriter(tmp_path, channels, settings.logger, clock=START.timestamp)
    t0 = START.timestamp()
    for k in range(3):  # three flushed batches of 100 rows: on disk, readable
        t = t0 + (k * 100 + np.arange(100)) / 1000
        data = np.full((100, len(channels)), float(k), np.float32)
        writer.append("s1", k * 100, t, data)
        writer.flush()
    assert writer.path is not None
    with writer.path.open("ab") as stream:  # a batch the logger is writing as we read
        stream.write(b"\xff\xff\xff\xff\x10\x00\x00\x00partial")
    result = cli("stats", tmp_path, "--channels", "P1")
    assert result.exit_code == 0, result.output
    assert re.search(
        rf"note: {writer.path.name}: the logger's open segment \(still being written\): read its 300 "
        r"complete rows up to 13:07:00.299000 UTC \(a batch being written, or torn by a crash, left out\)",
        result.output,
    ), result.output
    assert "rows   300" in result.stdout
    writer.close_segment()


def test_an_open_segment_with_nothing_complete_yet_is_skipped_with_a_word(tmp_path: Path) -> None:
    (tmp_path / "sensor_log_20261124_130700_0.arrows").write_bytes(b"\xff\xff\xff\xff")
    result = cli("stats", tmp_path)
    assert result.exit_code == 2  # nothing else to read
    assert "sensor_log_20261124_130700_0.arrows: the logger's open segment holds no complete samples" in (
        result.output
    )


# --- the figures, on signals whose answers are known -----------------------------------------------


def trapezoid(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """0 → 10 bar over [1, 1.1] s, 10 until 4 s, → 0 at 4.1 s."""
    y: npt.NDArray[np.float64] = np.interp(t, [0, 1, 1.1, 4, 4.1, 6], [0, 0, 10, 10, 0, 0])
    return y


def test_burn_crossings_and_integrals_are_exact_on_a_trapezoid() -> None:
    t = np.arange(0, 6, 0.001)
    pc = trapezoid(t)
    f = burn.burn_figures(
        t, pc=pc, thrust=pc * 20, ox_flow=np.where(pc > 0, 0.2, 0.0), fuel_flow=np.where(pc > 0, 0.1, 0.0),
        threshold_bar=None, threshold_fraction=0.5, min_bar=2.0, merge_s=0.1, g0=10.0,
        ignition_openings=[0.5, 0.8],
    )  # fmt: skip
    assert f.burn is not None and f.threshold == pytest.approx(5.0)
    assert (f.burn.start_s, f.burn.end_s, f.burn.duration_s) == pytest.approx((1.05, 4.05, 3.0))
    assert f.impulse_run == pytest.approx(20 * 10 * 3.0)  # 20 N/bar × the trapezoid's 30 bar·s
    assert f.peak_pc == 10 and f.peak_thrust == 200
    assert f.ignition_delay_s == pytest.approx(1.05 - 0.8)
    assert f.ox_mass == pytest.approx(0.2 * 3.0, rel=0.01) and f.mixture_ratio == pytest.approx(2.0)
    assert f.mean_isp == pytest.approx(f.impulse_burn / (0.9 * 10.0), rel=0.02)


def test_burn_details() -> None:
    t = np.arange(0, 6, 0.001)
    pc = trapezoid(t)
    spiked = pc.copy()
    spiked[1060:1063] = 40.0  # a hard start: the steady level, and so the threshold, stays
    assert burn.burn_threshold(t, spiked, None, 0.5, 2.0) == pytest.approx(5.0)
    assert burn.burn_threshold(t, spiked, 7.5, 0.5, 2.0) == 7.5
    assert burn.burn_threshold(t, pc * 0.1, None, 0.5, 2.0) == 2.0  # cold flow is no burn
    assert burn.find_burn(t, pc * 0.1, 2.0, 0.1) is None
    dipped = pc.copy()
    dipped[(t > 2) & (t < 2.05)] = 0  # shorter than burn_merge_s: one burn
    one = burn.find_burn(t, dipped, 5.0, 0.1)
    assert (
        one is not None and one.segments == 1 and one.duration_s == pytest.approx(3.0)
    )  # the dip does not end it
    restarted = pc.copy()
    restarted[(t > 2) & (t < 2.5)] = 0
    two = burn.find_burn(t, restarted, 5.0, 0.1)
    assert two is not None and two.segments == 2 and (two.start_s, two.end_s) == pytest.approx((1.05, 4.05))
    with_nan = pc.copy()
    with_nan[2000:2100] = np.nan  # undefined samples: interpolated across, as lost ones
    assert burn.integrate(t, with_nan) == pytest.approx(burn.integrate(t, pc))
    assert burn.integrate(t, pc, 2.0005, 3.0005) == pytest.approx(10.0)  # ends cut between samples
    assert burn.ignition_delay([5.0], 1.05) is None
    none = burn.burn_figures(
        t, pc=pc * 0.1, thrust=pc, ox_flow=pc, fuel_flow=pc, threshold_bar=None, threshold_fraction=0.5,
        min_bar=2.0, merge_s=0.1, g0=9.8,
    )  # fmt: skip
    assert none.burn is None and math.isnan(none.peak_pc) and none.impulse_run == pytest.approx(30.0)


def test_the_timeline_reads_events_in_any_order_and_lists_unknown_kinds() -> None:
    names = load_settings().valve_names
    events: list[dict[str, Any]] = [
        {"ts": 105.0, "kind": "step", "sequence": None},
        {"ts": 100.0, "kind": "step", "sequence": "hotfire", "step": 1, "phase": "countdown", "t0": None},
        {"ts": 102.0, "kind": "step", "sequence": "hotfire", "step": 3, "phase": "ignition", "t0": 102.0},
        {"ts": 102.0, "kind": "valves", "bits": "010010001", "open": ["GOX1", "FUEL1", "IGNITION"]},
        {"ts": 101.0, "kind": "valves", "bits": "010010000"},
        {"ts": 103.0, "kind": "step", "sequence": "emergency", "step": 1, "phase": None, "abort": True},
        {"ts": 103.0, "kind": "mystery", "service": "someone"},
        {"kind": "state", "new": "idle"},
    ]
    notes: list[str] = []
    line = timeline.build(events, names, notes)
    assert notes == ["1 event(s) without a time (`ts`): not shown"]
    assert [(b.start, b.end, b.name) for b in line.phases] == [
        (100.0, 102.0, "countdown"),
        (102.0, 103.0, "ignition"),
        (103.0, 105.0, "abort"),
    ]
    assert line.t0 == 102.0 and line.openings("IGNITION") == [102.0] and line.openings("GOX1") == [101.0]
    assert ("other", "someone: mystery") in [(m.category, m.label) for m in line.markers]
    commanded = [
        {"ts": 1.0, "kind": "command", "command": "valves", "who": "ana", "accepted": True,
         "result": {"valves": [0, 0, 0, 0, 0, 0, 0, 0, 1], "bits": "000000001"}},
    ]  # fmt: skip
    assert timeline.build(commanded, names, []).openings("IGNITION") == [1.0]  # without valves events


def test_synth_run_writes_a_run_the_report_reads(tmp_path: Path) -> None:
    directory = tmp_path / "runs" / "20261124T130000Z-demo"
    made = cli("synth-run", "--out", directory, "--start", "2026-11-24T13:00:00", "--abort-after", "1")
    assert made.exit_code == 0, made.output
    said = re.search(r"burn ([\d.]+) s, total impulse ([\d.]+) N·s", made.stdout)
    assert said is not None and float(said[1]) == pytest.approx(0.7)  # 1 s after T-0, less the 0.3 s
    assert cli("report", directory).exit_code == 0
    page = (directory / "report.html").read_text()
    assert figure(page, "burn duration") == pytest.approx(float(said[1]), rel=0.02)
    assert json.loads((directory / "run.json").read_text())["result"] == "aborted"
