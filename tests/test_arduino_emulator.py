"""The step-motor Arduino emulator seen from a host: real pty, real pyserial, exact firmware lines.

Expected lines are written out literally from the fixture README (the firmware's source of truth).
Waits are liveness bounds (a test fails if something never happens), never timing assertions.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import serial

from services.common.settings import Settings, load_settings
from services.emulators.arduino import ArduinoEmulator
from services.emulators.arduino.firmware import StepMotorFirmware, print_float, to_float, to_int
from tests.conftest import wait_until
from tests.processes import emulator_cli

LIVENESS_S = 5.0
FAST = 20.0  # speed_factor where the test is not about the firmware's timing

BANNER = [
    "=== STEP MOTOR SISTEMI HAZIR ===",
    "Komut: motor_id:açı (örn: 1:90)",
    "Motor1 başlangıç pozisyonu: -1727.50",
    "Motor2 başlangıç pozisyonu: -1727.50",
]


@pytest.fixture(scope="module")
def stand() -> Settings:
    return load_settings()


class Host:
    """The host end: writes commands, reads `\\r\\n`-terminated UTF-8 lines."""

    def __init__(self, port: serial.Serial) -> None:
        self.port = port
        self._buffer = b""
        self._lines: deque[str] = deque()

    def send(self, text: str) -> None:
        self.port.write(text.encode())

    def line(self) -> str:
        give_up = time.monotonic() + LIVENESS_S
        while not self._lines:
            if time.monotonic() > give_up:
                pytest.fail(f"no line within {LIVENESS_S} s (partial: {self._buffer!r})")
            self._buffer += self.port.read(self.port.in_waiting or 1)
            *complete, self._buffer = self._buffer.split(b"\r\n")
            self._lines.extend(raw.decode() for raw in complete)
        return self._lines.popleft()

    def lines(self, n: int) -> list[str]:
        return [self.line() for _ in range(n)]

    def until(self, last: str | Callable[[str], bool]) -> list[str]:
        """Lines up to and including the first one that is `last` (or satisfies it)."""
        done = last if callable(last) else last.__eq__
        got = [self.line()]
        while not done(got[-1]):
            got.append(self.line())
        return got

    def command(self, text: str, last: str | Callable[[str], bool]) -> list[str]:
        """Send one command and return its output up to `last`."""
        self.send(text)
        return self.until(last)


def is_end(line: str) -> bool:
    """The last line of a command's output: a refusal or the new position."""
    return (
        line.startswith("ERR: ")
        or line
        in {
            "Motor hareket etmeyecek (0°)",
            "Motor hareketi başarısız!",
        }
        or " yeni pozisyon: " in line
    )


@contextlib.contextmanager
def booted(stand: Settings, link: Path, speed_factor: float) -> Iterator[tuple[ArduinoEmulator, Host]]:
    """A running emulator and a host that has opened it and read the boot banner."""
    with (
        ArduinoEmulator(stand, link_path=link, speed_factor=speed_factor) as emulator,
        serial.Serial(str(emulator.link_path), 115200, timeout=0.05) as port,
    ):
        host = Host(port)
        assert host.lines(4) == BANNER
        yield emulator, host


@pytest.fixture
def emulator(stand: Settings, tmp_path: Path) -> Iterator[ArduinoEmulator]:
    with ArduinoEmulator(stand, link_path=tmp_path / "arduino", speed_factor=FAST) as emu:
        yield emu


@pytest.fixture
def host(emulator: ArduinoEmulator) -> Iterator[Host]:
    with serial.Serial(str(emulator.link_path), 115200, timeout=0.05) as port:
        host = Host(port)
        assert host.lines(4) == BANNER
        yield host


def spaced(host: Host, commands: list[str], speed_factor: float = FAST) -> list[list[str]]:
    """Each command's output, sending the next one well after the merge window."""
    outputs = []
    for command in commands:
        outputs.append(host.command(command, is_end))
        time.sleep(2 * 0.5 / speed_factor)  # the merge window is wall time: input timing, not a wait
    return outputs


# Boot ----------------------------------------------------------------------------------------------


def test_every_open_resets_the_board_and_prints_the_banner(emulator: ArduinoEmulator) -> None:
    for _ in range(3):  # closed and reopened at once: still a reset each time (DTR edge)
        with serial.Serial(str(emulator.link_path), 115200, timeout=0.05) as port:
            host = Host(port)
            assert host.lines(4) == BANNER  # positions back to the boot value after the last move
            assert host.command("1:90\n", is_end)[-1] == "Motor1 yeni pozisyon: -1637.50"
    assert emulator.resets == 4  # power-up and three opens


def test_reset_prints_the_banner_again_without_reopening(emulator: ArduinoEmulator, host: Host) -> None:
    assert host.command("2:180\n", is_end)[-1] == "Motor2 yeni pozisyon: -1547.50"
    emulator.reset()
    assert host.lines(4) == BANNER
    assert emulator.positions == (-1727.5, -1727.5)


def test_disconnect_fails_the_host_then_a_new_pty_appears(emulator: ArduinoEmulator) -> None:
    link = emulator.link_path
    with serial.Serial(str(link), 115200, timeout=0.05) as port:
        assert Host(port).lines(4) == BANNER
        emulator.disconnect(0.3)
        assert not os.path.lexists(link)
        with pytest.raises((serial.SerialException, OSError)):
            give_up = time.monotonic() + LIVENESS_S
            while time.monotonic() < give_up:
                port.read(1)
    wait_until(link.exists, LIVENESS_S, "the link to come back")
    with serial.Serial(str(link), 115200, timeout=0.05) as port:
        assert Host(port).lines(4) == BANNER


# Commands ------------------------------------------------------------------------------------------


def test_a_move_prints_every_line_in_order(host: Host) -> None:
    assert host.command("1:90\n", is_end) == [
        "Alınan komut: 1:90",
        "Motor ID: 1, Delta Açı: 90.00",
        "Motor1 mevcut pozisyon: -1727.50",
        "Motor 1 için 50 adım döndürülecek (90.00°)",
        "Yön sinyali: HIGH (deltaAngle: 90.00)",
        "Adım: 50/50",
        "Motor 1 hareketi tamamlandı",
        "Motor1 yeni pozisyon: -1637.50",
    ]
    time.sleep(2 * 0.5 / FAST)  # past the firmware's merge window: input timing, not a wait for a state
    assert host.command("1:-45.5\r", is_end) == [  # \r ends a command too
        "Alınan komut: 1:-45.5",
        "Motor ID: 1, Delta Açı: -45.50",
        "Motor1 mevcut pozisyon: -1637.50",
        "Motor 1 için 25 adım döndürülecek (-45.50°)",
        "Yön sinyali: LOW (deltaAngle: -45.50)",
        "Motor 1 hareketi tamamlandı",
        "Motor1 yeni pozisyon: -1683.00",
    ]
    time.sleep(2 * 0.5 / FAST)  # past the firmware's merge window: input timing, not a wait for a state
    output = host.command("2:200\n", is_end)
    assert [line for line in output if line.startswith("Adım")] == ["Adım: 50/112", "Adım: 100/112"]


def test_the_target_is_clamped_to_the_limit(stand: Settings, tmp_path: Path) -> None:
    speed = 100.0  # two full strokes
    with booted(stand, tmp_path / "arduino", speed) as (emulator, host):
        end_to_end, beyond, back = spaced(host, ["1:5000\n", "1:10\n", "1:-10000\n"], speed)
        assert emulator.positions == (-1727.5, -1727.5)
    assert end_to_end[1:5] == [
        "Motor ID: 1, Delta Açı: 5000.00",
        "Motor1 mevcut pozisyon: -1727.50",
        "Motor 1 için 1946 adım döndürülecek (3455.00°)",
        "Yön sinyali: HIGH (deltaAngle: 3455.00)",
    ]
    assert end_to_end[-1] == "Motor1 yeni pozisyon: 1727.50"
    assert beyond[-3:] == [  # already at the limit: nothing left to move
        "Motor1 mevcut pozisyon: 1727.50",
        "Hareket edilecek açı çok küçük, motor dönmeyecek",
        "Motor hareketi başarısız!",
    ]
    assert back[-1] == "Motor1 yeni pozisyon: -1727.50"


def test_refusals(host: Host) -> None:
    no_colon, bad_id, zero, too_small = spaced(host, ["190\n", "3:90\n", "2:0\n", "2:1.7\n"])
    assert no_colon == ["Alınan komut: 190", "ERR: Format motor_id:açı"]
    assert bad_id == ["Alınan komut: 3:90", "Motor ID: 3, Delta Açı: 90.00", "ERR: Motor ID 1 veya 2 olmalı"]
    assert zero == [
        "Alınan komut: 2:0",
        "Motor ID: 2, Delta Açı: 0.00",
        "Motor2 mevcut pozisyon: -1727.50",
        "Motor hareket etmeyecek (0°)",
    ]
    assert too_small == [
        "Alınan komut: 2:1.7",
        "Motor ID: 2, Delta Açı: 1.70",
        "Motor2 mevcut pozisyon: -1727.50",
        "Hareket edilecek açı çok küçük, motor dönmeyecek",
        "Motor hareketi başarısız!",
    ]


def test_a_command_within_500_ms_of_the_previous_one_is_merged_into_the_next(
    stand: Settings, tmp_path: Path
) -> None:
    """The real timing (speed_factor 1): `2:90` sent 100 ms after `1:90` is never run on its own."""
    with booted(stand, tmp_path / "arduino", 1.0) as (_, host):
        host.send("1:90\n")
        time.sleep(0.1)  # within the window, by wall time: the input this test is about
        host.send("2:90\n")
        assert host.until(is_end)[-1] == "Motor1 yeni pozisyon: -1637.50"
        time.sleep(0.7)  # past the window: this terminator completes the pending command
        assert host.command("1:10\n", lambda line: "adım" in line) == [
            "Alınan komut: 2:901:10",
            "Motor ID: 2, Delta Açı: 901.00",
            "Motor2 mevcut pozisyon: -1727.50",
            "Motor 2 için 507 adım döndürülecek (901.00°)",
        ]


def test_idle_status_every_30_s(stand: Settings, tmp_path: Path) -> None:
    with booted(stand, tmp_path / "arduino", 100.0) as (_, host):  # a status pair every 0.3 s
        assert host.until("Sistem aktif - yeni komut bekleniyor...") == [
            "Sistem aktif - yeni komut bekleniyor..."
        ]
        assert host.line() == "Motor1: -1727.50°, Motor2: -1727.50°"
        assert host.command("2:100\n", is_end)[-1] == "Motor2 yeni pozisyon: -1627.50"
        assert host.until("Sistem aktif - yeni komut bekleniyor...")[-1].startswith("Sistem aktif")
        assert host.line() == "Motor1: -1727.50°, Motor2: -1627.50°"


# The firmware without a pty: exact timing on a given clock ------------------------------------------


def test_firmware_timing_on_a_virtual_clock(stand: Settings) -> None:
    firmware = StepMotorFirmware(stand.motors)
    assert firmware.reset(0.0, external=True) == []  # the bootloader runs first
    assert firmware.receive(b"1:90\n", 0.2) == []  # eaten by the bootloader
    assert firmware.tick(0.5) == BANNER
    assert firmware.receive(b"1:10\n", 0.6) == []  # during delay(1000): buffered
    started = firmware.tick(1.5)
    assert started[0] == "Alınan komut: 1:10" and started[-1].startswith("Yön sinyali")
    move_s = 5 * stand.motors.deg_per_step / stand.motors.speed_deg_s
    assert firmware.tick(1.5 + move_s - 0.001) == []
    assert firmware.tick(1.5 + move_s + 1e-9)[-1] == "Motor1 yeni pozisyon: -1717.50"
    assert firmware.receive(b"2:10\n", 1.5 + move_s + 0.499) == []  # pending, not run
    assert firmware.receive(b"1:20\n", 3.0)[:2] == [
        "Alınan komut: 2:101:20",
        "Motor ID: 2, Delta Açı: 101.00",
    ]


def test_idle_status_keeps_its_period_at_any_boot_time(stand: Settings) -> None:
    """`boot + period - boot < period` in floating point for many boot times: the idle loop must
    still print its status and move on (it once spun forever on the same wait instead)."""
    boot_times = [1234.56789 + k * 0.0137 for k in range(200)]
    printed: list[int] = []

    def run() -> None:
        for boot in boot_times:
            firmware = StepMotorFirmware(stand.motors, speed_factor=100.0)
            firmware.reset(boot, external=False)
            lines = [line for k in range(1, 8) for line in firmware.tick(boot + k * 0.3)]
            printed.append(lines.count("Sistem aktif - yeni komut bekleniyor..."))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(10.0)
    assert not worker.is_alive(), "the firmware's idle loop is spinning"
    assert len(printed) == len(boot_times) and min(printed) >= 5


def test_firmware_loses_what_overflows_its_receive_buffer_during_a_move(stand: Settings) -> None:
    firmware = StepMotorFirmware(stand.motors)
    firmware.reset(0.0, external=False)
    firmware.tick(1.0)
    firmware.receive(b"1:1000\n" + b"x" * 100, 1.0)
    assert firmware.rx_dropped == 100 - 64


def test_arduino_number_parsing_and_printing() -> None:
    assert [print_float(v) for v in (-1727.5, 3455.0, 0.0, -0.001, 12.3456, 0.996, 1e10)] == [
        "-1727.50",
        "3455.00",
        "0.00",
        "-0.00",
        "12.35",
        "1.00",
        "ovf",
    ]
    assert [to_float(t) for t in ("90", " -45.5", "1e2", ".5x", "abc", "901:10", "")] == [
        90.0,
        -45.5,
        100.0,
        0.5,
        0.0,
        901.0,
        0.0,
    ]
    assert [to_int(t) for t in ("1", " 2", "-3", "x1", "", "12abc")] == [1, 2, -3, 0, 0, 12]


# The command line ----------------------------------------------------------------------------------


def test_cli_serves_the_link_until_sigterm(tmp_path: Path) -> None:
    link = tmp_path / "run" / "arduino"
    cli_args = ("--speed-factor", "10")
    with (
        emulator_cli("services.emulators.arduino", link, *cli_args, timeout_s=3 * LIVENESS_S) as cli,
        serial.Serial(str(link), 115200, timeout=0.05) as port,
    ):
        assert Host(port).lines(4) == BANNER
    assert cli.returncode == 0, cli.stderr
    assert not os.path.lexists(link)
    assert str(link) in cli.stderr
