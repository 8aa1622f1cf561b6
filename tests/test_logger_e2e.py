"""Logger end to end: the STM32 emulator -> rcs-acquisition -> real Mosquitto -> rcs-logger -> Parquet,
with the logger killed (SIGKILL) and the broker restarted mid-run, and malformed payloads injected.

Afterwards the Parquet files together must hold every seq from the first to the last exactly once,
and every file must open with pyarrow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from typer.testing import CliRunner

from services.analyze.__main__ import app as analyze
from services.common import topics
from services.common.codec import pack, unpack_map
from services.common.mqtt import MqttClient
from services.common.rpc import RpcClient, RpcTimeout
from services.common.settings import MqttSettings, Settings
from services.common.telemetry import TelemetryBatch, encode_batch
from services.devstack.broker import Broker
from services.emulators.stm32 import Stm32Emulator
from services.gateway.problems import logger_problems
from services.logger.events import read_events
from services.logger.segments import SegmentWriter
from tests.conftest import wait_until
from tests.processes import Acquisition, Logger
from tests.recordings import last_recorded_seq, recorded_seqs

TIMEOUT = 60.0
ROTATE_S = "4"


def _call(rpc: RpcClient, topic: str, body: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return rpc.call(topic, body, timeout=3)
    except RpcTimeout:
        return None


def _acquired_seqs(rpc: RpcClient, session: str, up_to: int) -> np.ndarray:
    """Every seq <= up_to that acquisition's ring buffer holds (the device may have dropped some:
    those gaps are nobody's to fill, and the logger must not invent them)."""
    seqs, seq_from = [], 0
    while seq_from <= up_to:
        page = rpc.call(topics.ACQ_HISTORY, {"seq_from": seq_from, "seq_to": up_to + 1}, timeout=10)
        assert page["session"] == session and page["first_seq"] == 0, "the ring no longer holds seq 0"
        seqs.append(np.frombuffer(page["seq"], "<i8"))
        seq_from = page["next_seq"]
    return np.concatenate(seqs)


def _logged_through(rpc: RpcClient, session: str, last_seq: int) -> bool:
    """The logger holds `session` up to at least `last_seq` and has nothing left to repair."""
    status = _call(rpc, topics.LOGGER_STATUS, {})
    if status is None or status["repair_pending"]:
        return False
    intervals = status["sessions"].get(session, [])
    return bool(intervals) and intervals[0][0] == 0 and intervals[-1][1] >= last_seq


def _samples_while_down(emulator: Stm32Emulator, seconds: float, what: str) -> None:
    """Wait until the device has produced `seconds` worth of samples (at its nominal rate) from now."""
    target = emulator.samples_generated + round(seconds * emulator.rate_hz)
    wait_until(lambda: emulator.samples_generated >= target, TIMEOUT, what)


def test_every_sample_exactly_once_through_sigkill_broker_restart_and_garbage(
    settings: Settings, restartable_broker: Broker, tmp_path: Path
) -> None:
    broker = restartable_broker
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    emulator = Stm32Emulator(settings, link_path=tmp_path / "stm32")
    operator = MqttClient(broker.settings("operator"), "operator")
    intruder = MqttClient(broker.settings("acquisition"), "acquisition-garbage")
    rpc = RpcClient(operator)
    logger_log = tmp_path / "logger.log"
    with ExitStack() as stack:
        emulator.start()
        stack.callback(emulator.stop)
        logger = stack.enter_context(
            Logger(broker.settings("logger"), tmp_path, data_dir, RCS_LOGGER_ROTATE_S=ROTATE_S)
        )
        acquisition = stack.enter_context(
            Acquisition(broker.settings("acquisition"), tmp_path / "stm32", tmp_path)
        )
        stack.callback(operator.stop)
        stack.callback(intruder.stop)
        stack.callback(rpc.close)
        operator.start()
        intruder.start()
        assert operator.wait_connected(10) and intruder.wait_connected(10)
        status: dict[str, Any] | None = None

        def acquiring() -> bool:
            nonlocal status
            status = _call(rpc, topics.ACQ_BUFFER_STATUS, {})
            return status is not None and (status["last_seq"] or 0) > 20_000

        wait_until(acquiring, TIMEOUT, "acquisition to run")
        assert status is not None
        session = status["session"]

        logger.kill()  # up to ~1 s of flushed-but-unconverted data and the in-memory tail are gone
        _samples_while_down(emulator, 1.5, "samples the killed logger never heard")
        logger = stack.enter_context(
            Logger(broker.settings("logger"), tmp_path, data_dir, RCS_LOGGER_ROTATE_S=ROTATE_S)
        )
        wait_until(lambda: _call(rpc, topics.LOGGER_STATUS, {}) is not None, TIMEOUT, "the logger to restart")
        # malformed payloads on the telemetry topic: counted, never a crash or a stall
        for garbage in (b"", b"\xc1", b"not msgpack at all", b"\x81\xa1v\x02"):
            intruder.publish(topics.TELEMETRY, garbage)
        wait_until(lambda: "malformed" in logger_log.read_text().lower(), TIMEOUT, "the garbage to be seen")

        broker.stop()  # QoS 0 telemetry published meanwhile never reaches the logger
        _samples_while_down(emulator, 2.0, "samples published while the broker is down")
        broker.start()
        assert operator.wait_connected(TIMEOUT)

        wait_until(acquiring, TIMEOUT, "acquisition after the broker restart")
        assert status is not None and status["session"] == session
        target = int(status["last_seq"])
        wait_until(lambda: _logged_through(rpc, session, target), TIMEOUT, f"the logger to hold 0..{target}")
        saved = rpc.call(topics.LOGGER_SAVE, {}, timeout=30)
        assert (data_dir / saved["file"]).is_file()

        seqs = recorded_seqs(data_dir, session)
        assert not list(data_dir.glob("*.tmp")), "a half-written file was left behind"
        assert len(np.unique(seqs)) == len(seqs), "a sample was written twice"
        np.testing.assert_array_equal(seqs[seqs <= target], _acquired_seqs(rpc, session, target))
        assert logger.alive() and acquisition.alive()


def test_save_now_rotates_and_names_the_file(
    settings: Settings, broker: Broker, mqtt_as: Callable[[str], MqttSettings], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    emulator = Stm32Emulator(settings, link_path=tmp_path / "stm32")
    operator = MqttClient(mqtt_as("operator"), "operator")
    rpc = RpcClient(operator)
    with ExitStack() as stack:
        emulator.start()
        stack.callback(emulator.stop)
        stack.enter_context(Logger(mqtt_as("logger"), tmp_path, data_dir, RCS_LOGGER_ROTATE_S=ROTATE_S))
        stack.enter_context(Acquisition(mqtt_as("acquisition"), tmp_path / "stm32", tmp_path))
        stack.callback(operator.stop)
        stack.callback(rpc.close)
        operator.start()
        assert operator.wait_connected(10)

        def some_logged() -> bool:
            state = _call(rpc, topics.LOGGER_STATUS, {})
            return state is not None and state["buffered_rows"] + state["segment_rows"] > 0

        wait_until(some_logged, TIMEOUT, "the logger to record")
        first = rpc.call(topics.LOGGER_SAVE, {}, timeout=30)["file"]
        wait_until(some_logged, TIMEOUT, "rows for the second file")
        second = rpc.call(topics.LOGGER_SAVE, {}, timeout=30)["file"]
        assert first != second
        for name in (first, second):
            assert name.startswith("sensor_log_") and name.endswith(".parquet")
            assert pq.ParquetFile(data_dir / name).metadata.num_rows > 0


def test_events_are_recorded_with_their_publishers_login_and_forgeries_counted(
    broker: Broker, mqtt_as: Callable[[str], MqttSettings], tmp_path: Path
) -> None:
    """The broker lets `operator` publish events only on rcs/events/operator: one claiming to be
    actuation's is recorded as operator's, marked forged and counted."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    operator = MqttClient(mqtt_as("operator"), "operator", announce=False)
    rpc = RpcClient(operator)
    with ExitStack() as stack:
        stack.enter_context(Logger(mqtt_as("logger"), tmp_path, data_dir))
        stack.callback(operator.stop)
        stack.callback(rpc.close)
        operator.start()
        assert operator.wait_connected(10)
        wait_until(lambda: _call(rpc, topics.LOGGER_STATUS, {}) is not None, TIMEOUT, "the logger to serve")
        forged = {
            "ts": time.time(),
            "service": "actuation",
            "kind": "state",
            "new": "idle",
            "login": "actuation",
        }
        assert operator.publish(topics.events("actuation"), pack(forged), qos=1)  # refused by the broker
        assert operator.publish(topics.events("operator"), pack(forged), qos=1)
        assert operator.publish(
            topics.events("operator"), pack({"ts": time.time(), "service": "operator", "kind": "note"}), qos=1
        )

        def recorded() -> list[dict[str, Any]]:  # the operator's (the logger may add its own)
            every = [e for path in sorted(data_dir.glob("events_*.jsonl")) for e in read_events(path)]
            return [e for e in every if e.get("publisher") == "operator"]

        wait_until(lambda: len(recorded()) >= 2, TIMEOUT, "the events on disk")
        first, second = recorded()
        assert (first["publisher"], first["service"], first.get("forged")) == ("operator", "actuation", True)
        assert first["login"] == "actuation", "a field of the payload, kept as it came: it proves nothing"
        assert (second["publisher"], second["kind"], "forged" in second) == ("operator", "note", False)
        status = rpc.call(topics.LOGGER_STATUS, {}, timeout=10)
        assert status["stats"]["forged_events_total"] == 1


def test_check_reports_a_recording_that_ends_before_acquisitions_ring_buffer(
    settings: Settings, broker: Broker, mqtt_as: Callable[[str], MqttSettings], tmp_path: Path
) -> None:
    """A logger killed (and not restarted) leaves files that are continuous up to where they stop:
    only acquisition, still running the session, knows that more was taken (`check --acquisition`)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    emulator = Stm32Emulator(settings, link_path=tmp_path / "stm32")
    operator = MqttClient(mqtt_as("operator"), "operator")
    rpc = RpcClient(operator)
    with ExitStack() as stack:
        emulator.start()
        stack.callback(emulator.stop)
        logger = stack.enter_context(Logger(mqtt_as("logger"), tmp_path, data_dir))
        stack.enter_context(Acquisition(mqtt_as("acquisition"), tmp_path / "stm32", tmp_path))
        stack.callback(operator.stop)
        stack.callback(rpc.close)
        operator.start()
        assert operator.wait_connected(10)

        def recorded_some() -> bool:
            state = _call(rpc, topics.LOGGER_STATUS, {})
            return state is not None and state["buffered_rows"] + state["segment_rows"] > 0

        wait_until(recorded_some, TIMEOUT, "the logger to record")
        rpc.call(topics.LOGGER_SAVE, {}, timeout=30)
        logger.kill()  # it may have begun its next segment meanwhile: `check` reads that too
        last = last_recorded_seq(data_dir)
        wait_until(
            lambda: ((_call(rpc, topics.ACQ_BUFFER_STATUS, {}) or {}).get("last_seq") or 0) > last,
            TIMEOUT,
            "acquisition to go on",
        )

        # the files alone cannot tell (they may show the device's own gaps: a loaded machine's emulator)
        files_only = CliRunner().invoke(analyze, ["check", str(data_dir)])
        assert files_only.exit_code in (0, 1), files_only.output
        assert "ring buffer" not in files_only.output

        login = mqtt_as("operator")
        assert login.password is not None
        env = {
            "RCS_MQTT_HOST": login.host,
            "RCS_MQTT_PORT": str(login.port),
            "RCS_MQTT_USERNAME": str(login.username),
            "RCS_MQTT_PASSWORD": login.password.get_secret_value(),
        }
        result = CliRunner().invoke(analyze, ["check", str(data_dir), "--acquisition"], env=env)
        assert result.exit_code == 1, result.output
        output = " ".join(result.output.split())
        assert "ends before acquisition's ring buffer" in output and f"stop at seq {last}," in output, output
        assert "continuous" not in output, output


def test_a_stop_names_the_samples_still_to_fetch_from_the_ring(
    settings: Settings, mqtt_as: Callable[[str], MqttSettings], tmp_path: Path
) -> None:
    """The logger holds seq 0..999 of a session and then sees 5000..5099 live: 1000..4999 are queued
    for repair, and acquisition (absent here) never answers. A stop must say so, not drop them."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    channels = ("P1", "P2")
    earlier = SegmentWriter(data_dir, channels, settings.logger)
    earlier.append("S", 0, np.arange(1000, dtype=np.float64), np.zeros((1000, 2), np.float32))
    assert earlier.rotate() is not None
    publisher = MqttClient(mqtt_as("acquisition"), "acquisition-test")
    rpc = RpcClient(publisher)
    with ExitStack() as stack:
        logger = stack.enter_context(Logger(mqtt_as("logger"), tmp_path, data_dir))
        stack.callback(publisher.stop)
        stack.callback(rpc.close)
        publisher.start()
        assert publisher.wait_connected(10)
        wait_until(lambda: _call(rpc, topics.LOGGER_STATUS, {}) is not None, TIMEOUT, "the logger")
        live = TelemetryBatch("S", 5000, 1000.0, channels, np.arange(100.0), np.zeros((100, 2), np.float32))
        publisher.publish(topics.TELEMETRY, encode_batch(live))
        wait_until(
            lambda: (_call(rpc, topics.LOGGER_STATUS, {}) or {}).get("repair_pending") == 4000,
            TIMEOUT,
            "the repair of 1000..4999 to be queued",
        )
    said = [line for line in logger.tail().splitlines() if "NOT yet fetched" in line]
    assert said, f"the logger stopped without naming what it had still to fetch:\n{logger.tail()}"
    assert "CRITICAL" in said[0] and "4000 samples of session S" in said[0] and "seq 1000..4999." in said[0]


def test_a_logger_behind_its_threshold_says_so_in_its_status(
    settings: Settings, broker: Broker, mqtt_as: Callable[[str], MqttSettings], tmp_path: Path
) -> None:
    """With a threshold below one telemetry batch (whose first sample is older than the batch period
    when it is published) the logger is always behind: its retained status must say by how much."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    emulator = Stm32Emulator(settings, link_path=tmp_path / "stm32")
    operator = MqttClient(mqtt_as("operator"), "operator")
    statuses: list[dict[str, Any]] = []
    operator.subscribe(topics.status("logger"), lambda m: statuses.append(unpack_map(m.payload)), qos=1)
    with ExitStack() as stack:
        emulator.start()
        stack.callback(emulator.stop)
        logger = stack.enter_context(
            Logger(mqtt_as("logger"), tmp_path, data_dir, RCS_LOGGER_BEHIND_AFTER_S="0.001")
        )
        stack.enter_context(Acquisition(mqtt_as("acquisition"), tmp_path / "stm32", tmp_path))
        stack.callback(operator.stop)
        operator.start()
        assert operator.wait_connected(10)
        wait_until(lambda: any(s.get("behind_s") for s in statuses), TIMEOUT, "the status to say behind")
        behind = next(s for s in statuses if s.get("behind_s"))
        assert behind["state"] == "online" and behind["pid"] == logger.process.pid
        assert behind["behind_s"] >= 0.001, behind  # past the threshold (to the ms)
        # what the gateway makes of that status (/api/health, /api/status, the dashboard)
        (problem,) = logger_problems(behind)
        assert problem.component == "logger" and problem.reason.startswith("logger behind: recording")
    assert "recording is behind" in (tmp_path / "logger.log").read_text()
