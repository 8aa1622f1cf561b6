"""The logger's counters: in its status (`stats`) and its metrics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LoggerStats:
    samples_written_total: int = 0
    duplicates_skipped_total: int = 0
    malformed_total: int = 0
    forged_events_total: int = 0  # events whose `service` is not the login that published them
    gaps_total: int = 0
    repaired_samples_total: int = 0
    unrepairable_samples_total: int = 0
    samples_refused_total: int = 0  # not taken while the disk was failing and memory full
    files_total: int = 0
    disk_errors_total: int = 0
    events_total: int = 0
