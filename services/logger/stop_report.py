"""What a stopping logger leaves unrecorded, said loudly (CRITICAL) with how to get it back: the rows
the disk refused (held in memory, or not even taken while memory was full) and the ranges still
queued for repair. Acquisition's ring buffer holds them for `acquisition.ring_seconds`: a logger
started again within that span fetches them from it."""

from __future__ import annotations

import logging
from pathlib import Path

from services.common.recording import Intervals, IntervalSet
from services.logger.coverage import Coverage

log = logging.getLogger("rcs.logger")

Ranges = dict[str, list[tuple[int, int]]]  # per session, half-open [start, stop)


def report_at_stop(
    *,
    unwritten: Intervals,
    refused: Intervals,
    coverage: Coverage,
    pending: Ranges,
    disk_error: str | None,
    data_dir: Path,
    ring_seconds: float,
) -> None:
    """`unwritten`: rows buffered but not written; `refused`: rows not taken (memory full), of which
    those not recorded since and not queued for repair count; `pending`: the repairer's queue (it is
    stopped by now)."""
    lost = IntervalSet()
    for session, runs in unwritten.items():
        for first, last in runs:
            lost.add(session, first, last)
    for session, runs in refused.items():
        queued = Coverage()
        for start, stop in pending.get(session, []):
            queued.add(session, start, stop - start)
        for first, last in runs:
            for start, stop in coverage.new_part(session, first, last - first + 1):
                for a, b in queued.new_part(session, start, stop - start):
                    lost.add(session, a, b - 1)
    reason = disk_error or "refused earlier"
    _report(f"NOT written to {data_dir} ({reason})", lost.intervals(), data_dir, ring_seconds)
    _report(
        "NOT yet fetched from acquisition's ring buffer",
        {session: [(a, b - 1) for a, b in ranges] for session, ranges in pending.items()},
        data_dir,
        ring_seconds,
    )


def _report(what: str, runs: Intervals, data_dir: Path, ring_seconds: float) -> None:
    """Say loudly which samples a stop leaves unrecorded (inclusive seq runs), and how to get them."""
    for session, session_runs in runs.items():
        log.critical(
            "stopping with %d samples of session %s %s: seq %s. Acquisition's ring buffer holds them "
            "for %.0f s after they were taken: start rcs-logger again (with space in %s) while "
            "acquisition still runs session %s, and it fetches them from the ring",
            sum(last - first + 1 for first, last in session_runs),
            session,
            what,
            ", ".join(f"{first}..{last}" for first, last in session_runs),
            ring_seconds,
            data_dir,
            session,
        )
