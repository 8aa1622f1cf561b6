"""The recorder: the one thread that touches the open segment, the coverage and the event log. It
appends, flushes every `flush_s` and rotates; other threads hand it jobs through its inbox (`take_*`,
the repairer's pages and verdicts, and the requests `save_now` and `status`, which wait for the
answer).

Nothing lost: the coverage of each session's `seq` is rebuilt from the files at start (after crash
recovery); a live batch that does not continue it queues a repair of the hole; repaired pages pass
through the same coverage, so nothing is written twice. While the disk refuses writes, rows stay in
memory up to `memory_limit_bytes`; beyond that new rows are not taken, and are repaired from the
ring buffer once the disk is back (if within its 10 minutes). A recorder that cannot write data_dir at
start (e.g. a segment to recover on a full disk) waits for it, taking no telemetry meanwhile; a stop
with rows the disk refused names them (session, seq) in a CRITICAL log line (stop_report.py).
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.common.logs import Throttled
from services.common.recording import IntervalSet, read_intervals
from services.common.rpc import RpcClient, RpcError
from services.common.settings import Settings
from services.common.telemetry import TelemetryBatch
from services.logger.conversion import Conversion
from services.logger.coverage import Coverage
from services.logger.disk import DiskHealth
from services.logger.events import EventLog
from services.logger.lag import Lag
from services.logger.repair import Repaired, Repairer, Unrepairable
from services.logger.segments import SegmentWriter, recover
from services.logger.stats import LoggerStats
from services.logger.stop_report import report_at_stop

REPLY_TIMEOUT_S = 30.0
PREPARE_RETRY_S = 2.0  # how often a recorder that cannot write data_dir at start tries again
log = logging.getLogger("rcs.logger")

Job = Callable[[], None]


class Recorder:
    def __init__(
        self,
        settings: Settings,
        stats: LoggerStats,
        rpc: RpcClient,
        *,
        publish_event: Callable[..., None],
        set_status: Callable[..., None],
    ) -> None:
        """`rpc` reaches acquisition's ring buffer (the repairer's; start and stop `repairer`);
        `publish_event(kind, **fields)` publishes one of the logger's events, `set_status(**fields)`
        updates its status."""
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.stats = stats
        self._publish_event = publish_event
        self._set_status = set_status
        self._problems = Throttled(log)
        self.coverage = Coverage()
        self._sessions: set[str] = set()
        self._ready = threading.Event()  # data_dir recovered and loaded: telemetry is recorded
        self._stopping = threading.Event()
        self.events = EventLog(self.data_dir)
        self.writer: SegmentWriter | None = None
        self._channels: tuple[str, ...] = ()
        self._refused = IntervalSet()  # rows not taken while memory was full (see stop_report.py)
        self._inbox: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.repairer = Repairer(
            rpc,
            settings,
            on_repaired=lambda page: self._inbox.put(lambda: self._on_repaired(page)),
            on_unrepairable=lambda gap: self._inbox.put(lambda: self._on_unrepairable(gap)),
        )
        self.lag = Lag(settings.logger.behind_after_s, self._on_lag)
        self.disk = DiskHealth(self.data_dir, stats, publish_event=publish_event, set_status=set_status)
        self.conversion = Conversion(
            self.data_dir,
            settings.logger,
            stats,
            post=self._inbox.put,
            open_segment=lambda: None if self.writer is None else self.writer.path,
        )
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop_waiting_for_disk(self) -> None:
        """A recorder still waiting for data_dir at start gives up (the first step of a stop)."""
        self._stopping.set()

    def stop(self) -> None:
        """Run what is queued, flush, report what stays unrecorded, close and convert the segment.
        Call after the repairer and the inputs stopped."""
        self._inbox.put(None)
        self._thread.join(timeout=30)
        self.conversion.shutdown()

    # --- other threads: hand over --------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """data_dir is loaded: telemetry taken now is recorded (the first batch asks for the repair
        of what came before)."""
        return self._ready.is_set()

    def take_batch(self, batch: TelemetryBatch) -> None:
        def record() -> None:
            self.lag.taken()
            self._record(batch.session, batch.seq, batch.channels, batch.t, batch.data, live=True)

        self.lag.queued(float(batch.t[0]))
        self._inbox.put(record)
        self.lag.check()

    def take_event(self, event: dict[str, Any]) -> None:
        self._inbox.put(lambda: self._log_event(event))

    def _on_lag(self, behind_s: float | None) -> None:
        if behind_s is None:
            log.info("recording caught up with the telemetry")
        else:
            log.warning("recording is behind: telemetry has waited %.1f s to be recorded", behind_s)
        self._set_status(behind_s=None if behind_s is None else round(behind_s, 3))

    # --- the recorder thread -----------------------------------------------------------------

    def _prepare(self) -> bool:
        """Recover and load what data_dir holds, waiting (and saying so) while the disk refuses; False
        if stopped first. Until then live telemetry is refused: the ring buffer supplies it later."""
        while True:
            try:
                self.data_dir.mkdir(parents=True, exist_ok=True)
                self._recover()
            except OSError as exc:
                self.disk.failed(exc, action="waiting for it to be writable before recording")
                if self._stopping.wait(PREPARE_RETRY_S):
                    return False
                continue
            self.disk.recovered()
            self._ready.set()
            log.info("recording to %s", self.data_dir.resolve())
            return True

    def _recover(self) -> None:
        for path in recover(self.data_dir, self.settings.logger):
            log.warning("recovered %s from a segment a crash left behind", path.name)
        for path in sorted(self.data_dir.glob("sensor_log_*.parquet")):
            for session, intervals in read_intervals(path).items():
                self.coverage.load(session, intervals)
                self._sessions.add(session)

    def _run(self) -> None:
        if not self._prepare():
            return
        period = self.settings.logger.flush_s
        next_flush = time.monotonic() + period
        while True:
            try:
                job = self._inbox.get(timeout=max(0.0, next_flush - time.monotonic()))
            except queue.Empty:
                job = _idle
            if job is None:
                break
            try:
                job()
                if time.monotonic() >= next_flush:
                    next_flush = time.monotonic() + period
                    self._flush()
                    self._rotate_if_due()
            except Exception:  # one bad job must not stop the recording
                self._problems.warning("job", "recorder job failed", exc_info=True)
            self.lag.check()
        self._flush()
        self._report_at_stop()
        self._close_segment(wait=True)
        self.events.close()

    def _record(
        self,
        session: str,
        first_seq: int,
        channels: tuple[str, ...],
        t: npt.NDArray[np.float64],
        data: npt.NDArray[np.float32],
        *,
        live: bool,
    ) -> None:
        if channels != self._channels:
            if self.writer is not None:
                log.warning("channels changed: starting a new file")
                self._close_segment(wait=False)
            self.writer = SegmentWriter(self.data_dir, channels, self.settings.logger)
            self._channels = channels
        assert self.writer is not None
        self._sessions.add(session)
        n = len(t)
        if self._memory_full():
            self.stats.samples_refused_total += n
            self._refused.add(session, first_seq, first_seq + n - 1)
            return  # not covered: the first live batch after the disk is back asks for the repair
        if live:
            last = self.coverage.last(session)
            expected = 0 if last is None else last + 1
            if first_seq > expected:
                self.stats.gaps_total += 1
                self.repairer.request(session, expected, first_seq)
        written = 0
        for start, stop in self.coverage.new_part(session, first_seq, n):
            lo, hi = start - first_seq, stop - first_seq
            self.writer.append(session, start, t[lo:hi], data[lo:hi])
            self.coverage.add(session, start, stop - start)
            written += stop - start
        self.stats.samples_written_total += written
        self.stats.duplicates_skipped_total += n - written

    def _on_repaired(self, page: Repaired) -> None:
        self.stats.repaired_samples_total += len(page.seq)
        # the page is consecutive by contract; the coverage drops whatever arrived live meanwhile
        self._record(page.session, int(page.seq[0]), page.channels, page.t, page.data, live=False)

    def _on_unrepairable(self, gap: Unrepairable) -> None:
        self.stats.unrepairable_samples_total += gap.size
        log.error(
            "lost %d samples of session %s (seq %d..%d): %s",
            gap.size,
            gap.session,
            gap.seq_from,
            gap.seq_to - 1,
            gap.reason,
        )
        self._publish_event(
            "gap",
            session=gap.session,
            seq_from=gap.seq_from,
            seq_to=gap.seq_to,
            size=gap.size,
            reason=gap.reason,
        )

    def _log_event(self, event: dict[str, Any]) -> None:
        self.stats.events_total += 1
        self.events.append(event)

    def _memory_full(self) -> bool:
        if self.disk.error is None or self.writer is None:
            return False
        row_bytes = 8 + 8 + 4 * len(self._channels)
        return self.writer.buffered_rows * row_bytes >= self.settings.logger.memory_limit_bytes

    def _flush(self) -> None:
        try:
            if self.writer is not None:
                self.writer.flush()
            self.events.flush()
        except OSError as exc:
            self.disk.failed(exc, action="keeping data in memory and retrying")
            return
        self.disk.recovered()

    def _report_at_stop(self) -> None:
        """The repairer is stopped by now: what it still queues stays unfetched."""
        report_at_stop(
            unwritten={} if self.writer is None else self.writer.unwritten(),
            refused=self._refused.intervals(),
            coverage=self.coverage,
            pending=self.repairer.pending(),
            disk_error=self.disk.error,
            data_dir=self.data_dir,
            ring_seconds=self.settings.acquisition.ring_seconds,
        )

    def _rotate_if_due(self) -> None:
        if self.disk.error is not None:
            return
        self.conversion.retry_failed()
        if self.writer is not None and self.writer.due(time.time()):
            self._close_segment(wait=False)

    def _close_segment(self, *, wait: bool) -> Future[Path | None] | None:
        """Close the open segment and convert it to Parquet on the converter thread."""
        if self.writer is None or self.disk.error is not None:
            return None
        try:
            arrows = self.writer.close_segment()
        except OSError as exc:
            self._problems.warning("close", "cannot close the segment: %s", exc)
            return None
        if arrows is None:
            return None
        future = self.conversion.submit(arrows)
        if wait:
            future.result()
        return future

    # --- requests (handler threads: post to the recorder and wait) ----------------------------

    def _on_recorder(self, job: Callable[[], Any]) -> Any:
        done: Future[Any] = Future()

        def run() -> None:
            try:
                done.set_result(job())
            except Exception as exc:
                done.set_exception(exc)

        self._inbox.put(run)
        return done.result(timeout=REPLY_TIMEOUT_S)

    def save_now(self) -> dict[str, Any]:
        """Flush and close the open segment, and wait for its Parquet file: `{file, path, size}`."""

        def rotate() -> Future[Path | None] | None:
            self._flush()
            if self.disk.error is not None:
                raise RpcError(f"the data directory cannot be written: {self.disk.error}")
            return self._close_segment(wait=False)

        conversion = self._on_recorder(rotate)
        parquet = None if conversion is None else conversion.result(timeout=REPLY_TIMEOUT_S)
        if parquet is None:
            raise RpcError("nothing recorded since the last file")
        return {"file": parquet.name, "path": str(parquet), "size": parquet.stat().st_size}

    def status(self) -> dict[str, Any]:
        """What is recorded per session, the open segment, the disk and the counters."""

        def snapshot() -> dict[str, Any]:
            writer = self.writer
            segment = {} if writer is None else writer.intervals()
            return {
                "data_dir": str(self.data_dir.resolve()),
                "sessions": {
                    session: [[start, stop - 1] for start, stop in self.coverage.intervals(session)]
                    for session in sorted(self._sessions)
                },
                "buffered_rows": 0 if writer is None else writer.buffered_rows,
                "segment_rows": sum(last - first + 1 for runs in segment.values() for first, last in runs),
                "open_segment": None if writer is None or writer.path is None else writer.path.name,
                "disk_error": self.disk.error,
                "repair_pending": self.repairer.pending_samples,
                "stats": asdict(self.stats),
            }

        result: dict[str, Any] = self._on_recorder(snapshot)
        try:  # outside the recorder thread: a slow file system must not hold up recording
            result["disk_free_bytes"] = shutil.disk_usage(self.data_dir).free
        except OSError:
            result["disk_free_bytes"] = None
        return result


def _idle() -> None:
    return None
