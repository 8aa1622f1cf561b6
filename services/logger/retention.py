"""Retention: keep the recordings in data_dir within a total size and an age."""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from datetime import datetime
from pathlib import Path

from services.common.recording import parse_name

log = logging.getLogger(__name__)

DAY_S = 86_400.0


def enforce(
    data_dir: Path, *, max_bytes: int, max_age_days: float, now: float, protect: Collection[Path]
) -> list[Path]:
    """Delete recordings oldest first while their total exceeds `max_bytes`, and any older than
    `max_age_days` (by the start time in the name; `now` in UNIX seconds). The deleted files.

    Only regular files named exactly like a recording (`sensor_log_*.parquet`) are counted or deleted,
    never one of `protect`. A file that cannot be deleted is logged and still counts.
    """
    protected = {p.resolve() for p in protect}
    recordings: list[tuple[datetime, int, Path, int]] = []
    with os.scandir(data_dir) as entries:
        for entry in entries:
            parsed = parse_name(entry.name)
            if parsed is not None and entry.is_file(follow_symlinks=False):
                recordings.append((*parsed, Path(entry.path), entry.stat(follow_symlinks=False).st_size))
    recordings.sort(key=lambda r: (r[0], r[1]))
    total = sum(size for *_, size in recordings)
    deleted = []
    for start, _, path, size in recordings:
        too_old = now - start.timestamp() > max_age_days * DAY_S
        if not (too_old or total > max_bytes) or path.resolve() in protected:
            continue
        try:
            path.unlink()
        except FileNotFoundError:  # gone meanwhile: no longer counts, but not ours to report
            total -= size
            continue
        except OSError as exc:
            log.warning("retention could not delete %s: %s", path.name, exc)
            continue
        total -= size
        deleted.append(path)
    return deleted
