"""Retention: oldest recordings first, by size and by age; never a protected file or a non-recording."""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.recording import parquet_name
from services.logger.retention import enforce

DAY = timedelta(days=1)
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def recording(data_dir: Path, start: datetime, n: int, size: int) -> Path:
    path = data_dir / parquet_name(start, n)
    path.write_bytes(b"\0" * size)
    return path


def run(
    data_dir: Path, *, max_bytes: int = 10**9, max_age_days: float = 90, protect: tuple[Path, ...] = ()
) -> list[Path]:
    return enforce(
        data_dir, max_bytes=max_bytes, max_age_days=max_age_days, now=NOW.timestamp(), protect=protect
    )


def test_oldest_first_by_time_then_n(tmp_path: Path) -> None:
    newest = recording(tmp_path, NOW - timedelta(hours=1), 0, 100)
    second_of_same = recording(tmp_path, NOW - timedelta(hours=2), 1, 100)
    first_of_same = recording(tmp_path, NOW - timedelta(hours=2), 0, 100)
    tenth_of_older = recording(tmp_path, NOW - timedelta(hours=3), 10, 100)
    assert run(tmp_path, max_bytes=150) == [tenth_of_older, first_of_same, second_of_same]
    assert [p.name for p in tmp_path.iterdir()] == [newest.name]


def test_nothing_deleted_within_limits(tmp_path: Path) -> None:
    recording(tmp_path, NOW - 89 * DAY, 0, 100)
    recording(tmp_path, NOW - DAY, 0, 100)
    assert run(tmp_path, max_bytes=200, max_age_days=90) == []
    assert len(list(tmp_path.iterdir())) == 2


def test_age_limit_deletes_old_files_whatever_the_size(tmp_path: Path) -> None:
    old = recording(tmp_path, NOW - 91 * DAY, 0, 1)
    older = recording(tmp_path, NOW - 400 * DAY, 3, 1)
    recent = recording(tmp_path, NOW - 89 * DAY, 0, 1)
    assert run(tmp_path, max_age_days=90) == [older, old]
    assert [p.name for p in tmp_path.iterdir()] == [recent.name]


def test_protected_files_are_never_deleted(tmp_path: Path) -> None:
    protected_old = recording(tmp_path, NOW - 200 * DAY, 0, 100)
    middle = recording(tmp_path, NOW - 2 * DAY, 0, 100)
    protected_new = recording(tmp_path, NOW - DAY, 0, 100)
    # relative or absolute, the same file is protected
    relative = Path(os.path.relpath(protected_new))
    assert run(tmp_path, max_bytes=0, protect=(protected_old, relative)) == [middle]
    assert sorted(tmp_path.iterdir()) == sorted([protected_old, protected_new])


def test_only_recordings_are_touched_or_counted(tmp_path: Path) -> None:
    start = NOW - 365 * DAY
    others = [
        "notes.parquet",
        "sensor_log_20240101_000000_01.parquet",
        parquet_name(start, 0) + ".tmp",
        parquet_name(start, 1).replace(".parquet", ".arrows"),
        "sensor_log_20241399_000000_0.parquet",
    ]
    for name in others:
        (tmp_path / name).write_bytes(b"\0" * 1000)
    (tmp_path / parquet_name(start, 2)).mkdir()
    (tmp_path / parquet_name(start, 3)).symlink_to(tmp_path / "notes.parquet")
    sub = tmp_path / "archive"
    sub.mkdir()
    recording(sub, start, 0, 1000)
    kept = recording(tmp_path, NOW, 0, 10)
    assert run(tmp_path, max_bytes=10, max_age_days=1) == []
    assert kept.exists()
    assert (sub / parquet_name(start, 0)).exists()
    assert all((tmp_path / name).exists() for name in others)


files = st.lists(
    st.tuples(st.integers(0, 30), st.integers(0, 3), st.integers(0, 100), st.booleans()),
    max_size=15,
    unique_by=lambda f: (f[0], f[1]),
)


@settings(max_examples=60, deadline=None)
@given(files=files, max_bytes=st.integers(0, 800), max_age_days=st.floats(0.5, 40))
def test_deletes_the_fewest_oldest_files(
    files: list[tuple[int, int, int, bool]], max_bytes: int, max_age_days: float
) -> None:
    """Deleted = the unprotected files, oldest first, that are too old or needed to get under max_bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        made = []
        for days_ago, n, size, protected in files:
            start = NOW - timedelta(days=days_ago)  # files of the same second differ by n
            made.append((start, n, recording(data_dir, start, n, size), size, protected))
        made.sort(key=lambda f: (f[0], f[1]))
        protect = tuple(path for *_, path, _, protected in made if protected)

        deleted = run(data_dir, max_bytes=max_bytes, max_age_days=max_age_days, protect=protect)

        expected, total = [], sum(size for *_, size, _ in made)
        for start, _, path, size, protected in made:
            too_old = NOW - start > timedelta(days=max_age_days)
            if not protected and (too_old or total > max_bytes):
                expected.append(path)
                total -= size
        assert deleted == expected
        assert sorted(data_dir.iterdir()) == sorted(path for *_, path, _, _ in made if path not in expected)
        unprotected_left = [p for _, _, p, _, protected in made if not protected and p not in expected]
        if unprotected_left:
            assert total <= max_bytes
