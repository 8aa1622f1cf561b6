"""rcs-analyze: look into the logger's recordings (sensor_log_*.parquet) and test runs (data_dir/runs/):
statistics, continuity, plots, exports, run reports, and synthetic recordings and runs to try it all on.

FILES are recording files or directories (a directory means every sensor_log_*.parquet in it, and
what is complete of the logger's open segment, sensor_log_*.arrows, which a note names); or, with
--run ID, a run's samples. `report RUN` writes a run's report.html and prints its path.
Times (--start, --end) are ISO 8601, UTC unless they carry an offset, e.g. 2026-11-24T13:07:00 or
2026-11-24T15:07:00+02:00; --start is inclusive, --end exclusive. Exit codes: 0 fine, 1 `check`
found gaps or duplicates (or, with --acquisition, a recording that ends before acquisition's ring
buffer), 2 a bad file or argument (or, with --acquisition, no answer from acquisition).

The files are plain Parquet (timestamp UTC, seq, session, one float32 column per channel). Read them
yourself, e.g. with pandas or DuckDB:

\b
  pandas:  pd.concat(map(pd.read_parquet, sorted(glob.glob("data/sensor_log_*.parquet"))))
  DuckDB:  duckdb -c "SELECT session, min(timestamp), max(P5) FROM 'data/sensor_log_*.parquet' GROUP BY ALL"
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from services.analyze import continuity, export, plot, synth, synth_run
from services.analyze import report as run_report
from services.analyze import run as run_dir
from services.analyze.load import (
    KEY_COLUMNS,
    Recording,
    RecordingError,
    TimeWindow,
    channel_union,
    find_recordings,
    from_micros,
    progress_bar,
    scan,
    to_micros,
)
from services.analyze.stats import summarise
from services.common import topics
from services.common.mqtt import MqttClient
from services.common.rpc import RpcClient, RpcError, RpcTimeout
from services.common.settings import Settings, load_settings

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, rich_markup_mode=None)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

Files = Annotated[
    list[Path] | None,
    typer.Argument(help="recording files and/or directories", metavar="FILES", show_default=False),
]
RunOption = Annotated[
    str | None,
    typer.Option("--run", help="a run (id under DATA_DIR/runs, or its directory) instead of FILES"),
]
DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="where runs are (default: data_dir of the stand's settings)")
]
Start = Annotated[str | None, typer.Option(help="from this UTC time (ISO 8601, inclusive)")]
End = Annotated[str | None, typer.Option(help="until this UTC time (ISO 8601, exclusive)")]
ChannelList = Annotated[str | None, typer.Option(help="comma-separated channels, e.g. P1,P5 (default: all)")]


def _fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr (never wrapped, never markup), then exit with `code`."""
    err.print(Text.assemble(("error:", "bold red"), " ", " ".join(message.split())), soft_wrap=True)
    raise typer.Exit(code)


def _note(message: str) -> None:
    """Data read differently, or not read, and why: one line on stderr."""
    err.print(Text.assemble(("note:", "bold yellow"), " ", message), soft_wrap=True)


def _settings() -> Settings:
    try:
        return load_settings()
    except (ValidationError, FileNotFoundError) as exc:
        _fail(f"stand configuration: {exc}")


def _ring_status() -> dict[str, Any]:
    """Acquisition's buffer status, over MQTT as the configured user; exit 2 when nobody answers."""
    client = MqttClient(_settings().mqtt, "analyze")
    client.start()
    try:
        if not client.wait_connected(5):
            _fail("--acquisition: no MQTT broker answers (RCS_MQTT_HOST/RCS_MQTT_PORT)")
        rpc = RpcClient(client)
        try:
            return rpc.call(topics.ACQ_BUFFER_STATUS, {}, timeout=5)
        except (RpcTimeout, RpcError) as exc:
            _fail(
                f"--acquisition: acquisition did not answer ({exc}); "
                "requests need a login (RCS_MQTT_USERNAME/RCS_MQTT_PASSWORD)"
            )
        finally:
            rpc.close()
    finally:
        client.stop()


def _data_dir(option: Path | None) -> Path:
    return option if option is not None else _settings().data_dir


def _open(
    files: Sequence[Path] | None, run: str | None = None, data_dir: Path | None = None
) -> list[Recording]:
    """The recordings of FILES, or of the run `--run` names (exactly one of the two)."""
    if run is not None and files:
        _fail("give FILES or --run, not both")
    if run is not None:
        try:
            files = [run_dir.samples_path(run_dir.resolve(run, _data_dir(data_dir)))]
        except run_dir.RunError as exc:
            _fail(str(exc))
    if not files:
        _fail("give recording FILES (or a directory), or --run")
    try:
        return find_recordings(files, _note)
    except RecordingError as exc:
        _fail(str(exc))


def _time(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return to_micros(datetime.fromisoformat(value))
    except ValueError:
        _fail(f"{option} {value!r} is not an ISO 8601 time (e.g. 2026-11-24T13:07:00)")


def _window(start: str | None, end: str | None) -> TimeWindow:
    window = TimeWindow(_time(start, "--start"), _time(end, "--end"))
    if window.start_us is not None and window.end_us is not None and window.start_us >= window.end_us:
        _fail("--start must be before --end")
    return window


def _channels(option: str | None, available: Sequence[str]) -> list[str]:
    if option is None:
        return list(available)
    names = [name.strip() for name in option.split(",") if name.strip()]
    unknown = [name for name in names if name not in available]
    if unknown or not names:
        _fail(f"unknown channels {unknown or option!r}; the files have {', '.join(available)}")
    return list(dict.fromkeys(names))


@contextmanager
def _work() -> Iterator[Progress]:
    """A progress display; a file that turns out unreadable, or an output that cannot be written,
    ends the command with a message and exit code 2."""
    try:
        with progress_bar(err) as progress:
            yield progress
    except RecordingError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write: {exc}")


def _table(title: str) -> Table:
    return Table(title=title, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)


def _utc(t_us: int) -> str:
    return f"{from_micros(t_us):%Y-%m-%d %H:%M:%S.%f}"[:-3]


def _time_of_day(t_us: int) -> str:
    return f"{from_micros(t_us):%H:%M:%S.%f}"[:-3]


def _duration(us: int) -> str:
    return str(timedelta(microseconds=us))


def _number(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.6g}"


@app.command()
def stats(
    files: Files = None,
    *,
    run: RunOption = None,
    data_dir: DataDir = None,
    start: Start = None,
    end: End = None,
    channels: ChannelList = None,
) -> None:
    """Per channel: unit, count of values, NaN count, min, max, mean, standard deviation (population)."""
    recordings = _open(files, run, data_dir)
    window = _window(start, end)
    names = _channels(channels, channel_union(recordings))
    units = {c.name: c.unit for c in _settings().channels}
    with _work() as progress:
        summary = summarise(scan(recordings, ["timestamp", "session", *names], window, progress), names)
    if summary.rows == 0 or summary.first_us is None or summary.last_us is None:
        _fail("no samples in these files (or in this time range)")
    table = _table(f"{len(recordings)} file(s), {summary.rows} rows")
    for heading in ("channel", "unit", "count", "NaN", "min", "max", "mean", "std"):
        table.add_column(heading, justify="left" if heading in ("channel", "unit") else "right")
    for name in names:
        s = summary.channels[name]
        table.add_row(
            name,
            units.get(name, "?"),
            str(s.count),
            str(s.nan_count),
            *(_number(v) for v in (s.minimum, s.maximum, s.mean, s.std)),
        )
    out.print(table)
    span = summary.last_us - summary.first_us
    out.print(f"time   {_utc(summary.first_us)} → {_utc(summary.last_us)} UTC ({_duration(span)})")
    out.print(f"rows   {summary.rows}")
    for session, rows in summary.session_rows.items():
        out.print(f"session {session}: {rows} rows")


def _print_continuity(sessions: list[continuity.SessionContinuity], n_files: int) -> None:
    """`check`'s table of sessions, then each session's time span and largest gaps."""
    table = _table(f"continuity of {n_files} file(s)")
    table.add_column("session", no_wrap=True)
    for heading in ("samples", "seq", "gaps", "missing", "duplicates"):
        table.add_column(heading, justify="right")
    for s in sessions:
        cells = (s.samples, f"{s.first_seq}…{s.last_seq}", s.gap_count, s.missing, s.duplicates)
        table.add_row(s.session, *(str(c) for c in cells), style=None if s.ok else "red")
    out.print(table)
    for s in sessions:
        out.print(f"{s.session}: {_utc(s.first_us)} → {_utc(s.last_us)} UTC")
        if not s.largest_gaps:
            continue
        listing = _table(f"largest gaps of {s.session}")
        for heading in ("after seq", "next seq", "missing", "from (UTC)", "to (UTC)", "lasting"):
            listing.add_column(heading, justify="right")
        for gap in s.largest_gaps:
            lasting = f"{(gap.next_us - gap.after_us) / 1e6:.6f} s"
            gap_cells = (
                gap.after_seq,
                gap.next_seq,
                gap.missing,
                _time_of_day(gap.after_us),
                _time_of_day(gap.next_us),
                lasting,
            )
            listing.add_row(*(str(c) for c in gap_cells))
        out.print(listing)


def _print_ring_tail(tail: continuity.RingTail) -> None:
    out.print(
        f"[bold red]{tail.session} ends before acquisition's ring buffer:[/bold red] the files stop at "
        f"seq {tail.recorded_last_seq}, acquisition is at {tail.ring_last_seq}: {tail.unrecorded} "
        f"sample(s) not (yet) recorded, {max(0, tail.in_ring)} of them still in its ring buffer. "
        "A running logger may hold the newest in its open segment (`save` writes it); a logger "
        "started again fetches the rest from the ring while it holds them."
    )


@app.command()
def check(
    files: Files = None,
    *,
    run: RunOption = None,
    data_dir: DataDir = None,
    largest: Annotated[int, typer.Option(min=1, help="list this many of each session's largest gaps")] = 5,
    acquisition: Annotated[
        bool,
        typer.Option(
            "--acquisition",
            help="also ask the running acquisition (MQTT, RCS_MQTT_* login) whether the recording of its "
            "session ends before its ring buffer does: samples not (yet) recorded",
        ),
    ] = False,
) -> None:
    """Continuity by seq, per session: gaps (samples lost) and duplicates; with --acquisition, also a
    recording that ends before acquisition's ring buffer. Exit code 1 if any."""
    recordings = _open(files, run, data_dir)
    ring = _ring_status() if acquisition else None
    with _work() as progress:
        keys = continuity.read_keys(scan(recordings, list(KEY_COLUMNS), progress=progress))
    sessions = continuity.check(keys, largest)
    tail = (
        None
        if ring is None
        else continuity.ring_tail(sessions, ring["session"], ring["first_seq"], ring["last_seq"])
    )
    if not sessions:
        out.print(f"{len(recordings)} file(s), no samples")
        return
    _print_continuity(sessions, len(recordings))
    if tail is not None:
        _print_ring_tail(tail)
    if all(s.ok for s in sessions) and tail is None:
        out.print("[green]continuous: no gaps, no duplicates[/green]")
        if ring is None:
            out.print("whether the recording's end is complete: see --acquisition")
        return
    if all(s.ok for s in sessions):
        raise typer.Exit(1)
    total_gaps = sum(s.gap_count for s in sessions)
    total_duplicates = sum(s.duplicates for s in sessions)
    out.print(f"[bold red]{total_gaps} gap(s), {total_duplicates} duplicate(s)[/bold red]")
    raise typer.Exit(1)


@app.command("plot")
def plot_command(
    files: Files = None,
    *,
    run: RunOption = None,
    data_dir: DataDir = None,
    channels: Annotated[str, typer.Option(help="comma-separated channels, e.g. P1,P5")],
    out_path: Annotated[Path, typer.Option("--out", help="PNG file to write")] = Path("plot.png"),
    start: Start = None,
    end: End = None,
    points: Annotated[int, typer.Option(min=10, help="time buckets (min/max of each is drawn)")] = 4000,
) -> None:
    """Channels against UTC time, one axis per unit, red-lines from the stand dashed; as PNG."""
    recordings = _open(files, run, data_dir)
    window = _window(start, end)
    names = _channels(channels, channel_union(recordings))
    settings = _settings()
    spans = [r.span_us for r in recordings if r.span_us is not None and window.overlaps(*r.span_us)]
    if not spans:
        _fail("no samples in these files (or in this time range)")
    first_us = window.start_us if window.start_us is not None else min(s[0] for s in spans)
    end_us = window.end_us if window.end_us is not None else max(s[1] for s in spans) + 1
    with _work() as progress:
        batches = scan(recordings, [*KEY_COLUMNS, *names], TimeWindow(first_us, end_us), progress)
        env = plot.envelope(batches, names, first_us, end_us, points)
        if env.counts.sum() == 0:
            _fail("no samples in this time range")
        title = f"{settings.stand_name}: {_utc(first_us)} → {_utc(end_us)} UTC ({len(recordings)} file(s))"
        units = {c.name: c.unit for c in settings.channels}
        plot.draw(env, names, units=units, redlines=settings.redlines, title=title, out=out_path)
    out.print(f"wrote {out_path}")


class OutputFormat(StrEnum):
    parquet = "parquet"
    csv = "csv"


@app.command("export")
def export_command(
    files: Files = None,
    *,
    run: RunOption = None,
    data_dir: DataDir = None,
    out_path: Annotated[Path, typer.Option("--out", help="file to write")],
    start: Start = None,
    end: End = None,
    channels: ChannelList = None,
    fmt: Annotated[
        OutputFormat | None, typer.Option("--format", help="default: csv for a .csv --out, else parquet")
    ] = None,
) -> None:
    """Merge files and cut a time range: sorted by (session, seq), duplicates dropped; as a recording
    (Parquet, the logger's format) or CSV (ISO 8601 UTC timestamps). The cut is sorted in memory."""
    recordings = _open(files, run, data_dir)
    if out_path.resolve() in {r.path.resolve() for r in recordings}:
        _fail(f"--out {out_path} is one of the input files")
    window = _window(start, end)
    names = _channels(channels, channel_union(recordings))
    chosen = fmt or (OutputFormat.csv if out_path.suffix.lower() == ".csv" else OutputFormat.parquet)
    settings = _settings()
    with _work() as progress:
        merged = export.merge(scan(recordings, [*KEY_COLUMNS, *names], window, progress), names)
        if merged.table.num_rows == 0:
            _fail("no samples in these files (or in this time range)")
        export.write(merged, out_path, chosen.value, settings.logger, progress)
    out.print(
        f"wrote {merged.table.num_rows} rows to {out_path} ({merged.duplicates} duplicate rows dropped)"
    )


@app.command("report")
def report_command(
    run: Annotated[str, typer.Argument(help="the run: its directory, or its id under DATA_DIR/runs")],
    *,
    data_dir: DataDir = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="HTML file to write (default: report.html in the run)")
    ] = None,
) -> None:
    """The run's report: one self-contained HTML page with its figures (burn duration, chamber pressure,
    thrust, impulse, Isp, propellant masses and O/F, ignition delay), every alarm, red-line and abort,
    plots with phase bands and event markers, and every event. Prints the page's path."""
    settings = _settings()
    try:
        directory = run_dir.resolve(run, data_dir if data_dir is not None else settings.data_dir)
        loaded = run_dir.load(directory)
        recorded = run_dir.recorded_settings(loaded, settings)
        path = run_report.write(run_report.build(loaded, recorded), out_path)
    except (run_dir.RunError, RecordingError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write the report: {exc}")
    except ValueError as exc:
        _fail(f"{run}: {exc}")
    for note in loaded.notes:
        _note(note)
    out.print(str(path), soft_wrap=True)


@app.command("synth")
def synth_command(
    *,
    out_dir: Annotated[Path, typer.Option("--out", help="directory to write the files to (created)")],
    minutes: Annotated[float, typer.Option(min=0.001, help="length of the recording")] = 2.0,
    rate: Annotated[float | None, typer.Option(min=1, help="samples/s (default: the stand's)")] = None,
    gaps: Annotated[int, typer.Option(min=0, help="inject this many gaps (lost batches)")] = 0,
    rotate_s: Annotated[
        float | None, typer.Option(min=0.001, help="seconds per file (default: the logger's)")
    ] = None,
    start: Annotated[str | None, typer.Option(help="UTC time of the first sample (default: now)")] = None,
    seed: Annotated[int, typer.Option(help="random seed (noise, gaps, session id)")] = 0,
) -> None:
    """Write a synthetic hot-fire recording in the logger's format: the emulator's stand model through
    preburning, ignition, burn and the abort sequence, with sensor noise and optional gaps."""
    settings = _settings()
    first = _time(start, "--start")
    plan = synth.SynthPlan(
        start=from_micros(first) if first is not None else datetime.now(UTC).replace(microsecond=0),
        seconds=minutes * 60,
        rate_hz=rate or settings.acquisition.rate_hz,
        gaps=gaps,
        rotate_s=rotate_s or settings.logger.rotate_s,
        seed=seed,
    )
    if plan.samples == 0:
        _fail("--minutes at --rate gives no samples")
    with _work() as progress:
        out_dir.mkdir(parents=True, exist_ok=True)
        task = progress.add_task("simulating", total=plan.samples)
        written = synth.write(settings, plan, out_dir, lambda rows: progress.advance(task, rows))
    for path, rows in written:
        out.print(f"wrote {path} ({rows} rows)")


@app.command("synth-run")
def synth_run_command(
    *,
    out_dir: Annotated[Path, typer.Option("--out", help="the run directory to write (created)")],
    rate: Annotated[float, typer.Option(min=1, help="samples/s")] = 1000.0,
    procedure: Annotated[str, typer.Option(help="the sequence to run")] = "hotfire",
    abort_after: Annotated[
        float | None, typer.Option(min=0, help="a red-line aborts this many seconds after T-0")
    ] = None,
    start: Annotated[str | None, typer.Option(help="UTC time of the first sample (default: now)")] = None,
    seed: Annotated[int, typer.Option(help="random seed (noise)")] = 0,
) -> None:
    """Write a synthetic run directory (run.json, samples.parquet, events.jsonl): the procedure carried
    out on the emulator's stand model, its events as the logger records them. Prints the truth of its
    burn (what `report` should find)."""
    settings = _settings()
    if procedure not in settings.sequences:
        _fail(f"--procedure {procedure!r} is not a sequence ({', '.join(settings.sequences)})")
    first = _time(start, "--start")
    plan = synth_run.RunPlan(
        start=from_micros(first) if first is not None else datetime.now(UTC).replace(microsecond=0),
        rate_hz=rate,
        procedure=procedure,
        abort_after_t0_s=abort_after,
        seed=seed,
    )
    try:
        truth = synth_run.write(settings, plan, out_dir)
    except OSError as exc:
        _fail(f"cannot write: {exc}")
    out.print(f"wrote {out_dir}: burn {truth.burn_s:.4g} s, total impulse {truth.impulse_ns:.5g} N·s")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
