"""What the step-motor Arduino prints, read line by line (its firmware: shared fixtures README).

`LineSplitter` turns the serial byte stream into text lines; `parse` classifies one line. Everything
the host knows about the firmware's fixed texts is here. Lines that may follow a partly printed line
after a reset (the banner and the start positions) are searched for anywhere in the line; the rest
must match whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BOOT_PAUSE_S = 1.0  # the firmware's delay(1000) after its banner, before it reads commands
MAX_LINE_BYTES = 1024  # a longer run without a newline is not the firmware: it is dropped

_NUMBER = r"(-?\d+(?:\.\d+)?)"  # Serial.print(float): two decimals
_BANNER = "=== STEP MOTOR SISTEMI HAZIR ==="
_START = re.compile(rf"Motor(\d+) başlangıç pozisyonu: {_NUMBER}$")
_RECEIVED = re.compile(r"Alınan komut: (.*)")
_CURRENT = re.compile(rf"Motor(\d+) mevcut pozisyon: {_NUMBER}")
_STEPS = re.compile(rf"Motor (\d+) için (\d+) adım döndürülecek \({_NUMBER}°\)")
_DONE = re.compile(r"Motor (\d+) hareketi tamamlandı")
_NEW = re.compile(rf"Motor(\d+) yeni pozisyon: {_NUMBER}")
_STATUS_POSITIONS = re.compile(rf"Motor1: {_NUMBER}°, Motor2: {_NUMBER}°")
_INFO = re.compile(
    rf"Komut: motor_id:açı \(örn: 1:90\)|Motor ID: -?\d+, Delta Açı: .*"
    rf"|Yön sinyali: (?:HIGH|LOW) \(deltaAngle: {_NUMBER}\)|Adım: \d+/\d+"
    r"|Sistem aktif - yeni komut bekleniyor\.\.\."
)
# Refusals, and whether the firmware is done with the command once it has printed them.
REFUSALS = {
    "ERR: Format motor_id:açı": True,
    "ERR: Motor ID 1 veya 2 olmalı": True,
    "Motor hareket etmeyecek (0°)": True,
    "Hareket edilecek açı çok küçük, motor dönmeyecek": False,  # "Motor hareketi başarısız!" follows
    "Motor hareketi başarısız!": True,
}


@dataclass(frozen=True)
class Banner:
    """The first line after a reset: the firmware has lost its positions."""


@dataclass(frozen=True)
class StartPosition:
    motor_id: int
    position_deg: float


@dataclass(frozen=True)
class Received:
    """The firmware took a command (`command` is what it read, which may be merged input)."""

    command: str


@dataclass(frozen=True)
class CurrentPosition:
    motor_id: int
    position_deg: float


@dataclass(frozen=True)
class Steps:
    """A move starts: `steps` steps, `delta_deg` after clamping to the limits."""

    motor_id: int
    steps: int
    delta_deg: float


@dataclass(frozen=True)
class Completed:
    motor_id: int


@dataclass(frozen=True)
class NewPosition:
    """The last line of a move."""

    motor_id: int
    position_deg: float


@dataclass(frozen=True)
class Refusal:
    text: str
    final: bool  # the firmware is done with the command


@dataclass(frozen=True)
class StatusPositions:
    """The idle status line (every 30 s without commands): motor 1 and motor 2."""

    positions_deg: tuple[float, float]


@dataclass(frozen=True)
class Info:
    """A known line that changes nothing: usage, the parsed command, direction, progress, status."""

    text: str


@dataclass(frozen=True)
class Unknown:
    text: str


Reply = (
    Banner
    | StartPosition
    | Received
    | CurrentPosition
    | Steps
    | Completed
    | NewPosition
    | Refusal
    | StatusPositions
    | Info
    | Unknown
)


def parse(line: str) -> Reply:
    """Classify one line (without its line ending)."""
    if _BANNER in line:
        return Banner()
    if (start := _START.search(line)) is not None:
        return StartPosition(int(start[1]), float(start[2]))
    if line in REFUSALS:
        return Refusal(line, REFUSALS[line])
    if (received := _RECEIVED.fullmatch(line)) is not None:
        return Received(received[1])
    if (current := _CURRENT.fullmatch(line)) is not None:
        return CurrentPosition(int(current[1]), float(current[2]))
    if (steps := _STEPS.fullmatch(line)) is not None:
        return Steps(int(steps[1]), int(steps[2]), float(steps[3]))
    if (done := _DONE.fullmatch(line)) is not None:
        return Completed(int(done[1]))
    if (new := _NEW.fullmatch(line)) is not None:
        return NewPosition(int(new[1]), float(new[2]))
    if (status := _STATUS_POSITIONS.fullmatch(line)) is not None:
        return StatusPositions((float(status[1]), float(status[2])))
    if _INFO.fullmatch(line):
        return Info(line)
    return Unknown(line)


class LineSplitter:
    """Bytes in, lines out: split on `\\n` (an `\\r` before it is dropped), UTF-8 with replacement.

    A run of more than MAX_LINE_BYTES without a newline is dropped; `overlong` counts them.
    """

    def __init__(self) -> None:
        self._partial = b""
        self.overlong = 0

    def feed(self, data: bytes) -> list[str]:
        *complete, self._partial = (self._partial + data).split(b"\n")
        if len(self._partial) > MAX_LINE_BYTES:
            self._partial = b""
            self.overlong += 1
        return [raw.removesuffix(b"\r").decode("utf-8", "replace") for raw in complete]
