"""The stop report on its own: what a stopping logger names as unrecorded (CRITICAL) and why."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from services.logger.coverage import Coverage
from services.logger.stop_report import report_at_stop


def test_refused_rows_recorded_since_or_queued_for_repair_are_not_named_unwritten(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    coverage = Coverage()
    coverage.add("s", 30, 5)  # 30..34 of the refused rows were recorded since (repaired)
    with caplog.at_level(logging.CRITICAL, logger="rcs.logger"):
        report_at_stop(
            unwritten={"s": [(10, 19)]},  # buffered, the disk refused them
            refused={"s": [(30, 49)]},  # not taken while memory was full
            coverage=coverage,
            pending={"s": [(40, 45)]},  # queued for repair: 40..44
            disk_error="ENOSPC: No space left on device",
            data_dir=tmp_path,
            ring_seconds=600,
        )
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(lines) == 2, lines
    assert f"20 samples of session s NOT written to {tmp_path} (ENOSPC" in lines[0]
    assert "seq 10..19, 35..39, 45..49." in lines[0]
    assert "5 samples of session s NOT yet fetched from acquisition's ring buffer: seq 40..44." in lines[1]
    assert "for 600 s" in lines[1]


def test_nothing_unrecorded_says_nothing(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    with caplog.at_level(logging.CRITICAL, logger="rcs.logger"):
        report_at_stop(
            unwritten={},
            refused={},
            coverage=Coverage(),
            pending={},
            disk_error=None,
            data_dir=tmp_path,
            ring_seconds=600,
        )
    assert not [r for r in caplog.records if r.levelno == logging.CRITICAL]
