"""Logger end to end with a full disk: the STM32 emulator -> rcs-acquisition -> real Mosquitto -> rcs-logger,
whose data directory is a small tmpfs that the test fills up while the stand records, then empties.

The requirement: disk full or unwritable gives a clear error event and status, the data stays in memory
as long as it can (up to `memory_limit_bytes`, the rest is repaired from acquisition's ring buffer),
recording resumes by itself when space returns, and the logger never crashes. Afterwards the logger's
coverage and the Parquet files hold every seq that acquisition's ring buffer holds, exactly once: 0..last
in one run, unless the device link itself dropped samples (the emulator on a loaded machine), which no
one can supply and which must then be the only holes.

The failure is real: a tmpfs mount (root with CAP_SYS_ADMIN) filled by a file the test keeps
topping up, so every write of the logger gets ENOSPC, even after the logger itself frees a page (a
write cut off, a segment converted). Deleting the file gives the space back.

Where a tmpfs cannot be mounted (not root, no CAP_SYS_ADMIN) the test is skipped, except under CI
(`CI=true`, where the suite runs as root, as on the development machines): there it fails, because a
skipped test is not a passing one.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, NoReturn

import httpx
import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq
import pytest

from services.common import topics
from services.common.codec import WireFormatError, unpack_map
from services.common.mqtt import Message, MqttClient
from services.common.rpc import RpcClient, RpcTimeout
from services.common.settings import MqttSettings, Settings
from services.devstack.broker import Broker
from services.emulators.stm32 import Stm32Emulator
from services.logger.events import read_events
from services.logger.segments import SegmentWriter
from tests.conftest import wait_until
from tests.processes import Acquisition, Logger
from tests.recordings import recorded_seqs
from tests.test_gateway_rest import Served, gateway_settings

TIMEOUT = 30.0  # liveness bounds only
MB = 1024**2
TMPFS_BYTES = 64 * MB
MEMORY_LIMIT_BYTES = 3 * MB  # ~3 s of 22 channels at 10 kHz: the outage outlasts it
MEMORY_SLACK_BYTES = MB  # what the last batch taken may add beyond the limit (one is ~10 kB)
FIXED_COLUMNS = ("timestamp", "seq", "session")


def cannot_mount(reason: str) -> NoReturn:
    """Skip, or fail under CI (`CI` set to true or 1), where this test must run."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{reason}; CI is set: the disk-full test must run there (as root), not be skipped")
    pytest.skip(reason)


@contextmanager
def tmpfs(path: Path, size: int) -> Iterator[None]:
    """A tmpfs of `size` bytes mounted on `path` for the block; skips where mounting is not permitted."""
    if shutil.which("mount") is None or shutil.which("umount") is None:
        cannot_mount("no mount/umount here: this test needs a tmpfs it can fill")
    if os.geteuid() != 0:
        cannot_mount("mounting a tmpfs needs root (with CAP_SYS_ADMIN)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "rcs-test-logger-disk", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        reason = mounted.stderr.strip()
        if any(word in reason.lower() for word in ("permission denied", "not permitted", "superuser")):
            cannot_mount(f"mounting a tmpfs is not permitted here (needs CAP_SYS_ADMIN): {reason}")
        pytest.fail(f"mount -t tmpfs {path} failed: {reason}")
    try:
        yield
    finally:
        unmounted = subprocess.run(["umount", str(path)], capture_output=True, text=True, check=False)
        if unmounted.returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)
            pytest.fail(f"umount {path} failed (lazily unmounted): {unmounted.stderr.strip()}")


class Filler:
    """Keeps the file system of `path` full: grows the file until ENOSPC, and again every few ms while
    running, so that space the logger frees (a failed write cut off, a converted segment deleted) never
    lets its next write through."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="disk-filler", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._top_up()
        self._thread.start()

    def stop(self) -> None:
        """Stop topping up and delete the file: the space is back."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.unlink(missing_ok=True)

    def _top_up(self) -> None:
        assert self._fd is not None
        for chunk in (bytes(MB), bytes(4096)):  # tmpfs allocates whole pages
            while True:
                try:
                    os.write(self._fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break

    def _run(self) -> None:
        try:
            while not self._stop.wait(0.005):
                self._top_up()
        except BaseException as exc:  # reported by the test
            self.error = exc


class Events:
    """The logger's events on `rcs/events/logger`, as received by the operator."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []

    def on_message(self, message: Message) -> None:
        try:
            event = unpack_map(message.payload)
        except WireFormatError:
            return
        if event.get("service") == "logger":
            with self._lock:
                self._events.append(event)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [event for event in self._events if event.get("kind") == kind]


class Status:
    """The logger's retained status (`rcs/status/logger`), as last received."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latest: dict[str, Any] = {}

    def on_message(self, message: Message) -> None:
        try:
            status = unpack_map(message.payload)
        except WireFormatError:
            return
        with self._lock:
            self.latest = status

    def get(self, key: str) -> Any:
        with self._lock:
            return self.latest.get(key)


def _call(rpc: RpcClient, topic: str, body: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return rpc.call(topic, body, timeout=3)
    except RpcTimeout:
        return None


def _acquired_seqs(rpc: RpcClient, up_to: int) -> npt.NDArray[np.int64]:
    """Every seq from 0 to `up_to` that acquisition holds in its ring buffer (paged history)."""
    pages = []
    seq_from = 0
    while seq_from <= up_to:
        reply = rpc.call(topics.ACQ_HISTORY, {"seq_from": seq_from, "seq_to": up_to + 1}, timeout=10)
        pages.append(np.frombuffer(reply["seq"], "<i8"))
        seq_from = int(reply["next_seq"])
    return np.concatenate(pages)


def _runs(seqs: npt.NDArray[np.int64]) -> list[list[int]]:
    """Sorted unique seqs as inclusive `[first, last]` runs of consecutive values."""
    if len(seqs) == 0:
        return []
    breaks = np.flatnonzero(np.diff(seqs) != 1)
    firsts = [int(seqs[0]), *(int(seqs[i + 1]) for i in breaks)]
    lasts = [*(int(seqs[i]) for i in breaks), int(seqs[-1])]
    return [[a, b] for a, b in zip(firsts, lasts, strict=True)]


def _clipped(intervals: list[list[int]], up_to: int) -> list[list[int]]:
    return [[a, min(b, up_to)] for a, b in intervals if a <= up_to]


def test_disk_full_error_event_memory_bound_and_recovery_with_every_sample_once(
    settings: Settings, broker: Broker, mqtt_as: Callable[[str], MqttSettings], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with tmpfs(data_dir, TMPFS_BYTES), ExitStack() as stack:
        emulator = Stm32Emulator(settings, link_path=tmp_path / "stm32")
        emulator.start()
        stack.callback(emulator.stop)
        logger = stack.enter_context(
            Logger(
                mqtt_as("logger"),
                tmp_path,
                data_dir,
                # a rotation at nearly every flush: the outage is bound to catch a segment whose file
                # must still be created
                RCS_LOGGER_ROTATE_S="1",
                RCS_LOGGER_MEMORY_LIMIT_BYTES=str(MEMORY_LIMIT_BYTES),
            )
        )
        acquisition = stack.enter_context(Acquisition(mqtt_as("acquisition"), tmp_path / "stm32", tmp_path))
        operator = MqttClient(mqtt_as("operator"), "operator")
        rpc = RpcClient(operator)
        events, retained = Events(), Status()
        operator.subscribe(topics.EVENTS, events.on_message, qos=1)
        operator.subscribe(topics.status("logger"), retained.on_message, qos=1)
        filler = Filler(data_dir / "filler")
        state: dict[str, Any] = {}
        gateway = Served(gateway_settings(broker, data_dir))
        health = httpx.Client(base_url=f"http://127.0.0.1:{gateway.port}", timeout=30)

        def disk_problems() -> list[str]:
            """What the gateway's /api/health says about the disk (other problems: no actuation here)."""
            return [
                p["reason"] for p in health.get("/api/health").json()["problems"] if p["component"] == "disk"
            ]

        def logger_status() -> dict[str, Any]:
            nonlocal state
            reply = _call(rpc, topics.LOGGER_STATUS, {})
            assert logger.alive(), f"the logger died:\n{logger.tail()}"
            if reply is not None:
                state = reply
            return state

        def until(predicate: Callable[[], bool], what: str) -> None:
            try:
                wait_until(predicate, TIMEOUT, what)
            except BaseException:
                print(f"last logger status: {state}\nlogger log:\n{logger.tail()}")
                raise

        try:
            operator.start()
            assert operator.wait_connected(10)
            acq: dict[str, Any] = {}

            def acquiring() -> bool:
                nonlocal acq
                acq = _call(rpc, topics.ACQ_BUFFER_STATUS, {}) or {}
                return (acq.get("last_seq") or 0) > 0

            until(acquiring, "acquisition to run")
            session = acq["session"]
            until(lambda: logger_status().get("stats", {}).get("files_total", 0) >= 2, "Parquet files")
            until(lambda: retained.get("pid") == logger.process.pid, "the logger's retained status")
            started = retained.get("started")
            width = len(pq.read_schema(next(data_dir.glob("sensor_log_*.parquet")))) - len(FIXED_COLUMNS)
            row_bytes = 8 + 8 + 4 * width

            # --- the disk fills up -----------------------------------------------------------------
            # just after a rotation, before the next flush creates the new segment's file: that file
            # is created, and its first rows written, on the full disk
            until(lambda: logger_status()["open_segment"] is None, "a rotation")
            filler.start()
            assert logger_status()["open_segment"] is None, f"a flush beat the filler: {state}"
            until(lambda: bool(events.of_kind("disk_error")), "a disk_error event")
            error = events.of_kind("disk_error")[0]
            assert "ENOSPC" in error["reason"] and "No space left on device" in error["reason"], error
            assert error["data_dir"] == str(data_dir), error
            assert logger_status()["disk_error"] is not None
            assert "ENOSPC" in state["disk_error"], state
            until(lambda: retained.get("disk") == "error", "the retained status to say disk error")
            assert "ENOSPC" in retained.get("disk_error"), retained.latest
            until(lambda: bool(disk_problems()), "the gateway's health to report the disk")
            assert health.get("/api/health").status_code == 503
            assert "ENOSPC: No space left on device" in disk_problems()[0], disk_problems()

            # in memory up to the limit, then refused (those come back from the ring buffer)
            until(
                lambda: logger_status()["stats"]["samples_refused_total"] > 10_000,
                "the logger to refuse rows beyond its memory limit",
            )
            assert state["disk_error"] is not None, state
            assert state["buffered_rows"] * row_bytes >= MEMORY_LIMIT_BYTES, state
            assert state["buffered_rows"] * row_bytes <= MEMORY_LIMIT_BYTES + MEMORY_SLACK_BYTES, state
            assert not events.of_kind("disk_ok"), "disk_ok while the disk is still full"
            assert logger.alive() and acquisition.alive()

            # --- space returns -----------------------------------------------------------------------
            filler.stop()
            assert filler.error is None, filler.error
            until(lambda: bool(events.of_kind("disk_ok")), "a disk_ok event")
            until(lambda: logger_status()["disk_error"] is None, "the status to clear disk_error")
            until(lambda: retained.get("disk") == "ok", "the retained status to say disk ok")
            assert retained.get("disk_error") is None, retained.latest
            until(lambda: not disk_problems(), "the gateway's health to clear the disk problem")
            until(acquiring, "acquisition after the outage")
            assert acq["session"] == session and acq["first_seq"] == 0, acq  # the ring holds it all
            target = int(acq["last_seq"])
            # What acquisition has is what the logger owes: 0..target as one run, unless the device
            # link itself dropped samples (the emulator on a loaded machine), which nobody can supply.
            acquired = _acquired_seqs(rpc, target)
            expected = _runs(acquired)

            def logged_through() -> bool:
                intervals = logger_status()["sessions"].get(session, [])
                return (
                    bool(intervals) and intervals[-1][1] >= target and _clipped(intervals, target) == expected
                )

            until(logged_through, f"the logger's coverage to be {expected} (acquisition's 0..{target})")
            saved = rpc.call(topics.LOGGER_SAVE, {}, timeout=30)
            assert (data_dir / saved["file"]).is_file()

            seqs = recorded_seqs(data_dir, session)
            assert len(np.unique(seqs)) == len(seqs), "a sample was written twice"
            np.testing.assert_array_equal(seqs[seqs <= target], acquired)
            assert not list(data_dir.glob("*.tmp")), "a half-written file was left behind"
            assert not list(data_dir.glob("*.arrows"))[1:], "a segment was left unconverted"

            # the audit trail holds the outage too (written once the disk was back)
            kinds = [
                event.get("kind")
                for path in sorted(data_dir.glob("events_*.jsonl"))
                for event in read_events(path)
                if event.get("service") == "logger"
            ]
            assert "disk_error" in kinds and "disk_ok" in kinds, kinds

            # never restarted: the same process all along
            assert logger.alive() and acquisition.alive()
            assert retained.get("pid") == logger.process.pid and retained.get("started") == started
            assert len(events.of_kind("disk_error")) == 1, events.of_kind("disk_error")
        finally:
            filler.stop()
            health.close()
            gateway.stop()
            rpc.close()
            operator.stop()


def test_a_logger_started_on_a_full_disk_waits_for_space_then_recovers_and_records(
    broker: Broker, mqtt_as: Callable[[str], MqttSettings], settings: Settings, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with tmpfs(data_dir, TMPFS_BYTES), ExitStack() as stack:
        # what a logger killed earlier left behind: a segment that must be converted at start
        leftover = SegmentWriter(data_dir, ["P1", "P2"], settings.logger)
        leftover.append("earlier", 0, np.arange(50_000, dtype=np.float64), np.ones((50_000, 2), np.float32))
        assert leftover.close_segment() is not None  # flushed, left unconverted
        filler = Filler(data_dir / "filler")
        filler.start()
        operator = MqttClient(mqtt_as("operator"), "operator")
        rpc = RpcClient(operator)
        events = Events()
        operator.subscribe(topics.EVENTS, events.on_message, qos=1)
        operator.start()
        assert operator.wait_connected(10)
        logger = stack.enter_context(Logger(mqtt_as("logger"), tmp_path, data_dir))
        try:
            wait_until(
                lambda: bool(events.of_kind("disk_error")) or not logger.alive(), TIMEOUT, "disk_error"
            )
            assert logger.alive(), f"the logger crashed at start on a full disk:\n{logger.tail()}"
            assert "ENOSPC" in events.of_kind("disk_error")[0]["reason"]
            assert "waiting for it to be writable" in logger.tail()

            filler.stop()
            wait_until(lambda: bool(events.of_kind("disk_ok")), TIMEOUT, "disk_ok once space is back")
            status = rpc.call(topics.LOGGER_STATUS, {}, timeout=30)
            assert status["sessions"]["earlier"] == [[0, 49_999]], status
            assert recorded_seqs(data_dir, "earlier").tolist() == list(range(50_000))
            assert logger.alive()
        finally:
            filler.stop()
            rpc.close()
            operator.stop()


def test_a_logger_stopped_on_a_full_disk_names_what_it_could_not_write_and_the_ring_gives_it_back(
    settings: Settings, broker: Broker, mqtt_as: Callable[[str], MqttSettings], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with tmpfs(data_dir, TMPFS_BYTES), ExitStack() as stack:
        emulator = Stm32Emulator(settings, link_path=tmp_path / "stm32")
        emulator.start()
        stack.callback(emulator.stop)
        # memory fills up before the stop: rows held and rows refused must both be named
        logger = stack.enter_context(
            Logger(
                mqtt_as("logger"), tmp_path, data_dir, RCS_LOGGER_MEMORY_LIMIT_BYTES=str(MEMORY_LIMIT_BYTES)
            )
        )
        stack.enter_context(Acquisition(mqtt_as("acquisition"), tmp_path / "stm32", tmp_path))
        operator = MqttClient(mqtt_as("operator"), "operator")
        rpc = RpcClient(operator)
        events = Events()
        operator.subscribe(topics.EVENTS, events.on_message, qos=1)
        filler = Filler(data_dir / "filler")
        try:
            operator.start()
            assert operator.wait_connected(10)
            wait_until(lambda: any(data_dir.glob("*.arrows")), TIMEOUT, "the logger's first segment")
            filler.start()
            wait_until(lambda: bool(events.of_kind("disk_error")), TIMEOUT, "a disk_error event")
            status: dict[str, Any] = {}

            def refusing() -> bool:
                nonlocal status
                status = _call(rpc, topics.LOGGER_STATUS, {}) or {}
                return int(status.get("stats", {}).get("samples_refused_total", 0)) > 10_000

            wait_until(refusing, TIMEOUT, "rows kept in memory up to the limit, then refused")
            held, refused = status["buffered_rows"], status["stats"]["samples_refused_total"]
            session = next(iter(status["sessions"]))
            assert logger.stop() == 0, logger.tail()

            # said loudly: how many, which, and how to get them back
            said = [line for line in logger.log.read_text().splitlines() if "NOT written" in line]
            assert said, f"the logger stopped without naming what it could not write:\n{logger.tail()}"
            line = said[0]
            assert "CRITICAL" in line and session in line and "ring buffer" in line, line
            runs = [
                [int(x) for x in run.split("..")] for run in line.split("seq ")[1].split(". ")[0].split(", ")
            ]
            unwritten = int(line.split("stopping with ")[1].split(" ")[0])
            assert unwritten == sum(b - a + 1 for a, b in runs) >= held + refused, (line, status)

            # ...and they are: space back, a logger started again fetches them from the ring, once
            filler.stop()
            logger = stack.enter_context(Logger(mqtt_as("logger"), tmp_path, data_dir))

            def holds_them() -> bool:
                state = _call(rpc, topics.LOGGER_STATUS, {})
                if state is None or state["repair_pending"]:
                    return False
                covered = state["sessions"].get(session, [])
                return all(any(a <= first and last <= b for a, b in covered) for first, last in runs)

            wait_until(holds_them, TIMEOUT, f"the logger to fetch {runs} from the ring")
            rpc.call(topics.LOGGER_SAVE, {}, timeout=30)
            seqs = recorded_seqs(data_dir, session)
            assert len(np.unique(seqs)) == len(seqs), "a sample was written twice"
            for first, last in runs:
                assert np.count_nonzero((seqs >= first) & (seqs <= last)) == last - first + 1
        finally:
            filler.stop()
            rpc.close()
            operator.stop()
