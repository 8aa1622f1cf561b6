"""MotorController against the Arduino emulator over a real pty: handshake, moves, refusals, spacing,
resets, timeouts, unplug/replug; and the pure reply parser and port finder.

Waits are liveness bounds (a test fails if something never happens), never timing assertions.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from serial.tools.list_ports_common import ListPortInfo

from services.actuation import motor_replies as replies
from services.actuation.motor_moves import MotorsState, MoveResult
from services.actuation.motors import MotorController
from services.common.serial_ports import find_port
from services.common.settings import Settings, load_settings
from services.emulators.arduino import ArduinoEmulator
from tests.conftest import wait_until

LIVENESS_S = 10.0
BOOT = -1727.5
FAST = 16.0  # emulator speed_factor where the test is not about the firmware's timing


@pytest.fixture(scope="module")
def stand() -> Settings:
    return load_settings()


def result(future: Future[MoveResult]) -> MoveResult:
    return future.result(timeout=LIVENESS_S)


@dataclass
class Recorder:
    states: list[MotorsState] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_state(self, state: MotorsState) -> None:
        with self.lock:
            self.states.append(state)

    def on_event(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.events.append(event)

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e["kind"] == kind]


@dataclass
class Rig:
    emulator: ArduinoEmulator
    controller: MotorController
    seen: Recorder

    def positions(self) -> tuple[float | None, ...]:
        return tuple(m.position_deg for m in self.controller.state.motors)

    def connected(self) -> None:
        wait_until(lambda: self.controller.state.connected, LIVENESS_S, "the controller to connect")


def settings_for(stand: Settings, link: Path, **motors: Any) -> Settings:
    arduino = stand.arduino.model_copy(update={"port": str(link), "reconnect_s": 0.2})
    return stand.model_copy(update={"arduino": arduino, "motors": stand.motors.model_copy(update=motors)})


@contextlib.contextmanager
def rig(
    settings: Settings, speed_factor: float, controller_settings: Settings | None = None
) -> Iterator[Rig]:
    """A running emulator at settings.arduino.port and a connected controller; both stopped after."""
    assert settings.arduino.port is not None
    seen = Recorder()
    with ArduinoEmulator(
        settings, link_path=Path(settings.arduino.port), speed_factor=speed_factor
    ) as emulator:
        controller = MotorController(
            controller_settings or settings, on_state=seen.on_state, on_event=seen.on_event
        )
        controller.start()
        try:
            rig = Rig(emulator, controller, seen)
            rig.connected()
            yield rig
        finally:
            controller.stop()


@pytest.fixture
def fast(stand: Settings, tmp_path: Path) -> Iterator[Rig]:
    with rig(settings_for(stand, tmp_path / "arduino"), speed_factor=FAST) as r:
        yield r


# Connection ----------------------------------------------------------------------------------------


def test_boot_handshake_reads_the_positions_from_the_banner(fast: Rig, tmp_path: Path) -> None:
    state = fast.controller.state
    assert state.port == str(tmp_path / "arduino")
    assert [(m.id, m.name, m.position_deg, m.moving, m.target_deg) for m in state.motors] == [
        (1, "MOTOR1", BOOT, False, None),
        (2, "MOTOR2", BOOT, False, None),
    ]
    first = fast.seen.states[0]
    assert first.port is not None and not first.connected  # open, board booting
    assert fast.emulator.resets == 2  # power-up, then the controller's open
    assert fast.seen.events == []


def test_moves_are_refused_before_start_and_after_stop(stand: Settings, tmp_path: Path) -> None:
    seen = Recorder()
    controller = MotorController(
        settings_for(stand, tmp_path / "nothing"), on_state=seen.on_state, on_event=seen.on_event
    )
    before = result(controller.move(1, relative_deg=10))
    controller.start()
    controller.stop()
    after = result(controller.move(1, relative_deg=10))
    assert not before.ok and not after.ok
    assert "not connected" in before.response
    assert [e["kind"] for e in seen.events] == ["motor_error", "motor_error"]


# Moves ---------------------------------------------------------------------------------------------


def test_relative_and_absolute_moves_track_the_position(fast: Rig) -> None:
    controller = fast.controller
    up = result(controller.move(1, relative_deg=90))
    assert up == MoveResult(1, True, -1637.5, "Motor1 yeni pozisyon: -1637.50")
    assert result(controller.move(1, absolute_deg=0)) == MoveResult(
        1, True, 0.0, "Motor1 yeni pozisyon: 0.00"
    )
    assert result(controller.move(2, absolute_deg=-1000.25)).position_deg == -1000.25
    assert result(controller.move(1, relative_deg=-45.5)).position_deg == -45.5
    assert fast.positions() == (-45.5, -1000.25) == fast.emulator.positions
    same = result(controller.move(2, absolute_deg=-1000.25))
    assert same.ok and same.position_deg == -1000.25 and "already" in same.response
    moving = [s for s in fast.seen.states if s.motors[0].moving]
    assert moving and moving[0].motors[0].target_deg == -1637.5
    assert not any(m.moving for m in controller.state.motors)
    assert fast.seen.events == []


def test_out_of_range_unknown_ids_and_firmware_refusals(fast: Rig) -> None:
    controller = fast.controller
    refused = {
        "absolute beyond the limit": controller.move(1, absolute_deg=1800),
        "relative beyond the limit": controller.move(1, relative_deg=-10),
        "relative beyond the far limit": controller.move(2, relative_deg=4000),
        "unknown id": controller.move(3, relative_deg=10),
        "nan": controller.move(1, relative_deg=math.nan),
        "infinite": controller.move(2, absolute_deg=math.inf),
        "less than a step": controller.move(1, relative_deg=1.0),
    }
    results = {why: result(f) for why, f in refused.items()}
    assert not any(r.ok for r in results.values())
    assert "outside" in results["absolute beyond the limit"].response
    assert results["relative beyond the limit"].position_deg == BOOT
    assert "outside" in results["relative beyond the limit"].response
    assert "outside" in results["relative beyond the far limit"].response
    assert "unknown motor id 3" in results["unknown id"].response
    assert "finite" in results["nan"].response and "finite" in results["infinite"].response
    assert results["less than a step"] == MoveResult(
        1, False, BOOT, "Hareket edilecek açı çok küçük, motor dönmeyecek"
    )
    errors = fast.seen.kinds("motor_error")
    assert len(errors) == len(refused)
    assert {e["response"] for e in errors} == {r.response for r in results.values()}
    assert fast.emulator.positions == (BOOT, BOOT)
    with pytest.raises(ValueError):
        controller.move(1)
    with pytest.raises(ValueError):
        controller.move(1, relative_deg=1, absolute_deg=1)
    # the full stroke is allowed
    assert result(controller.move(2, relative_deg=3455)).position_deg == 1727.5


def test_quick_moves_are_serialized_and_spaced(stand: Settings, tmp_path: Path) -> None:
    """At the real firmware timing, commands sent back to back would be merged (see the emulator
    tests); queued through the controller every one of them runs, in order."""
    with rig(settings_for(stand, tmp_path / "arduino"), speed_factor=1.0) as r:
        futures = [
            r.controller.move(1, relative_deg=20),
            r.controller.move(2, relative_deg=20),
            r.controller.move(1, absolute_deg=-1700),
        ]
        assert [result(f).position_deg for f in futures] == [-1707.5, -1707.5, -1700.0]
        assert r.emulator.positions == (-1700.0, -1707.5)
        assert r.seen.events == []


# Faults --------------------------------------------------------------------------------------------


def test_a_reset_while_idle_is_recovered(fast: Rig) -> None:
    assert result(fast.controller.move(1, relative_deg=90)).ok
    fast.emulator.reset()
    wait_until(lambda: bool(fast.seen.kinds("motor_reset")), LIVENESS_S, "a motor_reset event")
    (event,) = fast.seen.kinds("motor_reset")
    assert event["previous_positions_deg"] == {"MOTOR1": -1637.5, "MOTOR2": BOOT}
    assert event["interrupted_motor_id"] is None
    fast.connected()
    assert fast.positions() == (BOOT, BOOT)
    assert result(fast.controller.move(1, relative_deg=90)).position_deg == -1637.5


def test_a_reset_during_a_move_fails_it(fast: Rig) -> None:
    future = fast.controller.move(1, relative_deg=3455)  # the full stroke: ~1.2 s here
    queued = fast.controller.move(2, relative_deg=10)
    wait_until(lambda: fast.controller.state.motors[0].moving, LIVENESS_S, "motor 1 to move")
    fast.emulator.reset()
    failed = result(future)
    assert not failed.ok and "reset by itself" in failed.response
    assert not result(queued).ok  # a queued move is not carried over a reset
    (event,) = fast.seen.kinds("motor_reset")
    assert event["interrupted_motor_id"] == 1
    assert len(fast.seen.kinds("motor_error")) == 2
    fast.connected()
    assert fast.positions() == (BOOT, BOOT)
    assert result(fast.controller.move(1, relative_deg=10)).position_deg == -1717.5


def test_unplug_and_replug(fast: Rig) -> None:
    assert result(fast.controller.move(2, relative_deg=50)).ok
    fast.emulator.disconnect(0.5)
    wait_until(lambda: not fast.controller.state.connected, LIVENESS_S, "the controller to see the unplug")
    assert fast.positions() == (None, None)
    refused = result(fast.controller.move(1, relative_deg=10))
    assert not refused.ok and "not connected" in refused.response
    fast.connected()
    assert fast.positions() == (BOOT, BOOT)  # replugging reset the board
    assert result(fast.controller.move(2, relative_deg=50)).position_deg == -1677.5


def test_a_move_not_completed_in_time_fails_and_the_late_completion_is_tracked(
    stand: Settings, tmp_path: Path
) -> None:
    """A controller that expects a far faster motor than the board's gives up before the move ends."""
    link = tmp_path / "arduino"
    impatient = settings_for(stand, link, speed_deg_s=1e6, timeout_margin_s=0.1)
    with rig(settings_for(stand, link), 1.0, controller_settings=impatient) as r:
        late = result(r.controller.move(1, relative_deg=90))  # ~0.5 s at the real speed
        assert not late.ok and "no completion" in late.response
        wait_until(lambda: r.positions()[0] == -1637.5, LIVENESS_S, "the late completion")
        assert any(s.motors[0].position_deg is None for s in r.seen.states)  # unknown meanwhile
        assert not result(r.controller.move(1, relative_deg=-90)).ok  # too slow for it again
        wait_until(lambda: r.positions()[0] == BOOT, LIVENESS_S, "the second late completion")
        assert len(r.seen.kinds("motor_error")) == 2
        assert r.emulator.positions == (BOOT, BOOT)


# Pure parts ----------------------------------------------------------------------------------------


def test_reply_parser() -> None:
    parse = replies.parse
    assert parse("=== STEP MOTOR SISTEMI HAZIR ===") == replies.Banner()
    assert parse("Adım: 5=== STEP MOTOR SISTEMI HAZIR ===") == replies.Banner()  # reset mid-line
    assert parse("Motor2 başlangıç pozisyonu: -1727.50") == replies.StartPosition(2, -1727.5)
    assert parse("Alınan komut: 2:901:10") == replies.Received("2:901:10")
    assert parse("Motor1 mevcut pozisyon: 12.25") == replies.CurrentPosition(1, 12.25)
    assert parse("Motor 1 için 50 adım döndürülecek (-90.00°)") == replies.Steps(1, 50, -90.0)
    assert parse("Motor 2 hareketi tamamlandı") == replies.Completed(2)
    assert parse("Motor2 yeni pozisyon: 0.00") == replies.NewPosition(2, 0.0)
    assert parse("Hareket edilecek açı çok küçük, motor dönmeyecek") == replies.Refusal(
        "Hareket edilecek açı çok küçük, motor dönmeyecek", final=False
    )
    assert parse("ERR: Motor ID 1 veya 2 olmalı") == replies.Refusal(
        "ERR: Motor ID 1 veya 2 olmalı", final=True
    )
    assert parse("Motor1: -1727.50°, Motor2: 3.00°") == replies.StatusPositions((-1727.5, 3.0))
    for info in (
        "Komut: motor_id:açı (örn: 1:90)",
        "Motor ID: 1, Delta Açı: 90.00",
        "Yön sinyali: LOW (deltaAngle: -90.00)",
        "Adım: 100/112",
        "Sistem aktif - yeni komut bekleniyor...",
    ):
        assert parse(info) == replies.Info(info)
    assert parse("Motor1 yeni pozisyon: lots") == replies.Unknown("Motor1 yeni pozisyon: lots")


def test_line_splitter() -> None:
    splitter = replies.LineSplitter()
    assert splitter.feed(b"Motor1 ye") == []
    assert splitter.feed("ni pozisyon: 1.00\r\nAdım: 50/50\n".encode() + b"\xff\r\n") == [
        "Motor1 yeni pozisyon: 1.00",
        "Adım: 50/50",
        "\ufffd",
    ]
    assert splitter.feed(b"x" * (replies.MAX_LINE_BYTES + 1)) == []
    assert splitter.overlong == 1
    assert splitter.feed(b"ok\n") == ["ok"]


def test_find_port_by_vid_pid() -> None:
    def port(device: str, vid: int | None, pid: int | None) -> ListPortInfo:
        info = ListPortInfo(device, skip_link_detection=True)
        info.vid, info.pid = vid, pid
        return info

    ports = [
        port("/dev/ttyS0", None, None),
        port("/dev/ttyACM0", 0x0483, 0x5740),
        port("/dev/ttyUSB0", 0x1A86, 0x7523),
    ]
    assert find_port(None, ["2341:0043", "1a86:7523"], ports=ports) == "/dev/ttyUSB0"
    assert find_port(None, ["2341:0043"], ports=ports) is None
    assert find_port("/dev/arduino", ["2341:0043"], ports=ports) == "/dev/arduino"
