"""Logger benchmark: rcs-logger's CPU, bytes on disk and gap repair at 10 kHz x 22 channels.

Starts its own Mosquitto on a free loopback port (the project's config and ACL, generated logins),
the STM32 emulator, rcs-acquisition and rcs-logger as child processes (the services logged in as
their own users), the logger's data dir in a temp dir, and an operator client (the `operator` login)
that asks acquisition and the logger for their status over request/response. Every service runs with
the project's config/stand.yaml, except the logger's rotation: RCS_LOGGER_ROTATE_S=20 (production:
120 s), so that several Parquet files are finished within the window. Writes
bench/results/logger.json.

1. CPU. The logger's user + system CPU time from /proc/<pid>/stat over a steady window (`--seconds`,
   default 60 s) that starts once the logger holds the session from seq 0 without a hole (the repair
   of what it missed while starting is done); as % of one core, with the largest 1 s value (a
   rotation converts the segment to Parquet on the logger's converter thread). Target: < 10 %. The
   window holds about seconds / 20 conversions; each converts the samples since the last one, so
   the CPU per sample is the same as with 120 s files. Acquisition's and the emulator's CPU are
   printed for context (the machine's cores are shared by all of them and the broker).

2. Bytes on disk. After the window: every finished `sensor_log_*.parquet` (a file that exists is
   whole: it is written as .tmp, fsynced and renamed), the seqs it holds from its footer
   (`recording.read_intervals`), so bytes per minute = sum of sizes / (samples held / rate / 60),
   and bytes per sample. For comparison the open segment (an Arrow IPC stream, `<stem>.arrows`, the
   crash-readable form the logger appends to every flush_s): its complete record batches are read
   back, bytes = where the last complete batch ends, rows = the rows in them (waiting until the
   segment holds at least 5 s, so the schema message at its start does not weigh).

3. Gap repair. The logger is stopped with SIGSTOP for 30 s (`--pause`) and continued with SIGCONT.
   While stopped it reads nothing: the QoS 0 telemetry is lost to it once the socket buffers and the
   broker's queue for it are full. Its MQTT keepalive is 15 s and Mosquitto drops a client that sent
   nothing for 1.5 x keepalive (22.5 s), so after a 30 s pause its session is normally gone: the
   broker publishes its Last Will (status offline, "connection lost"; watched and reported here),
   and after SIGCONT the logger first reads what was still buffered for it, then finds the socket
   closed and reconnects (0.2 s backoff at first). Either way - disconnected or not - the samples it
   did not receive must come back from acquisition's ring buffer (`rcs/rpc/acquisition/history`,
   pages of 50 000): its first live batch after the pause does not continue its coverage, which
   queues the hole for repair. (Seen here: the Last Will 23-28 s after SIGSTOP, the logger online
   again 0.2 s after SIGCONT, and only ~0.1 s of old telemetry read after SIGCONT, so the gap is
   about the whole pause plus the reconnect. A pause below 22.5 s keeps the connection: with 5 s,
   the broker and the socket buffers held every batch and there was nothing to repair.)
   Target seq = acquisition's newest seq just before SIGCONT (its buffer_status, asked right before
   the signal). From SIGCONT, a LOGGER_STATUS request every 100 ms (not waiting for the previous
   answer: a request sent before the logger has subscribed again is lost, and those the logger was
   too busy to answer yet come later; both are shown as replies/requests by then); time to repair =
   from SIGCONT to the arrival of the first reply whose coverage of the session is one interval from
   0 reaching at least the target. That reply is a snapshot the logger took on its recorder thread,
   so the figure is an upper bound by the reply's trip (and has 100 ms resolution).
   Gap size: from the recording itself. Rows are in the order the logger wrote them (files by name,
   rows in file order); live rows raise the highest seq written, repaired rows come later and lower.
   A live row whose seq is beyond that highest seq + 1 marks a hole the logger had to repair: its
   size is the gap (the one after the pause is reported; what was lost while the logger started up
   is not counted). It reaches past the target by what was published while the logger reconnected.
   Repaired samples = the logger's `repaired_samples_total` since before the pause (it may include
   samples that also came live meanwhile; the recording keeps one copy).
   Check: after the repair, save now (LOGGER_SAVE), read every Parquet file with pyarrow: every seq
   from 0 to the target must be present exactly once (PASS/FAIL).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from measure import RESULTS, Child, acquiring_stand, cpu_seconds, service, wait_until

from services.common import topics
from services.common.codec import WireFormatError, unpack_map
from services.common.mqtt import Message, MqttClient
from services.common.recording import FILE_PATTERN, read_intervals
from services.common.rpc import RpcClient, RpcError, RpcTimeout

ROTATE_S = 20
PAUSE_S = 30.0
SETTLE_S = 2.0
POLL_S = 0.1
MIN_OPEN_SEGMENT_S = 5.0
CPU_TARGET_PERCENT = 10.0
TIMEOUT_S = 60.0


def _wait(predicate: Callable[[], object], what: str, timeout: float = TIMEOUT_S) -> None:
    wait_until(predicate, what, timeout, poll_s=0.1)


# --- what the operator client sees --------------------------------------------------------------


class Watch:
    """The retained telemetry meta, and the logger's status messages with their arrival times."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.meta: dict[str, Any] = {}
        self._statuses: list[tuple[float, dict[str, Any]]] = []

    def on_meta(self, message: Message) -> None:
        with contextlib.suppress(WireFormatError):
            meta = unpack_map(message.payload)
            with self._lock:
                self.meta = meta

    def on_logger_status(self, message: Message) -> None:
        at = time.monotonic()
        with contextlib.suppress(WireFormatError):
            body = unpack_map(message.payload)
            with self._lock:
                self._statuses.append((at, body))

    def statuses(self, after: float) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            return [(at, body) for at, body in self._statuses if at >= after]


class Stand:
    def __init__(self, rpc: RpcClient, watch: Watch) -> None:
        self.rpc = rpc
        self.watch = watch

    def call(self, topic: str, timeout: float = 3.0) -> dict[str, Any] | None:
        try:
            return self.rpc.call(topic, {}, timeout=timeout)
        except (RpcTimeout, RpcError):
            return None

    def acquisition(self) -> dict[str, Any]:
        status = self.call(topics.ACQ_BUFFER_STATUS)
        if status is None:
            raise RuntimeError("acquisition does not answer buffer_status")
        return status

    def logger(self) -> dict[str, Any]:
        status = self.call(topics.LOGGER_STATUS)
        if status is None:
            raise RuntimeError("the logger does not answer status")
        return status


def whole_from_zero(status: dict[str, Any] | None, session: str, through: int) -> bool:
    """The logger's coverage of `session` is one interval from seq 0 reaching at least `through`."""
    if status is None:
        return False
    intervals = status["sessions"].get(session, [])
    return len(intervals) == 1 and intervals[0][0] == 0 and intervals[0][1] >= through


# --- 1. CPU -------------------------------------------------------------------------------------


def measure_cpu(seconds: float, logger: Child, others: Sequence[Child], stand: Stand) -> dict[str, Any]:
    """CPU % of one core over `seconds`, sampled every second for the logger's largest 1 s value."""
    before_logger = stand.logger()["stats"]
    acquired0 = stand.acquisition()["last_seq"]
    cpu0 = {child.name: cpu_seconds(child.pid) for child in (logger, *others)}
    started = time.monotonic()
    previous, previous_at = cpu0[logger.name], started
    per_second: list[float] = []
    for tick in range(1, math.ceil(seconds) + 1):
        time.sleep(max(0.0, started + min(tick, seconds) - time.monotonic()))
        now, at = cpu_seconds(logger.pid), time.monotonic()
        per_second.append(100 * (now - previous) / (at - previous_at))
        previous, previous_at = now, at
    elapsed = time.monotonic() - started
    cpu = {child.name: cpu_seconds(child.pid) - cpu0[child.name] for child in (logger, *others)}
    acquired1 = stand.acquisition()["last_seq"]
    after_logger = stand.logger()["stats"]
    return {
        "window_s": round(elapsed, 2),
        "acquired_samples_per_s": round((acquired1 - acquired0) / elapsed, 1),
        "logger_cpu_percent_of_one_core": round(100 * cpu[logger.name] / elapsed, 1),
        "logger_cpu_percent_of_one_core_max_1s": round(max(per_second), 1),
        **{
            f"{child.name}_cpu_percent_of_one_core": round(100 * cpu[child.name] / elapsed, 1)
            for child in others
        },
        "logger_samples_written_in_window": after_logger["samples_written_total"]
        - before_logger["samples_written_total"],
        "logger_gaps_in_window": after_logger["gaps_total"] - before_logger["gaps_total"],
        "logger_files_in_window": after_logger["files_total"] - before_logger["files_total"],
    }


# --- 2. bytes on disk ---------------------------------------------------------------------------


def finished_files(data_dir: Path) -> tuple[int, int, int]:
    """(files, bytes, samples held) of the finished Parquet files, samples from their footers."""
    files = sorted(data_dir.glob(FILE_PATTERN))
    size = sum(path.stat().st_size for path in files)
    samples = sum(
        last - first + 1
        for path in files
        for intervals in read_intervals(path).values()
        for first, last in intervals
    )
    return len(files), size, samples


def read_segment(path: Path) -> tuple[int, int]:
    """(bytes up to the end of the last complete record batch, rows in the complete batches)."""
    source = pa.BufferReader(pa.py_buffer(path.read_bytes()))
    reader = pa.ipc.open_stream(source)
    end, rows = source.tell(), 0
    while True:
        try:
            batch = reader.read_next_batch()
        except (StopIteration, pa.ArrowInvalid, OSError):
            return int(end), rows
        rows += batch.num_rows
        end = source.tell()


def open_segment(data_dir: Path, stand: Stand, rate_hz: float) -> tuple[str, int, int]:
    """(name, bytes, rows) of the logger's open segment, once it holds MIN_OPEN_SEGMENT_S of samples."""
    give_up = time.monotonic() + TIMEOUT_S
    while time.monotonic() < give_up:
        name = stand.logger()["open_segment"]
        if name is not None:
            try:
                size, rows = read_segment(data_dir / name)
            except (FileNotFoundError, pa.ArrowInvalid, OSError):  # rotated meanwhile, or still empty
                size, rows = 0, 0
            if rows >= MIN_OPEN_SEGMENT_S * rate_hz:
                return name, size, rows
        time.sleep(0.5)
    raise RuntimeError(f"the open segment did not reach {MIN_OPEN_SEGMENT_S} s of samples")


def measure_disk(data_dir: Path, stand: Stand, rate_hz: float) -> dict[str, Any]:
    files, size, samples = finished_files(data_dir)
    if files < 2:
        raise RuntimeError(f"only {files} Parquet file(s) finished: lengthen the window")
    minutes = samples / rate_hz / 60
    name, segment_bytes, segment_rows = open_segment(data_dir, stand, rate_hz)
    segment_minutes = segment_rows / rate_hz / 60
    return {
        "parquet_files_finished": files,
        "parquet_samples_held": samples,
        "parquet_minutes_held": round(minutes, 3),
        "parquet_bytes": size,
        "parquet_bytes_per_minute": round(size / minutes),
        "parquet_mib_per_minute": round(size / minutes / 2**20, 2),
        "parquet_bytes_per_sample": round(size / samples, 2),
        "open_segment_rows": segment_rows,
        "open_segment_bytes": segment_bytes,
        "open_segment_arrow_ipc_bytes_per_minute": round(segment_bytes / segment_minutes),
        "open_segment_arrow_ipc_mib_per_minute": round(segment_bytes / segment_minutes / 2**20, 2),
        "open_segment_arrow_ipc_bytes_per_sample": round(segment_bytes / segment_rows, 2),
        "parquet_to_arrow_ipc_ratio": round((size / samples) / (segment_bytes / segment_rows), 3),
        "_open_segment": name,
    }


# --- 3. gap repair ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    sent: float
    arrived: float
    status: dict[str, Any]


class Poller:
    """A LOGGER_STATUS request every POLL_S without waiting for answers; the replies as they arrive."""

    def __init__(self, stand: Stand) -> None:
        self._stand = stand
        self._lock = threading.Lock()
        self.replies: list[Reply] = []
        self.sent = 0

    def send(self) -> None:
        sent = time.monotonic()
        self.sent += 1
        future = self._stand.rpc.request(topics.LOGGER_STATUS, {}, timeout=5.0)

        def arrived(done: Future[dict[str, Any]]) -> None:
            at = time.monotonic()
            with self._lock:
                if done.exception() is None:
                    self.replies.append(Reply(sent, at, done.result()))

        future.add_done_callback(arrived)

    def first(self, predicate: Callable[[dict[str, Any]], bool]) -> Reply | None:
        with self._lock:
            matching = [reply for reply in self.replies if predicate(reply.status)]
        return min(matching, key=lambda reply: reply.arrived, default=None)


def recorded_seqs(data_dir: Path, session: str) -> tuple[int, npt.NDArray[np.int64]]:
    """(files, the session's seqs in the order the logger wrote them: files by name, rows in order)."""
    files = sorted(data_dir.glob(FILE_PATTERN))
    seqs = []
    for path in files:
        table = pq.read_table(path, columns=["seq", "session"])  # every file opens
        mine = pc.equal(table.column("session").cast(pa.string()), session)
        seqs.append(table.column("seq").filter(mine).to_numpy().astype(np.int64))
    return len(files), np.concatenate(seqs) if seqs else np.empty(0, np.int64)


def live_holes(seqs: npt.NDArray[np.int64]) -> list[tuple[int, int]]:
    """(first missing seq, size) of every hole the live rows opened: a row beyond the highest seq
    written before it + 1 (repaired rows come later and lower, and never raise the highest)."""
    highest = np.maximum.accumulate(np.concatenate(([-1], seqs[:-1])))
    jumps = np.flatnonzero(seqs > highest + 1)
    return [(int(highest[i]) + 1, int(seqs[i] - highest[i] - 1)) for i in jumps]


def measure_repair(
    pause_s: float, logger: Child, stand: Stand, session: str, data_dir: Path, *, rate_hz: float
) -> dict[str, Any]:
    before = stand.logger()
    acquired_at_pause = int(stand.acquisition()["last_seq"])
    logger.signal(signal.SIGSTOP)
    stopped = time.monotonic()
    time.sleep(pause_s)
    target = int(stand.acquisition()["last_seq"])
    logger.signal(signal.SIGCONT)
    resumed = time.monotonic()

    poller = Poller(stand)
    done: Reply | None = None
    tick = 0
    while done is None:
        if time.monotonic() - resumed > TIMEOUT_S:
            raise RuntimeError(f"the logger did not hold 0..{target} within {TIMEOUT_S} s of SIGCONT")
        poller.send()
        tick += 1
        time.sleep(max(0.0, resumed + tick * POLL_S - time.monotonic()))
        done = poller.first(lambda status: whole_from_zero(status, session, target))
    repaired_s = done.arrived - resumed
    first_answer = min(poller.replies, key=lambda reply: reply.arrived)
    after = done.status["stats"]

    saved = stand.rpc.call(topics.LOGGER_SAVE, {}, timeout=30)
    files, seqs = recorded_seqs(data_dir, session)
    held = np.sort(seqs[seqs <= target])
    exactly_once = bool(len(np.unique(seqs)) == len(seqs) and np.array_equal(held, np.arange(target + 1)))
    holes = [(first, size) for first, size in live_holes(seqs) if first > before["sessions"][session][0][1]]

    statuses = stand.watch.statuses(stopped)
    offline = next((at for at, body in statuses if body.get("state") == "offline"), None)
    online = next(
        (
            at
            for at, body in statuses
            if offline is not None and at > offline and body.get("state") == "online"
        ),
        None,
    )
    delta = {key: after[key] - before["stats"][key] for key in after}
    return {
        "pause_s": round(resumed - stopped, 2),
        "target_seq": target,
        "samples_published_while_paused": target - acquired_at_pause,
        "logger_disconnected_while_paused": offline is not None,
        "logger_offline_after_sigstop_s": None if offline is None else round(offline - stopped, 2),
        "logger_online_after_sigcont_s": None if online is None else round(online - resumed, 2),
        "first_status_reply_after_sigcont_s": round(first_answer.arrived - resumed, 3),
        "status_replies_by_then": f"{len(poller.replies)}/{poller.sent}",
        "repair_time_s": round(repaired_s, 3),
        "gap_samples": sum(size for _, size in holes),
        "gap_holes": len(holes),
        "gap_seconds": round(sum(size for _, size in holes) / rate_hz, 3),
        "repaired_samples": delta["repaired_samples_total"],
        "unrepairable_samples": delta["unrepairable_samples_total"],
        "logger_gaps_detected": delta["gaps_total"],
        "duplicates_skipped": delta["duplicates_skipped_total"],
        "saved_file": saved["file"],
        "files_checked": files,
        "rows_checked": len(seqs),
        "every_seq_0_to_target_exactly_once": "PASS" if exactly_once else "FAIL",
    }


# --- the run ------------------------------------------------------------------------------------


def run(seconds: float, pause_s: float) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="rcs-bench-logger-"))
    data_dir = workdir / "data"
    data_dir.mkdir()
    ok = False
    try:
        with contextlib.ExitStack() as stack:
            broker, emulator, acquisition = acquiring_stand(stack, workdir)
            logger = service(
                "services.logger",
                "logger",
                broker,
                "logger",
                workdir,
                RCS_DATA_DIR=str(data_dir),
                RCS_LOGGER_ROTATE_S=str(ROTATE_S),
                RCS_LOGGER_METRICS_PORT="0",
            )
            stack.callback(logger.stop)  # stopped first (LIFO), as in the end-to-end test
            children = (logger, acquisition, emulator)

            operator = MqttClient(broker.settings("operator"), "operator", client_id="rcs-bench-logger")
            watch = Watch()
            operator.subscribe(topics.TELEMETRY_META, watch.on_meta, qos=1)
            operator.subscribe(topics.status("logger"), watch.on_logger_status, qos=1)
            rpc = RpcClient(operator)
            operator.start()
            stack.callback(operator.stop)
            stack.callback(rpc.close)
            stand = Stand(rpc, watch)
            if not operator.wait_connected(10):
                raise RuntimeError("the operator client did not connect")

            acquiring: dict[str, Any] = {}

            def acquisition_runs() -> bool:
                status = stand.call(topics.ACQ_BUFFER_STATUS)
                if status is None or status["last_seq"] is None:
                    return False
                acquiring.update(status)
                return True

            _wait(acquisition_runs, "acquisition to acquire")
            session = str(acquiring["session"])
            _wait(lambda: watch.meta.get("session") == session, "the telemetry meta")
            rate_hz = float(watch.meta["rate_hz"])
            channels = len(watch.meta["channels"])
            # the logger holds the session from 0 (what it missed while starting is repaired) and more
            _wait(
                lambda: whole_from_zero(stand.call(topics.LOGGER_STATUS), session, int(rate_hz)),
                "the logger to hold the session from seq 0",
            )
            time.sleep(SETTLE_S)

            result: dict[str, Any] = {
                "benchmark": "logger",
                "rate_hz": rate_hz,
                "channels": channels,
                "rotate_s": ROTATE_S,
            }
            result |= measure_cpu(seconds, logger, (acquisition, emulator), stand)
            disk = measure_disk(data_dir, stand, rate_hz)
            disk.pop("_open_segment")
            result |= disk
            result |= measure_repair(pause_s, logger, stand, session, data_dir, rate_hz=rate_hz)
            result["machine"] = (
                f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
            )
        unclean = [f"{c.name} exited with {c.exit_code}" for c in children if c.exit_code != 0]
        if unclean:
            print(f"{'; '.join(unclean)}: logs kept in {workdir}", file=sys.stderr)
        ok = not unclean and result["every_seq_0_to_target_exactly_once"] == "PASS"
        if not ok:
            print(f"logs and data kept in {workdir}", file=sys.stderr)
        return result
    except BaseException:
        print(f"benchmark failed; logs and data kept in {workdir}", file=sys.stderr)
        raise
    finally:
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="the steady window (CPU, files)")
    parser.add_argument("--pause", type=float, default=PAUSE_S, help="how long the logger is stopped")
    args = parser.parse_args()
    result = run(args.seconds, args.pause)
    for key, value in result.items():
        line = f"{key:48s} {value}"
        if key == "logger_cpu_percent_of_one_core":
            met = value < CPU_TARGET_PERCENT
            line += f"   target < {CPU_TARGET_PERCENT:g} % of one core: {'met' if met else 'MISSED'}"
        print(line)
    cpu = result["logger_cpu_percent_of_one_core"]
    result["targets"] = {
        "logger_cpu_percent_of_one_core": {"below": CPU_TARGET_PERCENT, "met": cpu < CPU_TARGET_PERCENT}
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "logger.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
