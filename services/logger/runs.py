"""Test runs on disk (docs/protocol.md, *Test runs*; layout in services/common/runs.py): each run that
actuation announces on `rcs/state/run` becomes `data_dir/runs/<id>/` with its samples, its events and
its `run.json`, then its report (`rcs-analyze report <dir>`).

A thread of its own, apart from the continuous recording (recorder.py), which it never waits for nor
touches: paho's thread hands it the run state, the events and, only while a run is recorded, the
telemetry batches (at most `MAX_QUEUED_BATCHES` waiting; beyond that a batch is dropped and its
samples fetched again from acquisition's ring buffer, like any hole). A run's samples are its
pre-trigger window (`pretrigger_s` before its start, from the ring buffer through
`rcs/rpc/acquisition/history`) and then the live samples until its end; its events those from the
same moment on. A logger started during a run (or after one it missed, while the ring buffer still
holds it) records it the same way: what it missed comes from the ring buffer, and the events an
earlier logger wrote from the daily events files. A run that vanishes without ending (actuation
restarted) ends `interrupted`. The report runs on another worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from services.common import runs as layout
from services.common import topics
from services.common.logs import Throttled
from services.common.rpc import RpcClient, RpcError, RpcTimeout
from services.common.settings import Settings, config_file
from services.common.telemetry import TelemetryBatch
from services.logger.events import cut_torn_line, event_line, recent_lines
from services.logger.run_samples import RunSamples

log = logging.getLogger("rcs.logger.runs")

MAX_QUEUED_BATCHES = 2000  # ~20 s of 10 ms batches (~20 MB at 10 kHz x 22 channels)
RECENT_EVENTS = 10_000  # kept for the pre-trigger window of the next run
RECENT_EVENTS_BYTES = 8 << 20  # of the events files read at start, for the same
END_WAIT_S = 3.0  # after a run's end, its last live samples may take this long after the previous ones
END_WAIT_MAX_S = 120.0  # ...but the run is finalized this long after its end at the latest
EVENTS_AFTER_S = 0.5  # events this soon after a run's end are its own (e.g. the audit of its run_stop)
EVENTS_WAY_S = 0.5  # ...and get here before telemetry taken this long after them
HISTORY_TIMEOUT_S = 10.0
HISTORY_PAGE = 50_000
PROBES = 8  # tries to find the seq of a run's first sample in the ring buffer
WAKE_S = 0.5

Job = Callable[[], None]


class _StoppingError(Exception):
    """The logger is stopping: a report not yet started is left pending."""


@dataclass
class RunStats:
    runs_recorded_total: int = 0
    run_batches_dropped_total: int = 0  # the queue was full: refetched from the ring buffer
    run_errors_total: int = 0  # a run could not be written (disk), or the ring buffer did not answer


@dataclass
class _Recording:
    run: dict[str, Any]  # as in rcs/state/run (its end filled in when it ends)
    dir: Path
    t_from: float  # UNIX s: its first sample (start - pretrigger_s)
    events: BinaryIO
    events_before: set[bytes]  # the lines an earlier logger wrote to `events` (recorded once)
    events_written: int = 0
    samples: RunSamples | None = None  # opened with the first telemetry (its channels)
    session: str | None = None
    expected: int = 0  # the next seq of `session` wanted
    end_by: float | None = None  # monotonic: finalized then at the latest, samples past its end or not
    progress_at: float = 0.0  # monotonic: when the last live batch came
    seen_t: float = 0.0  # the newest sample time seen (written or not)
    problems: list[str] = field(default_factory=list)

    @property
    def ended_at(self) -> float | None:
        value = self.run.get("ended_at")
        return float(value) if isinstance(value, int | float) else None


class RunRecorder:
    def __init__(
        self,
        settings: Settings,
        rpc: RpcClient,
        *,
        publish_event: Callable[..., None],
        stats: RunStats | None = None,
    ) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.stats = stats or RunStats()
        self._rpc = rpc
        self._publish_event = publish_event
        self._problems = Throttled(log)
        self._inbox: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued_batches = 0
        self._wanted = False  # batches are queued only while a run is being recorded
        self._latest: TelemetryBatch | None = None  # the newest live batch (paho's thread writes it)
        self._recent: deque[tuple[float, bytes]] = deque(maxlen=RECENT_EVENTS)
        self._read_at_start: set[bytes] = set()  # the events of `_recent` read from the events files
        self._tare: Any = None
        self._state: dict[str, Any] = {}
        self._current: _Recording | None = None
        self._reports = ThreadPoolExecutor(1, thread_name_prefix="run-report")
        self._report_missing_logged = False
        self._report_process: subprocess.Popen[bytes] | None = None
        # Held while a report's process starts and by `stop`: a stop never misses one just starting.
        self._report_lock = threading.Lock()
        self._stopping = threading.Event()
        self._version = _software_version()
        self._thread = threading.Thread(target=self._run, name="runs", daemon=True)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Also makes the reports a previous stop left pending."""
        self._thread.start()
        for summary in layout.list_runs(self.data_dir):
            if (summary.get("report") or {}).get("status") == "pending":
                run = layout.read_run(self.data_dir, str(summary["id"]))
                if run is not None:
                    self._reports.submit(self._report, layout.run_dir(self.data_dir, run["id"]), run)

    def stop(self) -> None:
        """A run that ended is finalized; one still active is left without run.json, for the next start
        to record again from the ring buffer (its events appended); a report being made is stopped (it
        stays `pending`, made at the next start)."""
        self._stopping.set()
        self._inbox.put(None)
        self._thread.join(timeout=30)
        with self._report_lock:
            process = self._report_process
            if process is not None:
                with contextlib.suppress(OSError):
                    process.terminate()
        self._reports.shutdown(wait=True, cancel_futures=True)

    # --- paho's thread: hand over ----------------------------------------------------------------

    def take_batch(self, batch: TelemetryBatch) -> None:
        self._latest = batch
        if not self._wanted:
            return
        with self._lock:
            if self._queued_batches >= MAX_QUEUED_BATCHES:
                self.stats.run_batches_dropped_total += 1
                return
            self._queued_batches += 1
        self._inbox.put(lambda: self._on_batch(batch))

    def take_event(self, event: dict[str, Any]) -> None:
        self._inbox.put(lambda: self._on_event(event))

    def take_state(self, state: dict[str, Any]) -> None:
        self._inbox.put(lambda: self._on_state(state))

    def take_meta(self, meta: dict[str, Any]) -> None:
        tare = meta.get("tare")
        self._inbox.put(lambda: setattr(self, "_tare", tare))

    # --- requests (handler threads) -----------------------------------------------------------

    def list_runs(self, _request: dict[str, Any]) -> dict[str, Any]:
        """`{runs: [summaries, newest first], active: the run being recorded or None}`."""
        return {"runs": layout.list_runs(self.data_dir), "active": self._state.get("active")}

    def get_run(self, request: dict[str, Any]) -> dict[str, Any]:
        run_id = request.get("id")
        if not layout.valid_id(run_id):
            raise RpcError("'id' must be a run id (e.g. 20261202T014501Z-hotfire)")
        assert isinstance(run_id, str)
        run = layout.read_run(self.data_dir, run_id)
        if run is not None:
            return run
        active = self._state.get("active")
        if isinstance(active, dict) and active.get("id") == run_id:
            return dict(active) | {"recording": True}
        raise RpcError(f"no run {run_id}")

    # --- the runs thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        self._read_recent_events()
        while True:
            try:
                job = self._inbox.get(timeout=WAKE_S)
            except queue.Empty:
                job = _idle
            if job is None:
                break
            try:
                job()
                self._end_if_due()
            except Exception:  # one bad job must not stop the runs
                self._problems.warning("job", "run recorder job failed", exc_info=True)
        current = self._current
        if current is not None and current.ended_at is None:  # recorded again at the next start
            log.warning(
                "run %s is still active: its samples come from the ring buffer at the next start",
                current.run["id"],
            )
            self._current, self._wanted = None, False
            with contextlib.suppress(OSError):
                current.events.close()  # kept: the next start appends to it
            if current.samples is not None:
                with contextlib.suppress(OSError):
                    current.samples.discard()
        elif current is not None:
            self._finalize()

    def _read_recent_events(self) -> None:
        """The recent events an earlier logger wrote to the events files: a run this one begins or goes on
        with gets those it missed, e.g. those that came while the earlier one was stopping."""
        now = time.time()
        since = now - self.settings.acquisition.ring_seconds - self.settings.runs.pretrigger_s
        self._recent.extend(recent_lines(self.data_dir, since, now, max_bytes=RECENT_EVENTS_BYTES))
        self._read_at_start = {line for _, line in self._recent}

    def _on_state(self, state: dict[str, Any]) -> None:
        self._state = state
        active, last = state.get("active"), state.get("last")
        current = self._current
        if current is not None and (not isinstance(active, dict) or active.get("id") != current.run["id"]):
            if isinstance(last, dict) and last.get("id") == current.run["id"]:
                self._ended(last)
            elif current.ended_at is None:  # gone without an end: actuation restarted
                self._ended(current.run | {"ended_at": time.time(), "result": "interrupted"})
                current.problems.append("the run vanished from rcs/state/run without ending")
            if isinstance(active, dict):
                self._finalize()  # a new run begins: this one is as complete as it gets
        if isinstance(active, dict) and self._current is None:
            self._begin(active)
        elif isinstance(active, dict) and self._current is not None:
            self._current.run = dict(active)  # e.g. another operator, a procedure joined
        elif self._current is None and isinstance(last, dict) and self._missed(last):
            self._begin(last)  # missed while this logger was away: from the ring buffer
            self._ended(last)

    def _missed(self, run: dict[str, Any]) -> bool:
        """A finished run not on disk whose samples the ring buffer may still hold."""
        ended = run.get("ended_at")
        recent = (
            isinstance(ended, int | float) and ended > time.time() - self.settings.acquisition.ring_seconds
        )
        return recent and not self._recorded(run)

    def _recorded(self, run: dict[str, Any]) -> bool:
        run_id = run.get("id")
        if not layout.valid_id(run_id):
            self._problems.warning("run-id", "ignored a run with an invalid id %r", run_id)
            return True
        assert isinstance(run_id, str)
        return (layout.run_dir(self.data_dir, run_id) / layout.RUN_JSON).exists()

    def _begin(self, run: dict[str, Any]) -> None:
        if self._recorded(run):
            return
        started = run.get("started_at")
        pretrigger = run.get("pretrigger_s", self.settings.runs.pretrigger_s)
        if not isinstance(started, int | float) or not isinstance(pretrigger, int | float):
            self._problems.warning("run-fields", "ignored run %s without started_at", run.get("id"))
            return
        directory = layout.run_dir(self.data_dir, str(run["id"]))
        try:
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / layout.EVENTS
            events = path.open("a+b")  # a restarted logger's run goes on
            cut_torn_line(events.fileno(), path)  # as in the daily events files
            events.seek(0)
            before = set(events.read().splitlines(keepends=True))
        except OSError as exc:
            self._failed(str(run["id"]), exc)
            return
        t_from = float(started) - float(pretrigger)
        self._current = _Recording(
            run=dict(run), dir=directory, t_from=t_from, events=events, events_before=before
        )
        log.info("run %s: recording to %s", run["id"], directory)
        for ts, line in self._recent:
            if ts >= t_from:
                self._write_event(line)
        self._wanted = True
        latest = self._latest
        if latest is not None:
            self._anchor(latest)

    def _ended(self, run: dict[str, Any]) -> None:
        current = self._current
        if current is None:
            return
        current.run = dict(run)
        if current.end_by is None:
            current.end_by = time.monotonic() + END_WAIT_MAX_S
            current.progress_at = max(current.progress_at, time.monotonic())

    def _end_if_due(self) -> None:
        current = self._current
        if current is None or current.ended_at is None or current.end_by is None:
            return
        # Done once telemetry taken after its last events (EVENTS_AFTER_S after its end) came: those
        # events came before it. This follows the jobs, however far they lag the clock (the runs thread
        # catching up after a fetch from the ring buffer, a logger that was paused).
        samples_done = current.seen_t >= current.ended_at
        events_done = current.seen_t >= current.ended_at + EVENTS_AFTER_S + EVENTS_WAY_S
        now = time.monotonic()
        stalled = now >= current.progress_at + END_WAIT_S  # no telemetry comes (any more)
        if events_done or stalled or now >= current.end_by:
            if not samples_done:
                self._catch_up(current, current.ended_at)
            self._finalize()

    def _catch_up(self, current: _Recording, end: float) -> None:
        """The live telemetry is late (a busy logger): the rest of the run from the ring buffer."""
        if current.samples is None or current.session is None:
            current.problems.append("no telemetry arrived during the run")
            return
        rate = self.settings.acquisition.rate_hz
        behind = end - max(current.seen_t, current.t_from)
        self._fetch(current.expected, current.expected + int(behind * rate * 1.2) + int(rate))
        if current.seen_t < end:
            current.problems.append(
                f"samples up to the run's end missing: the last is {end - current.seen_t:.3f} s before it"
            )

    def _on_batch(self, batch: TelemetryBatch) -> None:
        with self._lock:
            self._queued_batches -= 1
        current = self._current
        if current is None:
            return
        current.progress_at = time.monotonic()
        if current.samples is None:
            self._anchor(batch)
            return
        if batch.session != current.session:
            current.problems.append(f"acquisition restarted: session {batch.session} from seq {batch.seq}")
            current.session, current.expected = batch.session, batch.seq
        if batch.seq > current.expected:
            self._fetch(current.expected, batch.seq)
        skip = current.expected - batch.seq
        if skip < len(batch.t):
            self._write(
                batch.session, batch.seq + max(0, skip), batch.t[max(0, skip) :], batch.data[max(0, skip) :]
            )

    def _anchor(self, batch: TelemetryBatch) -> None:
        """The first live batch of a run: the samples before it (pre-trigger window, and what this
        logger missed) from the ring buffer, then it."""
        current = self._current
        assert current is not None
        try:
            current.samples = RunSamples(
                current.dir / layout.SAMPLES,
                batch.channels,
                row_group_rows=self.settings.logger.row_group_rows,
                compression_level=self.settings.logger.compression_level,
            )
        except OSError as exc:
            self._failed(str(current.run["id"]), exc)
            return
        current.session = batch.session
        current.expected = self._seq_at(batch, current.t_from)
        log.info(
            "run %s: samples from seq %d (ring buffer) to %d (live)",
            current.run["id"],
            current.expected,
            batch.seq,
        )
        if current.expected < batch.seq:
            self._fetch(current.expected, batch.seq)
        current.expected = max(current.expected, batch.seq)
        self._write(batch.session, batch.seq, batch.t, batch.data)

    def _seq_at(self, batch: TelemetryBatch, t_from: float) -> int:
        """The seq of the sample taken at `t_from` (or the oldest the ring buffer holds), found by
        probing the ring: sample times need not follow seq at the nominal rate (a device lagging
        behind, samples it lost)."""
        rate = batch.rate_hz if batch.rate_hz > 0 else self.settings.acquisition.rate_hz
        seq, t = batch.seq, float(batch.t[0])
        for _ in range(PROBES):
            if t <= t_from:
                return seq
            guess = max(0, seq - int(np.ceil((t - t_from) * rate)) - int(rate * 0.01) - 1)
            body = {"seq_from": guess, "seq_to": seq, "max_samples": 1}
            try:
                page = self._rpc.call(topics.ACQ_HISTORY, body, timeout=HISTORY_TIMEOUT_S)
            except (RpcError, RpcTimeout):
                return guess
            if page.get("session") != batch.session or not page["n"]:
                return guess
            held, t = int(np.frombuffer(page["seq"], "<i8")[0]), float(np.frombuffer(page["t"], "<f8")[0])
            if held >= seq or (held == page.get("first_seq") and t > t_from):  # the ring begins after it
                return held
            seq = held  # a gap in the ring, or samples that came late: another guess
        return seq

    def _fetch(self, seq_from: int, seq_to: int) -> None:
        """Samples [seq_from, seq_to) of the current session from acquisition's ring buffer."""
        current = self._current
        assert current is not None and current.session is not None
        while seq_from < seq_to:
            body = {"seq_from": seq_from, "seq_to": seq_to, "max_samples": HISTORY_PAGE}
            try:
                page = self._rpc.call(topics.ACQ_HISTORY, body, timeout=HISTORY_TIMEOUT_S)
            except (RpcError, RpcTimeout) as exc:
                self.stats.run_errors_total += 1
                current.problems.append(f"seq {seq_from}..{seq_to - 1} not fetched: {exc or 'no answer'}")
                break
            if page.get("session") != current.session:
                current.problems.append(f"seq {seq_from}..{seq_to - 1}: acquisition's session changed")
                break
            if page["first_seq"] is not None and page["first_seq"] > seq_from:
                gone = min(page["first_seq"], seq_to) - seq_from
                current.problems.append(f"{gone} samples before seq {seq_from + gone} no longer in the ring")
            n, channels = int(page["n"]), len(page["channels"])
            if n:
                seq = np.frombuffer(page["seq"], "<i8")
                t = np.frombuffer(page["t"], "<f8")
                data = np.frombuffer(page["data"], "<f4").reshape(n, channels)
                breaks = np.flatnonzero(np.diff(seq) != 1) + 1
                for lo, hi in zip((0, *breaks.tolist()), (*breaks.tolist(), n), strict=True):
                    self._write(current.session, int(seq[lo]), t[lo:hi], data[lo:hi])
            next_seq = int(page["next_seq"])
            if next_seq <= seq_from:
                break
            seq_from = next_seq
        current.expected = max(current.expected, seq_to)

    def _write(
        self, session: str, first_seq: int, t: npt.NDArray[np.float64], data: npt.NDArray[np.float32]
    ) -> None:
        """Consecutive samples, cut to the run's window [t_from, ended_at]."""
        current = self._current
        if current is None or current.samples is None or len(t) == 0:
            return
        lo = int(np.searchsorted(t, current.t_from, side="left"))
        end = current.ended_at
        hi = len(t) if end is None else int(np.searchsorted(t, end, side="right"))
        if hi > lo:
            try:
                current.samples.append(session, first_seq + lo, t[lo:hi], data[lo:hi])
            except OSError as exc:
                self._failed(str(current.run["id"]), exc)
                return
        current.expected = max(current.expected, first_seq + len(t))
        current.seen_t = max(current.seen_t, float(t[-1]))

    def _on_event(self, event: dict[str, Any]) -> None:
        ts = event.get("ts")
        line = event_line(event)
        if line in self._read_at_start:
            return  # in `_recent` already: this logger's recorder wrote it before the read
        when = float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else time.time()
        self._recent.append((when, line))
        current = self._current
        if current is not None and when >= current.t_from:
            end = current.ended_at
            if end is None or when <= end + EVENTS_AFTER_S:
                self._write_event(line)

    def _write_event(self, line: bytes) -> None:
        current = self._current
        assert current is not None
        if line in current.events_before:
            return
        try:
            current.events.write(line)
        except OSError as exc:
            self._failed(str(current.run["id"]), exc)
            return
        current.events_written += 1

    def _finalize(self) -> None:
        current, self._current = self._current, None
        self._wanted = False
        if current is None:
            return
        try:
            if current.samples is not None and current.ended_at is not None:
                current.samples.cut_after(current.ended_at)
        except OSError as exc:
            self._failed(str(current.run["id"]), exc, current)
            return
        run = self._run_json(current)
        try:
            current.events.flush()
            os.fsync(current.events.fileno())
            current.events.close()
            if current.samples is not None:
                metadata = {layout.META_RUN: json.dumps(run, separators=(",", ":"))}
                current.samples.close(metadata)
            _write_json(current.dir / layout.RUN_JSON, run | {"report": {"status": "pending"}})
        except OSError as exc:
            self._failed(str(run["id"]), exc, current)
            return
        self.stats.runs_recorded_total += 1
        log.info(
            "run %s recorded: %d samples, %d events, %s",
            run["id"],
            run["samples"],
            run["events"],
            run["result"],
        )
        self._publish_event("run_recorded", id=run["id"], samples=run["samples"], result=run["result"])
        if not self._stopping.is_set():
            self._reports.submit(self._report, current.dir, run)

    def _run_json(self, current: _Recording) -> dict[str, Any]:
        samples = current.samples
        config = _config_text()
        record = {k: v for k, v in current.run.items() if k != "auto"}
        first = None if samples is None else samples.first
        last = None if samples is None else samples.last
        return record | {
            "config_file": str(config_file()),
            "config_yaml": config,
            "config_sha256": hashlib.sha256(config.encode()).hexdigest(),
            "version": self._version,
            "tare": self._tare,
            "pretrigger_s": current.run.get("pretrigger_s", self.settings.runs.pretrigger_s),
            "window_start": current.t_from,
            "samples": 0 if samples is None else samples.rows,
            "first_seq": None if first is None else first[1],
            "last_seq": None if last is None else last[1],
            "first_t": None if samples is None else samples.first_t,
            "last_t": None if samples is None else samples.last_t,
            "sessions": {} if samples is None else _sessions(samples),
            "channels": [] if samples is None else list(samples.channels),
            "events": current.events_written,
            "files": [layout.SAMPLES, layout.EVENTS, layout.RUN_JSON],
            "problems": current.problems,
        }

    def _report(self, directory: Path, run: dict[str, Any]) -> None:
        """`rcs-analyze report <dir>`; its outcome in run.json's `report`."""
        command = [sys.executable, "-m", "services.analyze", "report", str(directory)]
        try:
            done = self._run_report(command)
        except _StoppingError:
            return  # stays pending: made at the next start
        except (OSError, subprocess.TimeoutExpired) as exc:
            outcome = {"status": "failed", "reason": f"rcs-analyze report: {exc}"}
        else:
            if self._stopping.is_set() and done.returncode < 0:
                return  # stopped with the logger: stays pending
            stderr = done.stderr.decode(errors="replace")
            if done.returncode == 0 and (directory / layout.REPORT).exists():
                outcome = {"status": "generated", "file": layout.REPORT}
            elif done.returncode == 2 and "No such command" in stderr:
                outcome = {"status": "unavailable", "reason": "this rcs-analyze has no report command"}
                if not self._report_missing_logged:
                    self._report_missing_logged = True
                    log.warning("run reports unavailable: rcs-analyze has no report command")
            else:
                lines = [line for line in stderr.strip().splitlines() if line.strip()]
                reason = lines[-1] if lines else f"exit code {done.returncode}"
                outcome = {"status": "failed", "reason": reason[:500]}
        if outcome["status"] == "failed":
            log.error("run %s: report failed: %s", run["id"], outcome["reason"])
        try:
            _write_json(directory / layout.RUN_JSON, run | {"report": outcome})
        except OSError as exc:
            self._failed(str(run["id"]), exc)
            return
        self._publish_event("run_report", id=run["id"], **outcome)

    def _run_report(self, command: list[str]) -> subprocess.CompletedProcess[bytes]:
        """The report's process, which `stop` can end; killed past `runs.report_timeout_s`; `_StoppingError`
        when the logger is stopping before it started."""
        with self._report_lock:
            if self._stopping.is_set():
                raise _StoppingError
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self._report_process = process
        with process:
            try:
                stdout, stderr = process.communicate(timeout=self.settings.runs.report_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                raise
            finally:
                self._report_process = None
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

    def _failed(self, run_id: str, exc: OSError, recording: _Recording | None = None) -> None:
        """The disk refused the run's files: said once per run, the run given up."""
        self.stats.run_errors_total += 1
        log.error("run %s cannot be written: %s", run_id, exc)
        self._publish_event("run_error", id=run_id, reason=str(exc))
        current, self._current = recording or self._current, None
        self._wanted = False
        if current is not None:
            with contextlib.suppress(OSError):
                current.events.close()
            if current.samples is not None:
                with contextlib.suppress(OSError):
                    current.samples.discard()

    def metrics(self) -> dict[str, float]:
        return {
            "runs_recorded_total": float(self.stats.runs_recorded_total),
            "run_batches_dropped_total": float(self.stats.run_batches_dropped_total),
            "run_errors_total": float(self.stats.run_errors_total),
            "run_recording": float(self._current is not None),
        }


def _sessions(samples: RunSamples) -> dict[str, list[list[int]]]:
    return {session: [list(run) for run in runs] for session, runs in samples.intervals.intervals().items()}


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Atomically: written beside, fsynced, renamed."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w") as file:
        json.dump(value, file, indent=2, allow_nan=False, default=str)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)


def _config_text() -> str:
    try:
        return config_file().read_text()
    except OSError as exc:
        return f"# {config_file()} could not be read: {exc}\n"


def _software_version() -> str:
    """The package version, and the git commit when running from a checkout."""
    try:
        version = importlib.metadata.version("rcs")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return version
    described = commit.stdout.decode().strip()
    return f"{version} ({described})" if commit.returncode == 0 and described else version


def _idle() -> None:
    return None
