"""End to end: STM32 emulator behind a real pty -> rcs-acquisition (its own process) -> real Mosquitto.

The binary-protocol tests run against both emulated boards: the Python emulator and the C firmware
core of firmware/ compiled for the host (firmware in the loop, tests/firmware.py); the valve test
also against the core's ARM build on an emulated Cortex-M7 (QEMU, `make firmware-check`).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import msgpack
import numpy as np
import pytest

from services.common import topics
from services.common.codec import pack
from services.common.mqtt import Message, MqttClient
from services.common.rpc import RpcClient, RpcError
from services.common.settings import MqttSettings, Settings
from services.devstack import firmware_board
from services.devstack.watch import Continuity
from services.emulators.stm32 import Stm32Emulator
from tests.conftest import wait_until
from tests.firmware import FirmwareBoard, qemu_board_command
from tests.processes import Acquisition

RETAINED_WAIT_S = 10.0
GOX1, FUEL1 = 0b000000010, 0b000010000
Board = Literal["python", "firmware", "qemu"]
BOARDS: tuple[Board, ...] = ("python", "firmware")
# the Cortex-M7 build under QEMU: `make firmware-check` (pytest -m qemu)
WITH_QEMU = (*BOARDS, pytest.param("qemu", marks=pytest.mark.qemu))


class Retained:
    """Latest decoded message per topic."""

    def __init__(self) -> None:
        self.latest: dict[str, dict[str, Any]] = {}
        self.history: dict[str, list[dict[str, Any]]] = {}

    def on_message(self, message: Message) -> None:
        decoded = msgpack.unpackb(message.payload, raw=False)
        self.latest[message.topic] = decoded
        self.history.setdefault(message.topic, []).append(decoded)


@pytest.fixture
def observer(mqtt_settings: MqttSettings) -> Iterator[tuple[MqttClient, Continuity, Retained]]:
    client = MqttClient(mqtt_settings, "test-observer")
    continuity, retained = Continuity(), Retained()
    client.subscribe(topics.TELEMETRY, continuity.on_message)
    for topic in (
        topics.TELEMETRY_META,
        topics.STATE_STM32,
        topics.status("acquisition"),
        topics.STM32_VALVE_ACK,
    ):
        client.subscribe(topic, retained.on_message)
    client.start()
    assert client.wait_connected(10)
    yield client, continuity, retained
    client.stop()


@contextmanager
def running_stack(
    settings: Settings,
    acquisition_mqtt: MqttSettings,
    tmp_path: Path,
    protocol: Literal["binary", "text"],
    board: Board = "python",
) -> Iterator[tuple[Stm32Emulator | FirmwareBoard, Acquisition]]:
    """The emulated board and rcs-acquisition, logged in as `acquisition_mqtt` (the `acquisition` user);
    both stopped afterwards, and acquisition must then exit cleanly."""
    link = tmp_path / "stm32"
    emulator: Stm32Emulator | FirmwareBoard
    if board == "python":
        emulator = Stm32Emulator(settings, protocol=protocol, link_path=link)
    elif board == "firmware":
        emulator = FirmwareBoard(firmware_board.command(settings, link), link, tmp_path / "board.log")
    else:
        emulator = FirmwareBoard(qemu_board_command(), link, tmp_path / "board.log", qemu_link=True)
    emulator.start()
    try:
        with Acquisition(acquisition_mqtt, link, tmp_path) as acquisition:
            yield emulator, acquisition
    finally:
        emulator.stop()


@pytest.mark.parametrize("board", BOARDS)
def test_binary_stream_is_contiguous_at_full_rate(
    settings: Settings,
    mqtt_as: Callable[[str], MqttSettings],
    tmp_path: Path,
    observer: tuple[MqttClient, Continuity, Retained],
    board: Board,
) -> None:
    client, continuity, retained = observer
    stack = running_stack(settings, mqtt_as("acquisition"), tmp_path, "binary", board)
    with stack as (_emulator, acquisition):
        wait_until(lambda: continuity.snapshot().samples >= 50_000, 40, "5 s of samples at 10 kHz")
        seen = continuity.snapshot()
        assert seen.gaps == 0 and seen.duplicates == 0 and seen.malformed == 0
        assert seen.channels == settings.channel_names
        assert len(seen.sessions) == 1
        assert seen.last is not None and seen.last.rate_hz == pytest.approx(10_000)
        assert seen.last.data.shape[1] == len(settings.channels)  # 17 raw channels + derived
        # every value is a calibrated, finite number except ISP/VELOCITY with no flow
        finite_columns = [i for i, c in enumerate(settings.channel_names) if c not in ("ISP", "VELOCITY")]
        assert np.isfinite(seen.last.data[:, finite_columns]).all()

        wait_until(lambda: topics.TELEMETRY_META in retained.latest, RETAINED_WAIT_S, "retained meta")
        meta = retained.latest[topics.TELEMETRY_META]
        assert [c["name"] for c in meta["channels"]] == list(settings.channel_names)
        assert {c["name"]: c["unit"] for c in meta["channels"]}["THRUST"] == "N"
        assert meta["session"] in seen.sessions
        assert meta["source"]["kind"] == "emulator" and meta["source"]["protocol"] == "binary"
        assert retained.latest[topics.status("acquisition")]["state"] == "online"
        assert retained.latest[topics.STATE_STM32]["connected"] is True

        # the ring buffer answers over request/response with exactly what was published
        rpc = RpcClient(client)
        try:
            status = rpc.call(topics.ACQ_BUFFER_STATUS, {}, timeout=5)
            assert status["size"] > 0 and status["last_seq"] >= status["first_seq"]
            batch = seen.last
            reply = rpc.call(topics.ACQ_HISTORY, {"seq_from": batch.seq, "seq_to": batch.next_seq}, timeout=5)
            assert reply["n"] == batch.n
            data = np.frombuffer(reply["data"], "<f4").reshape(batch.n, len(settings.channels))
            np.testing.assert_array_equal(data, batch.data)
            np.testing.assert_array_equal(np.frombuffer(reply["t"], "<f8"), batch.t)
            reduced = rpc.call(topics.ACQ_HISTORY_REDUCED, {"seconds": 2.0, "points": 100}, timeout=5)
            assert 0 < reduced["n"] <= 100 and reduced["n_source"] >= 100
            low = np.frombuffer(reduced["min"], "<f4").reshape(reduced["n"], -1)
            high = np.frombuffer(reduced["max"], "<f4").reshape(reduced["n"], -1)
            assert (np.nan_to_num(low) <= np.nan_to_num(high)).all()
            with pytest.raises(RpcError, match="seq_from"):
                rpc.call(topics.ACQ_HISTORY, {"seq_from": "yesterday", "seq_to": 5}, timeout=5)
        finally:
            rpc.close()
        assert acquisition.alive()
    assert retained.latest[topics.status("acquisition")]["state"] == "offline"


@pytest.mark.parametrize("board", WITH_QEMU)
def test_valve_commands_go_safe_and_the_device_watchdog_seen_by_acquisition(
    settings: Settings,
    mqtt_as: Callable[[str], MqttSettings],
    tmp_path: Path,
    observer: tuple[MqttClient, Continuity, Retained],
    board: Board,
) -> None:
    """Commands as actuation publishes them are applied and acknowledged by the device; GO_SAFE closes
    everything; a host that stops sending heartbeats (acquisition frozen with SIGSTOP) finds the valves
    closed by the device's own watchdog when it wakes, and reports it."""
    _client, continuity, retained = observer
    actuation = MqttClient(mqtt_as("actuation"), "test-e2e-actuation")
    actuation.start()
    assert actuation.wait_connected(10)
    cmd_no = iter(range(1, 1000))

    def command(topic: str, **fields: object) -> dict[str, Any]:
        """Publish a command; its acknowledgement as acquisition publishes it."""
        n = next(cmd_no)
        assert actuation.publish(topic, pack({"cmd_no": n, "deadline": time.time() + 5, **fields}), qos=1)

        def acks() -> list[dict[str, Any]]:
            return [a for a in retained.history.get(topics.STM32_VALVE_ACK, []) if a["cmd_no"] == n]

        wait_until(lambda: bool(acks()), 20, f"the answer to command {n}")
        return acks()[0]

    def open_valves(mask: int) -> None:
        """Until the first heartbeat reaches the device it refuses (that is its job): ask again."""
        result = ""
        give_up = time.monotonic() + 20
        while result != "applied" and time.monotonic() < give_up:
            result = command(topics.STM32_VALVES, mask=mask, cause="test")["result"]
            assert result in ("applied", "refused_no_heartbeat"), result
        assert result == "applied"

    def state() -> dict[str, Any]:
        return retained.latest.get(topics.STATE_STM32, {})

    try:
        with running_stack(settings, mqtt_as("acquisition"), tmp_path, "binary", board) as (device, acq):
            wait_until(lambda: state().get("valves") == 0, 30, "acquisition to report the device's STATUS")
            assert state()["device"].startswith("rcs-emulator") and state()["protocol"] == "binary"
            wait_until(lambda: continuity.snapshot().samples >= 1000, 30, "samples from the device")
            open_valves(GOX1 | FUEL1)
            wait_until(lambda: device.valves == GOX1 | FUEL1, 10, "the device to drive the outputs")
            wait_until(lambda: (state()["valves"], state()["safe"]) == (GOX1 | FUEL1, False), 10, "state")

            ack = command(topics.STM32_GO_SAFE, reason="test")
            assert (ack["ok"], ack["result"], ack["valves"]) == (True, "go_safe_applied", 0), ack
            assert device.valves == 0
            wait_until(lambda: (state()["valves"], state()["safe"]) == (0, True), 10, "state after go-safe")

            open_valves(GOX1)
            wait_until(lambda: (state()["valves"], state()["safe"]) == (GOX1, False), 10, "state: GOX1")
            acq.process.send_signal(signal.SIGSTOP)  # a hung host: no more heartbeats
            try:
                wait_until(lambda: device.valves == 0, 10, "the device's watchdog to close the valves")
            finally:
                acq.process.send_signal(signal.SIGCONT)
            wait_until(lambda: (state()["valves"], state()["safe"]) == (0, True), 20, "acquisition to see it")
            resumed = continuity.snapshot().samples
            wait_until(lambda: continuity.snapshot().samples >= resumed + 1000, 20, "samples after the stall")
            seen = continuity.snapshot()
            assert seen.duplicates == 0 and seen.malformed == 0 and len(seen.sessions) == 1
            assert acq.alive()
    finally:
        actuation.stop()


def test_unplug_replug_and_garbage_never_stop_the_stream(
    settings: Settings,
    mqtt_as: Callable[[str], MqttSettings],
    tmp_path: Path,
    observer: tuple[MqttClient, Continuity, Retained],
) -> None:
    _client, continuity, retained = observer
    with running_stack(settings, mqtt_as("acquisition"), tmp_path, "binary") as (emulator, acquisition):
        assert isinstance(emulator, Stm32Emulator)  # its fault injection
        wait_until(lambda: continuity.snapshot().samples >= 10_000, 40, "the stream to start")

        emulator.disconnect(1.0)
        wait_until(
            lambda: any(not s["connected"] for s in retained.history.get(topics.STATE_STM32, [])),
            10,
            "the link to report the unplug",
        )
        unplugged = continuity.snapshot().samples
        wait_until(lambda: retained.latest[topics.STATE_STM32]["connected"], 15, "the link to reconnect")
        wait_until(lambda: continuity.snapshot().samples >= unplugged + 10_000, 20, "samples after replug")
        after_replug = continuity.snapshot()
        assert len(after_replug.sessions) == 1, "a replug continues the session"
        assert after_replug.gaps >= 1, "samples taken while unplugged show as a gap, not as continuity"
        assert after_replug.duplicates == 0
        # ...and are counted: the device's sample counter moved on while nothing arrived
        wait_until(
            lambda: retained.latest[topics.STATE_STM32].get("lost_samples_total", 0) > 0,
            RETAINED_WAIT_S,
            "the state to count the samples lost while unplugged",
        )
        lost = retained.latest[topics.STATE_STM32]["lost_samples_total"]
        assert lost <= continuity.snapshot().lost_samples  # the observer sees those gaps, maybe more

        emulator.inject_garbage(20_000)
        emulator.corrupt_next_frames(5)
        before = continuity.snapshot().samples
        wait_until(lambda: continuity.snapshot().samples >= before + 20_000, 20, "samples after garbage")
        final = continuity.snapshot()
        assert final.duplicates == 0 and final.malformed == 0
        # corrupted frames cost only their own samples: at most the 5 frames (~100 samples) plus
        # the frames the garbage landed in
        assert final.lost_samples - after_replug.lost_samples < 2_000
        assert acquisition.alive()
    # thousands of bad bytes are logged once (then summarised every 10 s), not once per frame
    assert 1 <= acquisition.log.read_text().count("bad input on this connection") <= 2


def test_a_silent_device_is_reported_until_it_sends_again(
    settings: Settings,
    mqtt_as: Callable[[str], MqttSettings],
    tmp_path: Path,
    observer: tuple[MqttClient, Continuity, Retained],
) -> None:
    """The port stays open but no frame comes (a hung firmware): not "connected" any more."""
    _client, continuity, retained = observer
    with running_stack(settings, mqtt_as("acquisition"), tmp_path, "binary") as (emulator, acquisition):
        wait_until(lambda: continuity.snapshot().samples >= 10_000, 40, "the stream to start")
        wait_until(lambda: retained.latest[topics.STATE_STM32]["connected"], RETAINED_WAIT_S, "connected")

        assert isinstance(emulator, Stm32Emulator)  # the Python board can stall
        emulator.stall(3.0)
        wait_until(lambda: retained.latest[topics.STATE_STM32]["link"] == "silent", RETAINED_WAIT_S, "silent")
        state = retained.latest[topics.STATE_STM32]
        assert state["connected"] is False and isinstance(state["silent_since"], float), state
        assert state["port"] == str(tmp_path / "stm32"), "the port is still open"
        wait_until(
            lambda: retained.latest[topics.status("acquisition")]["stm32_connected"] is False,
            RETAINED_WAIT_S,
            "the service status to say so",
        )

        wait_until(lambda: retained.latest[topics.STATE_STM32]["link"] == "up", 20, "frames again")
        state = retained.latest[topics.STATE_STM32]
        assert state["connected"] is True and state["silent_since"] is None, state
        wait_until(
            lambda: retained.latest[topics.STATE_STM32]["lost_samples_total"] > 0,
            RETAINED_WAIT_S,
            "the samples lost while silent to be counted",
        )
        assert acquisition.alive()
    assert "STM32 silent: no frame for" in acquisition.log.read_text()


def test_legacy_text_protocol_is_detected_and_streamed(
    settings: Settings,
    mqtt_as: Callable[[str], MqttSettings],
    tmp_path: Path,
    observer: tuple[MqttClient, Continuity, Retained],
) -> None:
    _client, continuity, retained = observer
    with running_stack(settings, mqtt_as("acquisition"), tmp_path, "text"):
        wait_until(lambda: continuity.snapshot().samples >= 100, 30, "text-protocol samples")
        seen = continuity.snapshot()
        assert seen.gaps == 0 and seen.duplicates == 0
        assert seen.channels == settings.channel_names
        wait_until(
            lambda: (
                retained.latest.get(topics.TELEMETRY_META, {}).get("source", {}).get("protocol") == "text"
            ),
            RETAINED_WAIT_S,
            "meta to name the text protocol",
        )
