"""Test runs on disk: the contract between the logger (writes them), the gateway and rcs-ctl (read them)
and rcs-analyze (reports on them); docs/protocol.md, *Test runs*.

`data_dir/runs/<id>/` holds `samples.parquet` (a recording like the logger's continuous files, plus
the key-value metadata `rcs.run`), `events.jsonl` and `run.json`, written last (atomically): a run
directory without `run.json` is still being recorded, or was interrupted. `report.html` follows when
the report could be made. A run id is `<UTC start yyyymmddTHHMMSSZ>-<slug>` (`RUN_ID`): sortable, and
checked here before it is ever joined to a path.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

RUNS_DIR = "runs"
SAMPLES = "samples.parquet"
EVENTS = "events.jsonl"
RUN_JSON = "run.json"
REPORT = "report.html"
META_RUN = "rcs.run"  # the Parquet key-value metadata holding run.json (without its `report`)
RUN_ID = re.compile(r"\d{8}T\d{6}Z-[a-z0-9](?:[a-z0-9-]{0,60})")
SUMMARY_LEFT_OUT = ("config_yaml",)  # what a listing leaves out of each run.json
NAME_CHARS = 100  # a run's name (run_start)
NOTES_CHARS = 2000  # its notes


def valid_id(run_id: object) -> bool:
    return isinstance(run_id, str) and RUN_ID.fullmatch(run_id) is not None


def run_dir(data_dir: Path, run_id: str) -> Path:
    """The directory of run `run_id`; ValueError for anything that is not a run id (no path traversal)."""
    if not valid_id(run_id):
        raise ValueError("not a run id (e.g. 20261202T014501Z-hotfire)")
    return data_dir / RUNS_DIR / run_id


def read_run(data_dir: Path, run_id: str) -> dict[str, Any] | None:
    """A finished run's run.json; None if there is none (unknown, or still recording). ValueError for
    an invalid id."""
    path = run_dir(data_dir, run_id) / RUN_JSON
    try:
        run = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    return run if isinstance(run, dict) else None


def summary(run: dict[str, Any]) -> dict[str, Any]:
    """A run.json without its bulky parts (the stand.yaml copy)."""
    return {k: v for k, v in run.items() if k not in SUMMARY_LEFT_OUT}


def list_runs(data_dir: Path) -> list[dict[str, Any]]:
    """Every finished run's summary, newest first."""
    root = data_dir / RUNS_DIR
    if not root.is_dir():
        return []
    ids = sorted((p.name for p in root.iterdir() if valid_id(p.name)), reverse=True)
    runs = (read_run(data_dir, run_id) for run_id in ids)
    return [summary(run) for run in runs if run is not None]


def read_events(path: Path, notes: list[str], *, max_bytes: int | None = None) -> list[dict[str, Any]]:
    """Every event of a run's events.jsonl (the first `max_bytes` of it, if given); what is skipped, and
    why, goes to `notes`."""
    try:
        with path.open("rb") as file:
            data = file.read() if max_bytes is None else file.read(max_bytes + 1)
    except FileNotFoundError:
        notes.append(f"{path.name} is missing: the run's events (valves, phases, alarms, aborts) are unknown")
        return []
    except OSError as exc:
        notes.append(f"{path.name} cannot be read ({exc}): the run's events are unknown")
        return []
    if max_bytes is not None and len(data) > max_bytes:
        data = data[: data.rfind(b"\n", 0, max_bytes) + 1]
        notes.append(f"{path.name}: only its first {len(data)} bytes are read (at most {max_bytes})")
    lines = data.split(b"\n")
    torn = lines.pop()  # after the last newline: empty, or a line not (yet) completed
    if torn.strip():
        notes.append(
            f"{path.name}: its last line is incomplete ({len(torn)} bytes: still being written, or a "
            "crash?): skipped"
        )
    events, bad = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if isinstance(event, dict):
            events.append(event)
        else:
            bad.append(number)
    if bad:
        listed = ", ".join(map(str, bad[:10])) + (" …" if len(bad) > 10 else "")
        notes.append(f"{path.name}: {len(bad)} line(s) are not JSON objects, skipped (lines {listed})")
    return events
