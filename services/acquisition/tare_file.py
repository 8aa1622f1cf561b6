"""The tare offsets on disk: one JSON file (`acquisition.tare_file`, default `<data_dir>/tare.json`),
replaced atomically, read at start (docs/configuration.md §2.4).

`{"v": 1, "channels": {"THRUST": {"offset": 12.3, "unit": "N", "at": 1764636000.0, "by": "alice",
"seconds": 2.0, "samples": 20000}}}`
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

VERSION = 1


@dataclass(frozen=True)
class TareEntry:
    """One channel's zero: `offset` (engineering units) is subtracted from every sample."""

    offset: float
    unit: str
    at: float  # UNIX s, when it was taken
    by: str  # who asked (the operator, as actuation audited it)
    seconds: float  # the window it is the mean of
    samples: int  # how many samples that window held


class TareFileError(ValueError):
    """The file cannot be used: the message names the file and the problem (one line)."""


def load(path: Path, measured: frozenset[str]) -> dict[str, TareEntry]:
    """The entries of `path` (none if it does not exist); raises TareFileError."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise TareFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise TareFileError(f"{path}: not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("v") != VERSION:
        raise TareFileError(f'{path}: expected a map with "v": {VERSION}')
    channels = document.get("channels")
    if not isinstance(channels, dict):
        raise TareFileError(f"{path}: 'channels' must be a map of channel name to tare")
    entries: dict[str, TareEntry] = {}
    for name, entry in channels.items():
        if name not in measured:
            raise TareFileError(f"{path}: channels.{name}: not a measured channel of this stand")
        entries[name] = _entry(path, name, entry)
    return entries


def _entry(path: Path, name: str, entry: Any) -> TareEntry:
    fields = TareEntry.__dataclass_fields__
    if not isinstance(entry, dict) or set(entry) != set(fields):
        raise TareFileError(f"{path}: channels.{name}: expected the keys {', '.join(fields)}")
    numbers = ("offset", "at", "seconds", "samples")
    if any(
        isinstance(entry[k], bool) or not isinstance(entry[k], int | float) or not math.isfinite(entry[k])
        for k in numbers
    ):
        raise TareFileError(f"{path}: channels.{name}: {', '.join(numbers)} must be finite numbers")
    if not isinstance(entry["unit"], str) or not isinstance(entry["by"], str):
        raise TareFileError(f"{path}: channels.{name}: 'unit' and 'by' must be strings")
    return TareEntry(
        float(entry["offset"]),
        entry["unit"],
        float(entry["at"]),
        entry["by"],
        float(entry["seconds"]),
        int(entry["samples"]),
    )


def save(path: Path, entries: dict[str, TareEntry]) -> None:
    """Replace `path` atomically (a reader or a crash sees the old file or the new one); raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"v": VERSION, "channels": {name: asdict(entry) for name, entry in sorted(entries.items())}}
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w") as file:
        json.dump(document, file, indent=1)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
