"""The STM32 emulator seen from a host: real pty, real pyserial, frames decoded with stm32_wire.

Waits are liveness bounds (a test fails if something never happens), never timing assertions.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import serial
from numpy.polynomial import polynomial

from services.common import stm32_wire as wire
from services.common.settings import Channel, Settings, load_settings
from services.common.stand_physics import QUANTITIES, Adc, DerivedChannels, Plant, PlantState
from services.emulators.stm32 import Stm32Emulator
from tests.conftest import wait_until
from tests.processes import emulator_cli

LIVENESS_S = 5.0
F = TypeVar("F", bound=wire.Frame)


@pytest.fixture(scope="module")
def stand() -> Settings:
    return load_settings()


def mask(stand: Settings, *valves: str) -> int:
    return sum(1 << stand.valve_names.index(v) for v in valves)


class Host:
    """The host end of a binary link: sends commands, reads frames, keeps heartbeats going if asked."""

    def __init__(self, port: serial.Serial) -> None:
        self.port = port
        self.deframer = wire.Deframer()
        self.heartbeating = False
        self._received: deque[wire.Frame] = deque()
        self._heartbeats = 0
        self._next_heartbeat = 0.0

    def send(self, data: bytes) -> None:
        self.port.write(data)

    def heartbeat(self) -> None:
        self.send(wire.encode_heartbeat(self._heartbeats))
        self._heartbeats += 1
        self._next_heartbeat = time.monotonic() + 0.1

    def frames(self) -> list[wire.Frame]:
        """The frames received and not yet consumed (none if nothing arrives for a moment)."""
        self._read()
        frames = list(self._received)
        self._received.clear()
        return frames

    def wait_for(self, kind: type[F], predicate: Callable[[F], bool] = lambda _: True) -> F:
        """Consume frames up to the first one of `kind` matching `predicate`; later ones stay queued."""
        give_up = time.monotonic() + LIVENESS_S
        while time.monotonic() < give_up:
            self._read()
            while self._received:
                frame = self._received.popleft()
                if isinstance(frame, kind) and predicate(frame):
                    return frame
        pytest.fail(f"no matching {kind.__name__} within {LIVENESS_S} s")

    def samples(self, n: int) -> list[wire.SamplesFrame]:
        """SAMPLES frames until they hold at least n samples."""
        got: list[wire.SamplesFrame] = []
        while sum(f.raw.shape[0] for f in got) < n:
            got.append(self.wait_for(wire.SamplesFrame))
        return got

    def _read(self) -> None:
        """Queue the frames in what has arrived (waiting up to the port timeout); heartbeat if due."""
        if self.heartbeating and time.monotonic() >= self._next_heartbeat:
            self.heartbeat()
        data = self.port.read(self.port.in_waiting or 1)
        self._received.extend(wire.parse_frame(body) for body in self.deframer.feed(data))


@pytest.fixture
def emulator(stand: Settings, tmp_path: Path) -> Iterator[Stm32Emulator]:
    with Stm32Emulator(stand, link_path=tmp_path / "stm32", seed=1) as emu:
        yield emu


@pytest.fixture
def host(emulator: Stm32Emulator) -> Iterator[Host]:
    with serial.Serial(str(emulator.link_path), timeout=0.05) as port:
        yield Host(port)


def gaps(frames: list[wire.SamplesFrame]) -> list[int]:
    """Samples missing between consecutive frames."""
    return [b.counter - (a.counter + a.raw.shape[0]) for a, b in itertools.pairwise(frames)]


# Binary protocol -----------------------------------------------------------------------------------


def test_samples_are_contiguous_and_status_describes_the_device(
    stand: Settings, emulator: Stm32Emulator, host: Host
) -> None:
    host.send(wire.encode_hello())
    status = host.wait_for(wire.StatusFrame)
    assert status.version == wire.PROTOCOL_VERSION
    assert status.rate_hz == stand.acquisition.rate_hz
    assert status.n_channels == len(stand.measured_channels)
    assert status.device.startswith("rcs-emulator")
    assert status.valves == 0 and status.safe  # boot: every valve closed until a command applies

    statuses = 0
    frames: list[wire.SamplesFrame] = []
    received = 0
    while received < 2 * status.rate_hz:  # two seconds of device samples
        for frame in host.frames():
            if isinstance(frame, wire.SamplesFrame):
                frames.append(frame)
                received += frame.raw.shape[0]
            elif isinstance(frame, wire.StatusFrame):
                statuses += 1
    assert gaps(frames) == [0] * (len(frames) - 1)
    assert all(f.raw.shape == (20, len(stand.measured_channels)) for f in frames)
    assert all(f.t_us == round(f.counter * 1e6 / status.rate_hz) for f in frames)
    assert max(int(f.raw.max()) for f in frames) <= 4095
    # The rate, by counting: STATUS goes out every 100 ms of the same clock that paces samples.
    assert 10 <= statuses <= 40
    assert host.deframer.stats.crc_errors == host.deframer.stats.bad_frames == 0


def test_set_valves_needs_a_heartbeat_and_a_valid_mask(
    stand: Settings, emulator: Stm32Emulator, host: Host
) -> None:
    gox1 = mask(stand, "GOX1")
    host.send(wire.encode_set_valves(1, gox1))
    ack = host.wait_for(wire.ValveAckFrame)
    assert (ack.cmd_no, ack.valves, ack.result) == (1, 0, wire.AckResult.REFUSED_NO_HEARTBEAT)

    host.heartbeating = True
    host.heartbeat()
    host.send(wire.encode_set_valves(2, 1 << len(stand.valves)))
    ack = host.wait_for(wire.ValveAckFrame)
    assert (ack.cmd_no, ack.valves, ack.result) == (2, 0, wire.AckResult.REFUSED_BAD_MASK)

    host.send(wire.encode_set_valves(3, gox1))
    ack = host.wait_for(wire.ValveAckFrame)
    assert (ack.cmd_no, ack.valves, ack.result) == (3, gox1, wire.AckResult.APPLIED)
    assert emulator.valves == gox1
    status = host.wait_for(wire.StatusFrame)
    assert status.valves == gox1 and not status.safe and status.last_cmd == 3


def test_heartbeat_timeout_closes_every_valve(stand: Settings, emulator: Stm32Emulator, host: Host) -> None:
    host.heartbeat()
    host.send(wire.encode_set_valves(1, mask(stand, "GOX1", "FUEL1")))
    assert host.wait_for(wire.ValveAckFrame).result == wire.AckResult.APPLIED
    # No more heartbeats: within 500 ms the device goes safe on its own.
    status = host.wait_for(wire.StatusFrame, lambda s: s.safe)
    assert status.valves == 0
    assert not status.flags & wire.STATUS_FLAG_HEARTBEAT_OK
    assert emulator.valves == 0


def test_go_safe_closes_every_valve(stand: Settings, emulator: Stm32Emulator, host: Host) -> None:
    host.heartbeating = True
    host.heartbeat()
    host.send(wire.encode_set_valves(1, mask(stand, "GOX1", "PURGE1")))
    assert host.wait_for(wire.ValveAckFrame).result == wire.AckResult.APPLIED
    host.send(wire.encode_go_safe(2))
    ack = host.wait_for(wire.ValveAckFrame)
    assert (ack.cmd_no, ack.valves, ack.result) == (2, 0, wire.AckResult.APPLIED)
    status = host.wait_for(wire.StatusFrame, lambda s: s.last_cmd == 2)
    assert status.safe and status.valves == 0 and status.flags & wire.STATUS_FLAG_HEARTBEAT_OK


def test_p1_rises_while_gox1_is_open(stand: Settings, emulator: Stm32Emulator, host: Host) -> None:
    p1 = [c.name for c in stand.measured_channels].index("P1")
    calibration = stand.measured_channels[p1].calibration
    assert calibration is not None
    host.heartbeating = True
    host.heartbeat()
    before = polynomial.polyval(host.samples(1)[-1].raw[:, p1].mean(), calibration)
    host.send(wire.encode_set_valves(1, mask(stand, "GOX1")))
    host.wait_for(wire.ValveAckFrame)
    after = host.samples(int(emulator.rate_hz))[-1]  # a second of device time later
    p1_after = polynomial.polyval(after.raw[:, p1].mean(), calibration)
    assert before < 3.0
    assert p1_after > 0.5 * stand.emulator.gox_supply_bar


# Faults --------------------------------------------------------------------------------------------


def test_drop_frames_leaves_a_gap_in_the_counter(emulator: Stm32Emulator, host: Host) -> None:
    before = host.samples(100)
    dropped = emulator.frames_dropped
    emulator.drop_frames(5)
    frames = before + host.samples(2000)
    assert sorted(gaps(frames))[-1] == 5 * 20
    assert sum(gaps(frames)) == 5 * 20
    assert emulator.frames_dropped >= dropped + 5


def test_corrupted_frames_fail_their_crc_and_garbage_is_skipped(emulator: Stm32Emulator, host: Host) -> None:
    before = host.samples(100)
    emulator.corrupt_next_frames(3)
    frames = before + host.samples(2000)
    assert host.deframer.stats.crc_errors == 3
    assert sum(gaps(frames)) == 3 * 20

    emulator.inject_garbage(5000)
    discarded = host.deframer.stats.discarded_bytes
    frames = host.samples(2000)
    assert host.deframer.stats.discarded_bytes >= discarded + 4000
    assert gaps(frames[-50:]) == [0] * 49  # resynchronised


def test_stall_loses_the_samples_taken_meanwhile(emulator: Stm32Emulator, host: Host) -> None:
    before = host.samples(100)
    emulator.stall(0.3)
    frames = before + host.samples(4000)
    (gap,) = [g for g in gaps(frames) if g]
    assert gap >= 0.2 * emulator.rate_hz  # the counter kept running through the stall


def test_disconnect_fails_the_host_then_a_new_pty_appears(emulator: Stm32Emulator) -> None:
    link = emulator.link_path
    with serial.Serial(str(link), timeout=0.05) as port:
        host = Host(port)
        last = host.wait_for(wire.SamplesFrame)
        emulator.disconnect(0.5)
        assert not os.path.lexists(link)
        assert emulator.device is None
        with pytest.raises((serial.SerialException, OSError)):
            give_up = time.monotonic() + LIVENESS_S
            while time.monotonic() < give_up:
                host.frames()
    wait_until(link.exists, LIVENESS_S, "the link to come back")
    with serial.Serial(str(link), timeout=0.05) as port:
        first = Host(port).wait_for(wire.SamplesFrame)
    assert first.counter - last.counter >= 0.4 * emulator.rate_hz  # the device kept sampling


# Legacy text protocol ------------------------------------------------------------------------------


def test_text_protocol_lines_and_valve_commands(stand: Settings, tmp_path: Path) -> None:
    with (
        Stm32Emulator(stand, link_path=tmp_path / "stm32", protocol="text", rate_hz=200, seed=2) as emulator,
        serial.Serial(str(emulator.link_path), timeout=0.05) as port,
    ):
        received = bytearray()

        def next_line(accept: Callable[[str], bool]) -> str:
            give_up = time.monotonic() + LIVENESS_S
            while time.monotonic() < give_up:
                if b"\n" not in received:
                    received.extend(port.read(port.in_waiting or 1))
                    continue
                line, _, rest = received.partition(b"\n")
                received[:] = rest
                if accept(line.decode() + "\n"):
                    return line.decode() + "\n"
            pytest.fail(f"no matching line within {LIVENESS_S} s")

        next_line(lambda _: True)  # perhaps the tail of a line sent before the port was opened
        samples: list[list[str]] = []
        info = False
        while len(samples) < 20 or not info:
            line = next_line(lambda _: True)
            if line.startswith("INFO:"):
                info = True
                continue
            fields = [field.split(": ") for field in line.rstrip("\n").split(" | ")]
            assert [name for name, _ in fields] == list(stand.channel_names)
            assert all(math.isfinite(float(value)) for _, value in fields)
            samples.append([value for _, value in fields])
        assert any("e" in value for line in samples for value in line)  # scientific notation too

        port.write(b"hello\nValves:010000000\n")  # non-command lines are ignored, as by the firmware
        assert next_line(lambda s: "ACK" in s) == "ACK: Valves:010000000\n"
        assert emulator.valves == mask(stand, "GOX1")
        port.write(b"Valves:01x\n")
        assert next_line(lambda s: "ACK" in s).startswith("NACK: ")
        assert emulator.valves == mask(stand, "GOX1")


# The plant, the ADC and the derived channels, without I/O -----------------------------------------


def run(plant: Plant, state: PlantState, valves: int, seconds: float, block: int = 20) -> PlantState:
    dt = 1e-4
    for _ in range(round(seconds / (block * dt))):
        state, _values = plant.advance(state, valves, block, dt)
    return state


def test_combustion_needs_ignition_and_stops_with_a_propellant(stand: Settings) -> None:
    plant = Plant(stand.valve_names, stand.emulator)
    at = {name: QUANTITIES.index(name) for name in ("P5", "THRUST", "Tbogaz1", "T4")}
    feed = mask(stand, "GOX1", "FUEL1")
    flow = mask(stand, "GOX1", "FUEL1", "GOX2", "FUEL2")
    state = run(plant, run(plant, plant.initial_state(), feed, 1.0), flow, 0.5)
    assert not state.burning and state.x[at["P5"]] < 5
    state = run(plant, state, flow | mask(stand, "IGNITION"), 0.1)
    state = run(plant, state, flow, 5.0)  # the flame holds without the igniter
    assert state.burning
    assert 10 < state.x[at["P5"]] < 15
    assert 250 < state.x[at["THRUST"]] < 300
    assert state.x[at["Tbogaz1"]] > 1000 and state.x[at["T4"]] > 100
    state = run(plant, state, mask(stand, "GOX1", "FUEL1", "GOX2"), 1.0)
    assert not state.burning and state.x[at["P5"]] < 5 and state.x[at["THRUST"]] < 100


def test_block_size_does_not_change_the_plant(stand: Settings) -> None:
    plant = Plant(stand.valve_names, stand.emulator)
    valves = mask(stand, "GOX1", "GOX2", "PURGE1")
    coarse = run(plant, plant.initial_state(), valves, 0.5, block=20)
    fine = run(plant, plant.initial_state(), valves, 0.5, block=1)
    np.testing.assert_allclose(coarse.x, fine.x, rtol=0.02, atol=0.05)


def test_adc_inverts_monotonic_calibrations_and_clips() -> None:
    channels = [
        Channel(name="A", unit="bar", calibration=(0.0, 0.0244200)),
        Channel(name="B", unit="x", calibration=(100.0, -0.02, -1e-6)),  # decreasing, curved
    ]
    adc = Adc(channels)
    counts = np.array([[0, 4095], [1234, 3000], [4095, 0]], dtype=np.uint16)
    assert np.array_equal(adc.counts(adc.engineering(counts)), counts)
    beyond = np.array([[-10.0, 1000.0], [1000.0, -1000.0]])
    assert adc.counts(beyond).tolist() == [[0, 0], [4095, 4095]]
    with pytest.raises(ValueError, match="not monotonic"):
        Adc([Channel(name="C", unit="x", calibration=(0.0, 1.0, -0.001))])


def test_derived_channels(stand: Settings) -> None:
    names = [c.name for c in stand.measured_channels]
    derived = DerivedChannels(names, stand.derived)
    at_rest = np.zeros((4, len(names)))
    values, impulse = derived.compute(at_rest, 0.01, 0.0)
    assert np.all(values["D1"] == 0) and np.all(values["D2"] == 0)
    assert np.all(np.isnan(values["ISP"])) and np.all(np.isnan(values["VELOCITY"]))

    burning = np.zeros((100, len(names)))
    for name, value in {"P1": 38.5, "P2": 28.1, "P3": 26.5, "P4": 20.9, "T1": 15.0, "THRUST": 280.0}.items():
        burning[:, names.index(name)] = value
    values, impulse = derived.compute(burning, 0.01, 5.0)
    assert 0.03 < values["D1"][0] < 0.07 and 0.04 < values["D2"][0] < 0.09
    assert 200 < values["ISP"][0] < 320
    np.testing.assert_allclose(values["VELOCITY"], values["ISP"] * stand.derived.g0)
    assert impulse == pytest.approx(5.0 + 280.0)


# The command line ----------------------------------------------------------------------------------


def test_cli_serves_the_link_until_sigterm(tmp_path: Path) -> None:
    link = tmp_path / "run" / "stm32"
    with (
        emulator_cli("services.emulators.stm32", link, "--rate", "1000", timeout_s=3 * LIVENESS_S) as cli,
        serial.Serial(str(link), timeout=0.05) as port,
    ):
        port.write(wire.encode_hello())
        assert Host(port).wait_for(wire.StatusFrame).rate_hz == 1000
    assert cli.returncode == 0, cli.stderr
    assert not os.path.lexists(link)
    assert str(link) in cli.stderr
