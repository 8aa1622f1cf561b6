"""rcs-logger: every telemetry sample to Parquet exactly once, and every event to JSON Lines.

Threads: paho's (decodes and queues; never writes), the recorder (the only one touching the open
segment, the coverage and the event log: it appends, flushes every `flush_s`, rotates), the
converter (open segment -> Parquet, off the recorder's path), the repairer (asks acquisition's ring
buffer for what is missing) and the request handlers (save now, status), which post to the recorder.

Nothing lost: the coverage of each session's `seq` is rebuilt from the files at start (after crash
recovery); a live batch that does not continue it queues a repair of the hole; repaired pages pass
through the same coverage, so nothing is written twice. While the disk refuses writes, rows stay in
memory up to `memory_limit_bytes`; beyond that new rows are not taken, and are repaired from the
ring buffer once the disk is back (if within its 10 minutes). A logger that cannot write data_dir at
start (e.g. a segment to recover on a full disk) waits for it, taking no telemetry meanwhile; a stop
with rows the disk refused names them (session, seq) in a CRITICAL log line: a logger started again
within the ring's span fetches them from it.

What is wrong is in the retained status: `disk`/`disk_error` while writing fails, `behind_s` while
the oldest telemetry not yet recorded is older than `logger.behind_after_s` (services/logger/lag.py).
"""

from __future__ import annotations

import errno
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.common import audit, topics
from services.common.codec import unpack_map
from services.common.lifecycle import run_service
from services.common.logs import DropMalformed, Throttled
from services.common.mqtt import Message, MqttClient
from services.common.recording import Intervals, IntervalSet, read_intervals
from services.common.rpc import RpcClient, RpcError, RpcServer
from services.common.settings import Settings
from services.common.telemetry import decode_batch
from services.logger.coverage import Coverage
from services.logger.events import EventLog
from services.logger.lag import Lag
from services.logger.repair import Repaired, Repairer, Unrepairable
from services.logger.retention import enforce
from services.logger.segments import SegmentWriter, convert_segment, recover

SERVICE = "logger"
REPLY_TIMEOUT_S = 30.0
PREPARE_RETRY_S = 2.0  # how often a logger that cannot write data_dir at start tries again
log = logging.getLogger("rcs.logger")

Job = Callable[[], None]


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


class Recorder:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.stats = LoggerStats()
        self._problems = Throttled(log)
        self._decode = DropMalformed(self.stats, "malformed_total", self._problems)
        self.coverage = Coverage()
        self._sessions: set[str] = set()
        self._ready = threading.Event()  # data_dir recovered and loaded: telemetry is recorded
        self._stopping = threading.Event()
        self.events = EventLog(self.data_dir)
        self.writer: SegmentWriter | None = None
        self._channels: tuple[str, ...] = ()
        self._converting: set[Path] = set()
        self._unconverted: list[Path] = []  # segments whose conversion failed (disk full)
        self._disk_error: str | None = None
        self._refused = IntervalSet()  # rows not taken while memory was full (see _report_at_stop)
        self._inbox: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.lag = Lag(settings.logger.behind_after_s, self._on_lag)

        self.mqtt = MqttClient(settings.mqtt, SERVICE)
        self.rpc_client = RpcClient(self.mqtt)
        self.rpc_server = RpcServer(self.mqtt)
        self.repairer = Repairer(
            self.rpc_client,
            settings,
            on_repaired=lambda page: self._inbox.put(lambda: self._on_repaired(page)),
            on_unrepairable=lambda gap: self._inbox.put(lambda: self._on_unrepairable(gap)),
        )
        self.converter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="logger-convert")
        self.mqtt.subscribe(topics.TELEMETRY, self._on_telemetry)
        self.mqtt.subscribe(topics.EVENTS, self._on_event, qos=1)
        self.rpc_server.serve(topics.LOGGER_SAVE, self._save_now)
        self.rpc_server.serve(topics.LOGGER_STATUS, self._status)
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)

    def _prepare(self) -> bool:
        """Recover and load what data_dir holds, waiting (and saying so) while the disk refuses; False
        if stopped first. Until then live telemetry is refused: the ring buffer supplies it later."""
        while True:
            try:
                self.data_dir.mkdir(parents=True, exist_ok=True)
                self._recover()
            except OSError as exc:
                self._disk_failed(exc, action="waiting for it to be writable before recording")
                if self._stopping.wait(PREPARE_RETRY_S):
                    return False
                continue
            self._disk_recovered()
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

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self.repairer.start()
        self.mqtt.start()

    def stop(self) -> None:
        self._stopping.set()
        self.rpc_server.close()
        self.repairer.stop()
        self.mqtt.stop()
        self._inbox.put(None)
        self._thread.join(timeout=30)
        self.converter.shutdown(wait=True)
        self.rpc_client.close()

    # --- paho's thread: decode and queue ------------------------------------------------------

    def _on_telemetry(self, message: Message) -> None:
        if not self._ready.is_set():
            return  # data_dir not loaded yet: the first batch after it is asks for the repair
        batch = self._decode(decode_batch, message.payload, "malformed", "telemetry")
        if batch is None:
            return

        def record() -> None:
            self.lag.taken()
            self._record(batch.session, batch.seq, batch.channels, batch.t, batch.data, live=True)

        self.lag.queued(float(batch.t[0]))
        self._inbox.put(record)
        self.lag.check()

    def _on_lag(self, behind_s: float | None) -> None:
        if behind_s is None:
            log.info("recording caught up with the telemetry")
        else:
            log.warning("recording is behind: telemetry has waited %.1f s to be recorded", behind_s)
        self.mqtt.set_status(behind_s=None if behind_s is None else round(behind_s, 3))

    def _on_event(self, message: Message) -> None:
        event = self._decode(unpack_map, message.payload, "malformed-event", "event")
        if event is None:
            return
        attributed, forged = audit.attribute_event(message.topic, event)
        if forged:
            self.stats.forged_events_total += 1
            self._problems.warning(
                f"forged-event:{attributed['publisher']}",
                "recorded a forged event: login %s published it as service %r",
                attributed["publisher"],
                event.get("service"),
            )
        self._inbox.put(lambda: self._log_event(attributed))

    # --- the recorder thread -----------------------------------------------------------------

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
        if self._disk_error is None or self.writer is None:
            return False
        row_bytes = 8 + 8 + 4 * len(self._channels)
        return self.writer.buffered_rows * row_bytes >= self.settings.logger.memory_limit_bytes

    def _flush(self) -> None:
        try:
            if self.writer is not None:
                self.writer.flush()
            self.events.flush()
        except OSError as exc:
            self._disk_failed(exc, action="keeping data in memory and retrying")
            return
        self._disk_recovered()

    def _disk_failed(self, exc: OSError, *, action: str) -> None:
        self.stats.disk_errors_total += 1
        reason = f"{errno.errorcode.get(exc.errno or 0, 'error')}: {exc.strerror or exc}"
        if self._disk_error is None:
            log.error("cannot write to %s (%s): %s", self.data_dir, reason, action)
            self._publish_event("disk_error", reason=reason, data_dir=str(self.data_dir))
            self.mqtt.set_status(disk="error", disk_error=reason)
        self._disk_error = reason

    def _disk_recovered(self) -> None:
        if self._disk_error is not None:
            log.warning("writing to %s again", self.data_dir)
            self._publish_event("disk_ok", data_dir=str(self.data_dir))
            self.mqtt.set_status(disk="ok", disk_error=None)
            self._disk_error = None

    def _report_at_stop(self) -> None:
        """Say loudly what this stop leaves unrecorded (the repairer is stopped by now): rows the disk
        refused, held in memory or not even taken (memory full), and ranges queued for repair."""
        pending = self.repairer.pending()
        unwritten = IntervalSet()
        for session, runs in ({} if self.writer is None else self.writer.unwritten()).items():
            for first, last in runs:
                unwritten.add(session, first, last)
        for session, runs in self._refused.intervals().items():
            queued = Coverage()
            for start, stop in pending.get(session, []):
                queued.add(session, start, stop - start)
            for first, last in runs:
                for start, stop in self.coverage.new_part(session, first, last - first + 1):
                    for a, b in queued.new_part(session, start, stop - start):
                        unwritten.add(session, a, b - 1)
        reason = self._disk_error or "refused earlier"
        self._report_unrecorded(f"NOT written to {self.data_dir} ({reason})", unwritten.intervals())
        self._report_unrecorded(
            "NOT yet fetched from acquisition's ring buffer",
            {session: [(a, b - 1) for a, b in ranges] for session, ranges in pending.items()},
        )

    def _report_unrecorded(self, what: str, runs: Intervals) -> None:
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
                self.settings.acquisition.ring_seconds,
                self.data_dir,
                session,
            )

    def _rotate_if_due(self) -> None:
        if self._disk_error is not None:
            return
        for arrows in self._unconverted:
            self._converting.add(arrows)
            self.converter.submit(self._convert, arrows)
        self._unconverted.clear()
        if self.writer is not None and self.writer.due(time.time()):
            self._close_segment(wait=False)

    def _close_segment(self, *, wait: bool) -> Future[Path | None] | None:
        """Close the open segment and convert it to Parquet on the converter thread."""
        if self.writer is None or self._disk_error is not None:
            return None
        try:
            arrows = self.writer.close_segment()
        except OSError as exc:
            self._problems.warning("close", "cannot close the segment: %s", exc)
            return None
        if arrows is None:
            return None
        self._converting.add(arrows)
        future = self.converter.submit(self._convert, arrows)
        if wait:
            future.result()
        return future

    def _convert(self, arrows: Path) -> Path | None:
        try:
            parquet = convert_segment(arrows, self.settings.logger)
        except OSError as exc:  # the .arrows stays; retried once writing works (or by recover())
            self._problems.warning("convert", "cannot convert %s: %s", arrows.name, exc)
            self._inbox.put(lambda: self._unconverted.append(arrows))
            return None
        finally:
            self._converting.discard(arrows)
        if parquet is not None:
            self.stats.files_total += 1
            log.info("wrote %s", parquet.name)
            self._enforce_retention(parquet)
        return parquet

    def _enforce_retention(self, newest: Path) -> None:
        protect = {newest, *self._converting}
        if self.writer is not None and self.writer.path is not None:
            protect.add(self.writer.path)
        logger = self.settings.logger
        for path in enforce(
            self.data_dir,
            max_bytes=logger.retention_max_bytes,
            max_age_days=logger.retention_max_age_days,
            now=time.time(),
            protect=protect,
        ):
            log.info("retention: deleted %s", path.name)

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

    def _save_now(self, _request: dict[str, Any]) -> dict[str, Any]:
        def rotate() -> Future[Path | None] | None:
            self._flush()
            if self._disk_error is not None:
                raise RpcError(f"the data directory cannot be written: {self._disk_error}")
            return self._close_segment(wait=False)

        conversion = self._on_recorder(rotate)
        parquet = None if conversion is None else conversion.result(timeout=REPLY_TIMEOUT_S)
        if parquet is None:
            raise RpcError("nothing recorded since the last file")
        return {"file": parquet.name, "path": str(parquet), "size": parquet.stat().st_size}

    def _status(self, _request: dict[str, Any]) -> dict[str, Any]:
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
                "disk_error": self._disk_error,
                "repair_pending": self.repairer.pending_samples,
                "stats": asdict(self.stats),
            }

        result: dict[str, Any] = self._on_recorder(snapshot)
        return result

    def _publish_event(self, kind: str, **fields: Any) -> None:
        self.mqtt.publish(topics.events(SERVICE), audit.event_payload(SERVICE, kind, fields), qos=1)

    def metrics(self) -> dict[str, float]:
        return {
            **asdict(self.stats),
            "disk_ok": float(self._disk_error is None),
            "behind": float(self.lag.behind),
            "repair_pending_samples": float(self.repairer.pending_samples),
        }


def _idle() -> None:
    return None


def main() -> None:
    run_service(SERVICE, Recorder, lambda settings: settings.logger.metrics_port)


if __name__ == "__main__":
    main()
