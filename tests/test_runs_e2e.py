"""Test runs end to end: real Mosquitto, the STM32 and Arduino emulators behind ptys, rcs-acquisition,
rcs-actuation and rcs-logger as processes, an operator commanding over MQTT request/response.

A run started by hand, and the runs the hot-fire procedure (`test: true`) starts and ends by itself,
land in `data_dir/runs/<id>/` as samples (with the pre-trigger window taken from acquisition's ring
buffer, seq contiguous), events and run.json; the continuous recording goes on untouched. The
procedure runs with the shorter waits of tests/test_hotfire_e2e.py.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq
import pytest
import yaml

from services.analyze import report as run_report
from services.analyze import run as run_dir
from services.common import runs as layout
from services.common import topics
from services.common.rpc import RpcError
from services.common.settings import DEFAULT_CONFIG, MqttSettings, Settings
from services.emulators.stm32.emulator import TruthBlock
from services.logger.events import event_line, read_events
from tests.conftest import wait_until
from tests.processes import Logger
from tests.test_actuation_e2e import Stand, armed_console, running_stand
from tests.test_hotfire_e2e import SHORTER_WAITS_MS, in_phase

TIMEOUT = 40.0
PRETRIGGER_S = 2.0
POST_S = 5.0  # the default: room for a lagging acquisition's clock on a loaded machine
REPORT_TIMEOUT = 180.0
# The burn, for the report and the ground truth alike: chamber pressure P5 above this. The ground
# truth is the emulated plant's P5 (before sensor noise and ADC).
BURN_THRESHOLD_BAR = 6.0  # well below the burn's ~9-12 bar: sensor noise (0.4 bar) hardly crosses it
DEVICE_RATE_HZ = 2000.0
RUN_ENV = {"RCS_RUNS_PRETRIGGER_S": str(PRETRIGGER_S), "RCS_RUNS_POST_S": str(POST_S)}


@dataclass
class RunStand:
    stand: Stand
    data_dir: Path
    config: Path
    process: Logger

    def state(self) -> dict[str, Any]:
        return self.stand.seen.state(topics.STATE_RUN)

    def logger(self, topic: str, **body: Any) -> dict[str, Any]:
        """A request to a service (the logger's, or acquisition's history) as the operator."""
        return self.stand.rpc.call(topic, body, timeout=10)

    def acquired(self, first: int, last: int) -> npt.NDArray[np.int64]:
        """The seqs first..last acquisition's ring buffer holds (the device may have lost some under
        load: gaps nobody can fill)."""
        seqs, seq_from = [], first
        while seq_from <= last:
            page = self.logger(topics.ACQ_HISTORY, seq_from=seq_from, seq_to=last + 1)
            seqs.append(np.frombuffer(page["seq"], "<i8"))
            seq_from = page["next_seq"]
        return np.concatenate(seqs)

    def recorded(self, run_id: str, *, reported: bool = False) -> dict[str, Any]:
        """run.json, once the logger wrote it (`reported`: and tried its report, a process of its own
        that takes long on a loaded machine)."""
        path = layout.run_dir(self.data_dir, run_id) / layout.RUN_JSON

        def written() -> bool:
            return path.exists() and (
                not reported or json.loads(path.read_text())["report"]["status"] != "pending"
            )

        wait_until(written, REPORT_TIMEOUT if reported else TIMEOUT, f"run {run_id} recorded")
        run: dict[str, Any] = json.loads(path.read_text())
        return run


def short_hotfire(tmp_path: Path) -> Path:
    """stand.yaml with the hot fire's countdown, burn, purge and vent shortened."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for index, wait_ms in SHORTER_WAITS_MS.items():
        config["sequences"]["hotfire"]["steps"][index]["wait_ms"] = wait_ms
    config["report"]["burn_threshold_bar"] = BURN_THRESHOLD_BAR
    short = tmp_path / "stand.yaml"
    short.write_text(yaml.safe_dump(config))
    return short


def emulated_burn(
    truth: list[TruthBlock], recorded: Any, rate_hz: float, threshold: float
) -> tuple[float, float]:
    """The emulated engine's burn duration (plant P5 above `threshold`) and impulse (∫ plant thrust
    dt) over the recorded samples, in the recording's time base: acquisition maps the device's clock
    to the host's, slewing it by up to 10 % while the transport delay changes (a loaded machine), so
    each block's device seconds count as the seconds its samples span in the recording. A device
    index is its seq plus a constant (acquisition's first sample is seq 0), found at the burn's
    first sample."""
    seq = recorded.column("seq").to_numpy().astype(np.int64)
    t = recorded.column("timestamp").cast("int64").to_numpy() / 1e6
    p5 = recorded.column("P5").to_numpy()
    first_truth = next(b.first + b.n - b.above for b in truth if b.above)
    shift = first_truth - int(seq[np.argmax(p5 > threshold)])
    duration = impulse = 0.0
    for block in truth:
        first = block.first - shift
        if first < seq[0] or first + block.n > seq[-1]:
            continue
        span = float(np.interp(first + block.n, seq, t) - np.interp(first, seq, t))
        scale = span / (block.n / rate_hz)
        duration += block.above / rate_hz * scale
        impulse += block.impulse_ns * scale
    return duration, impulse


def report_settings(settings: Settings) -> Settings:
    """`settings` with the report's burn threshold of `short_hotfire`'s stand.yaml."""
    report = settings.report.model_copy(update={"burn_threshold_bar": BURN_THRESHOLD_BAR})
    return settings.model_copy(update={"report": report})


@contextmanager
def run_stand(
    settings: Settings, mqtt_as: Callable[[str], MqttSettings], tmp_path: Path
) -> Iterator[RunStand]:
    config = short_hotfire(tmp_path)
    data_dir = tmp_path / "data"
    env = RUN_ENV | {"RCS_CONFIG": str(config)}
    # the STM32 at 2 kHz (acquisition follows the device's rate): a fifth of the load of 10 kHz, so
    # acquisition's clock follows the device's closely on a busy machine; the figures are the same
    slower = settings.acquisition.model_copy(update={"rate_hz": DEVICE_RATE_HZ})
    with running_stand(
        settings.model_copy(update={"acquisition": slower}), mqtt_as, tmp_path, **env
    ) as stand:
        for topic in (topics.STATE_RUN, topics.status("logger")):
            stand.operator.subscribe(topic, stand.seen.on_message, qos=1)
        with Logger(mqtt_as("logger"), tmp_path, data_dir, **env) as logger:
            wait_until(lambda: bool(stand.seen.state(topics.STATE_RUN)), TIMEOUT, "actuation's run state")
            online = lambda: stand.seen.state(topics.status("logger")).get("state") == "online"  # noqa: E731
            wait_until(online, TIMEOUT, "the logger online")
            # the ring buffer holds a whole pre-trigger window before any run starts
            ring = stand.stm32.samples_generated + round((PRETRIGGER_S + 0.5) * stand.stm32.rate_hz)
            wait_until(
                lambda: stand.stm32.samples_generated >= ring, TIMEOUT, "a pre-trigger window of samples"
            )
            yield RunStand(stand, data_dir, config, logger)


@pytest.fixture
def runs(settings: Settings, mqtt_as: Callable[[str], MqttSettings], tmp_path: Path) -> Iterator[RunStand]:
    with run_stand(settings, mqtt_as, tmp_path) as running:
        yield running


def samples_of(directory: Path) -> tuple[Any, dict[bytes, bytes]]:
    table = pq.read_table(directory / layout.SAMPLES)
    metadata = pq.read_metadata(directory / layout.SAMPLES).metadata or {}
    return table, metadata


def test_a_manual_run_records_its_samples_with_the_pretrigger_window_its_events_and_metadata(
    runs: RunStand,
) -> None:
    stand = runs.stand
    started = stand.call("run_start", name="Cold flow #3", notes="GOX line leak check")["run"]
    run_id = started["id"]
    assert layout.valid_id(run_id) and run_id.endswith("-cold-flow-3"), run_id
    wait_until(lambda: (runs.state().get("active") or {}).get("id") == run_id, TIMEOUT, "the active run")
    with pytest.raises(RpcError, match=f"run {run_id} is active: stop it first"):
        stand.call("run_start", name="another")
    stand.call("alarms")  # a read: its asker is no operator of the run
    one_second = stand.stm32.samples_generated + round(stand.stm32.rate_hz)
    wait_until(lambda: stand.stm32.samples_generated >= one_second, TIMEOUT, "a second of the run")
    with pytest.raises(RpcError, match="is not active"):
        stand.call("run_stop", id="20200101T000000Z-other")
    stopped = stand.call("run_stop", id=run_id)["run"]
    assert stopped["id"] == run_id and stopped["result"] == "stopped"
    with pytest.raises(RpcError, match="no run is active"):
        stand.call("run_stop")

    run = runs.recorded(run_id)
    assert run["name"] == "Cold flow #3" and run["notes"] == "GOX line leak check"
    assert run["operators"] == ["operator"] and run["stand"] == "rcs-stand-1"
    assert run["result"] == "stopped" and run["procedure"] is None
    assert run["config_yaml"] == runs.config.read_text()
    assert len(run["config_sha256"]) == 64 and run["version"].startswith("0.1.0")
    assert run["pretrigger_s"] == PRETRIGGER_S
    assert run["report"] == {"status": "pending"}

    directory = layout.run_dir(runs.data_dir, run_id)
    table, metadata = samples_of(directory)
    seq = table.column("seq").to_numpy().astype(np.int64)
    assert len(seq) == run["samples"] and seq[0] == run["first_seq"] and seq[-1] == run["last_seq"]
    assert (seq == runs.acquired(int(seq[0]), int(seq[-1]))).all(), "every sample acquisition has, once"
    t = table.column("timestamp").cast("int64").to_numpy() / 1e6
    assert abs(t[0] - (run["started_at"] - PRETRIGGER_S)) < 0.05, "begins pretrigger_s before the start"
    assert run["ended_at"] - 0.02 <= t[-1] <= run["ended_at"], "ends at the run's end (within a batch)"
    assert run["problems"] == []
    assert json.loads(metadata[layout.META_RUN.encode()]) == {k: v for k, v in run.items() if k != "report"}

    events = list(read_events(directory / layout.EVENTS))
    commands = [(e["command"], e["accepted"]) for e in events if e.get("kind") == "command"]
    assert ("run_start", True) in commands and ("run_stop", True) in commands
    assert all(e["ts"] >= run["started_at"] - PRETRIGGER_S for e in events)

    # the continuous recording went on: it holds every sample of the run too
    def continuous_holds_the_run() -> bool:
        (intervals,) = runs.logger(topics.LOGGER_STATUS)["sessions"].values()
        held = np.concatenate([np.arange(first, last + 1) for first, last in intervals])
        return bool(np.isin(seq, held).all())

    wait_until(continuous_holds_the_run, TIMEOUT, "the continuous recording to hold the run's samples")

    # the logger's run list and run
    listed = runs.logger(topics.LOGGER_RUNS)
    assert [r["id"] for r in listed["runs"]] == [run_id] and "config_yaml" not in listed["runs"][0]
    assert runs.logger(topics.LOGGER_RUN, id=run_id)["config_sha256"] == run["config_sha256"]
    with pytest.raises(RpcError, match="no run 20200101T000000Z-nothing"):
        runs.logger(topics.LOGGER_RUN, id="20200101T000000Z-nothing")
    with pytest.raises(RpcError, match="'id' must be a run id"):
        runs.logger(topics.LOGGER_RUN, id="../../etc")

    report = runs.recorded(run_id, reported=True)["report"]
    assert report["status"] in ("generated", "unavailable"), report


def test_the_hotfire_starts_its_run_ends_it_after_the_procedure_and_reports_the_emulated_burn(
    runs: RunStand, settings: Settings
) -> None:
    stand = runs.stand
    stand.stm32.watch_above("P5", BURN_THRESHOLD_BAR)
    console, _ = armed_console(stand)
    try:
        stand.call("sequence", name="hotfire")
        wait_until(
            lambda: (runs.state().get("active") or {}).get("procedure") == "hotfire", TIMEOUT, "its run"
        )
        active = runs.state()["active"]
        assert active["auto"] is True and active["name"] == "hotfire" and active["started_by"] == "operator"
        with pytest.raises(RpcError, match="is active: stop it first"):
            stand.call("run_start", name="another")
        wait_until(lambda: stand.system_state() == "idle", TIMEOUT, "the procedure to end")
        ended_at = stand.seen.state(topics.STATE_SYSTEM)["ts"]
        wait_until(lambda: runs.state().get("active") is None, TIMEOUT, "the run to end after the tail")
    finally:
        console.stop()
    last = runs.state()["last"]
    assert last["result"] == "completed" and last["stopped_by"] == "procedure hotfire"
    assert POST_S - 0.2 <= last["ended_at"] - ended_at <= POST_S + 1.0
    run = runs.recorded(last["id"])
    assert run["result"] == "completed" and run["procedure"] == "hotfire"
    directory = layout.run_dir(runs.data_dir, run["id"])
    table, _ = samples_of(directory)
    seq = table.column("seq").to_numpy().astype(np.int64)
    assert (seq == runs.acquired(int(seq[0]), int(seq[-1]))).all(), "every sample acquisition has, once"

    # the report: its burn duration and total impulse are the emulated engine's, within 2 %
    assert runs.recorded(run["id"], reported=True)["report"] == {"status": "generated", "file": "report.html"}
    burned, impulse = emulated_burn(stand.stm32.truth(), table, DEVICE_RATE_HZ, BURN_THRESHOLD_BAR)
    assert burned > 1.0, "the emulated engine burned"
    report = run_report.build(run_dir.load(directory), report_settings(settings))
    assert report.figures.burn is not None
    assert report.figures.burn.duration_s == pytest.approx(burned, rel=0.02)
    assert report.figures.impulse_run == pytest.approx(impulse, rel=0.02)
    page = (directory / layout.REPORT).read_text()
    shown = {figure: value for figure, value, _, _ in run_report.figure_rows(report)}
    assert f">{shown['burn duration']}<" in page and f">{shown['total impulse']}<" in page


def test_an_aborted_hotfire_ends_its_run_aborted(runs: RunStand) -> None:
    stand = runs.stand
    console, _ = armed_console(stand)
    try:
        stand.call("sequence", name="hotfire")
        in_phase(stand, "mainstage")
        stand.stm32.override("P5", 30.0)  # red-line: above 25 bar
        wait_until(lambda: stand.system_state() == "aborting", TIMEOUT, "the red-line to abort")
        stand.stm32.override("P5", None)
        wait_until(lambda: stand.system_state() == "idle", TIMEOUT, "the abort to end")
        wait_until(lambda: runs.state().get("active") is None, TIMEOUT, "the run to end")
    finally:
        console.stop()
    last = runs.state()["last"]
    assert last["result"] == "aborted"
    run = runs.recorded(last["id"])
    assert run["result"] == "aborted"
    kinds = {e.get("kind") for e in read_events(layout.run_dir(runs.data_dir, run["id"]) / layout.EVENTS)}
    assert {"redline", "state"} <= kinds


def test_a_logger_restarted_during_a_run_records_it_whole_from_the_ring_buffer(
    runs: RunStand, mqtt_as: Callable[[str], MqttSettings], tmp_path: Path
) -> None:
    stand = runs.stand
    run_id = stand.call("run_start", name="across a restart")["run"]["id"]
    directory = layout.run_dir(runs.data_dir, run_id)
    with pytest.raises(RpcError, match="stop it first"):
        stand.call("run_start", name="refused, and audited")

    def audited() -> list[dict[str, Any]]:
        return commands_in(runs.data_dir.glob("events_*.jsonl"))

    wait_until(lambda: len(audited()) == 2, TIMEOUT, "the logger recording both commands")
    assert runs.process.stop() == 0, runs.process.tail()
    assert not (directory / layout.RUN_JSON).exists(), "an active run is not finalized at a stop"
    # The stopped logger's run recorder wrote the first (as here), or missed it as it stopped: either
    # way the next logger takes both from the events files, each once. A line torn by a crash goes.
    first = audited()[0]
    (directory / layout.EVENTS).write_bytes(event_line(first) + b'{"ts":17')
    env = RUN_ENV | {"RCS_CONFIG": str(runs.config)}
    (tmp_path / "again").mkdir()
    with Logger(mqtt_as("logger"), tmp_path / "again", runs.data_dir, **env):
        online = lambda: stand.seen.state(topics.status("logger")).get("state") == "online"  # noqa: E731
        wait_until(online, TIMEOUT, "the logger online again")
        stand.call("run_stop", id=run_id)
        run = runs.recorded(run_id)
    assert run["result"] == "stopped" and run["problems"] == []
    table, _ = samples_of(directory)
    seq = table.column("seq").to_numpy().astype(np.int64)
    assert (seq == runs.acquired(int(seq[0]), int(seq[-1]))).all(), "every sample acquisition has, once"
    t = table.column("timestamp").cast("int64").to_numpy() / 1e6
    assert abs(t[0] - run["window_start"]) < 0.05 and run["ended_at"] - 0.05 <= t[-1] <= run["ended_at"]
    accepted = [(e["command"], e["accepted"]) for e in commands_in([directory / layout.EVENTS])]
    assert accepted == [("run_start", True), ("run_start", False), ("run_stop", True)]


def test_a_logger_behind_the_clock_keeps_the_run_s_last_events(runs: RunStand) -> None:
    """The logger paused from just before a run's stop until the device ran 2 s past it: resumed, it
    gets the stop and its audit behind a backlog of telemetry, and finalizes the run after them (its
    end follows the telemetry it handled, not the clock)."""
    stand = runs.stand
    run_id = stand.call("run_start", name="behind the clock")["run"]["id"]
    directory = layout.run_dir(runs.data_dir, run_id)
    wait_until((directory / layout.EVENTS).exists, TIMEOUT, "the logger recording the run")
    runs.process.process.send_signal(signal.SIGSTOP)
    try:
        stand.call("run_stop", id=run_id)
        past = stand.stm32.samples_generated + round(2.0 * stand.stm32.rate_hz)
        wait_until(lambda: stand.stm32.samples_generated >= past, TIMEOUT, "the device 2 s past the stop")
    finally:
        runs.process.process.send_signal(signal.SIGCONT)
    run = runs.recorded(run_id)
    accepted = [(e["command"], e["accepted"]) for e in commands_in([directory / layout.EVENTS])]
    assert accepted == [("run_start", True), ("run_stop", True)]
    assert run["result"] == "stopped" and run["events"] >= 2


def commands_in(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """The audited commands of events files, by time."""
    events = (e for path in paths for e in read_events(path) if e.get("kind") == "command")
    return sorted(events, key=lambda e: float(e["ts"]))
