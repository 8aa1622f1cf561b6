"""A run directory, `data_dir/runs/<id>/`, as the logger writes it (docs/protocol.md, "Test runs").

    run.json         the run's metadata: id, name, notes, operators, stand, started_at, ended_at,
                     procedure, result, config_yaml, config_sha256, version, tare, pretrigger_s, ...
    samples.parquet  its samples, a recording in the logger's format (services/common/recording.py)
    events.jsonl     its events, one JSON object per line, as the logger's event files

What cannot be read is said, never skipped silently: a run directory without run.json or samples is a
`RunError`; an events line that is not a JSON object, a torn last line or a missing events file is a
note the report shows.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from services.analyze.load import Recording, RecordingError, open_recording
from services.common import runs as layout
from services.common.settings import Settings


class RunError(Exception):
    """A run directory that is missing or that lacks what every run has."""


@dataclass(slots=True)
class Run:
    path: Path
    meta: dict[str, Any]
    samples: Recording
    events: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)  # what could not be read, and why

    @property
    def id(self) -> str:
        return str(self.meta.get("id") or self.path.name)

    def time(self, key: str) -> float | None:
        """A time of run.json (`started_at`, `ended_at`, ...) as UNIX seconds, if it is one."""
        return unix_time(self.meta.get(key))


def unix_time(value: Any) -> float | None:
    """UNIX seconds from a number or an ISO 8601 string (UTC unless it has an offset); else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    return None


def resolve(run: str, data_dir: Path) -> Path:
    """A run directory given as a path, or as an id under `data_dir/runs/`."""
    as_path = Path(run)
    if as_path.is_dir():
        return as_path
    try:
        path = layout.run_dir(data_dir, run)
    except ValueError:
        raise RunError(f"{run}: no such run directory") from None
    if not path.is_dir():
        raise RunError(f"no run {run!r}: {path} is not a directory")
    return path


def samples_path(directory: Path) -> Path:
    return directory / layout.SAMPLES


def load(directory: Path) -> Run:
    """The run in `directory`; RunError naming what is missing or unreadable."""
    if not directory.is_dir():
        raise RunError(f"{directory}: not a directory")
    if not (directory / layout.RUN_JSON).exists() and any(directory.glob(f"{layout.SAMPLES}.*")):
        raise RunError(
            f"{directory}: the run is still being recorded (or was interrupted): no {layout.RUN_JSON} yet, "
            f"and its samples are readable only once the logger has closed its {layout.SAMPLES}"
        )
    meta = _meta(directory / layout.RUN_JSON)
    try:
        samples = open_recording(samples_path(directory))
    except RecordingError as exc:
        raise RunError(f"{directory} is not a complete run: {exc}") from exc
    problems = meta.get("problems")
    notes = [f"while recording: {p}" for p in problems] if isinstance(problems, list) else []
    events = layout.read_events(directory / layout.EVENTS, notes)
    return Run(directory, meta, samples, events, notes)


def recorded_settings(run: Run, current: Settings) -> Settings:
    """The stand configuration the run was recorded with (run.json's copy of stand.yaml, without
    today's RCS_* overrides): its channel names, limits and report settings are the ones the run had.
    `current`, with a note saying why, when the copy is missing or no longer valid."""
    text = run.meta.get("config_yaml")
    if not isinstance(text, str):
        run.notes.append(f"{layout.RUN_JSON} has no copy of stand.yaml: today's configuration is used")
        return current
    try:
        return Settings.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        first = str(exc).strip().splitlines()[0]
        run.notes.append(f"the run's copy of stand.yaml is not valid today ({first}): today's is used")
        return current


def _meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RunError(f"{path.parent} is not a run: no {layout.RUN_JSON}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: cannot read it ({exc})") from exc
    except ValueError as exc:
        raise RunError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise RunError(f"{path}: not a JSON object")
    return meta
