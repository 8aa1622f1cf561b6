"""The existing Arduino Uno step-motor firmware, reproduced without I/O: bytes in, lines out.

The firmware is documented by its behaviour (shared fixtures README): two step motors, commands
`<motor_id>:<delta_degrees>` ending in `\\n` or `\\r`, Turkish replies, blocking moves. The sketch
is written here as a generator that reads like the Arduino code it stands for: it yields whenever it
would block (`delay`, a step pulse, or `loop()` idling until a byte arrives) and is resumed on a
clock passed in by the caller, so the timing is exact and testable without threads.

Where the README is silent, these choices are made (and the host is built not to depend on them):

- Merging: a terminator completes the pending command only if more than `motors.min_interval_ms`
  have passed since the previous command *finished* (move and replies done); a terminator arriving
  sooner is dropped and later bytes are appended to the same pending command. So `1:90\\n` followed
  100 ms later by `2:90\\n` leaves `2:90` pending, and the next command then arrives garbled
  (`2:901:10` reads as motor 2, +901°). The host must space commands from the end of the previous one.
- Arduino parsing: the id is `String.toInt()` of the text before the first `:`, the angle
  `String.toFloat()` of the rest (a leading number, else 0); `inf` and `nan` are read as 0.
- Order of the replies: `Alınan komut`, [`ERR: Format`], `Motor ID ... Delta Açı`, [`ERR: Motor ID`],
  `mevcut pozisyon`, [`hareket etmeyecek (0°)`], [`çok küçük` then `başarısız!`], steps, direction,
  progress, `tamamlandı`, `yeni pozisyon`.
- Steps = trunc(|clamped delta| / deg_per_step); the new position is the clamped target (the
  firmware tracks commanded angles, not whole steps).
- The status pair is printed after STATUS_PERIOD_S without a command or status line.
- A reset through DTR (a host opening the port) runs the bootloader first, which eats any input;
  other resets (brown-out, watchdog) start the sketch at once, as Optiboot does.

Arithmetic is AVR `float` (32-bit) and numbers print like `Serial.print(float)`: two decimals.
"""

from __future__ import annotations

import math
import re
import struct
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass

from services.common.settings import MotorSettings

# What the sketch prints, one Serial.println each (the emulator adds "\r\n").
BANNER = "=== STEP MOTOR SISTEMI HAZIR ==="
USAGE = "Komut: motor_id:açı (örn: 1:90)"
START_POSITION = "Motor{id} başlangıç pozisyonu: {deg}"
RECEIVED = "Alınan komut: {cmd}"
PARSED = "Motor ID: {id}, Delta Açı: {deg}"
CURRENT_POSITION = "Motor{id} mevcut pozisyon: {deg}"
STEPS = "Motor {id} için {n} adım döndürülecek ({deg}°)"
DIRECTION = "Yön sinyali: {level} (deltaAngle: {deg})"
PROGRESS = "Adım: {i}/{n}"
DONE = "Motor {id} hareketi tamamlandı"
NEW_POSITION = "Motor{id} yeni pozisyon: {deg}"
ERR_FORMAT = "ERR: Format motor_id:açı"
ERR_MOTOR_ID = "ERR: Motor ID 1 veya 2 olmalı"
NO_MOVE = "Motor hareket etmeyecek (0°)"
TOO_SMALL = "Hareket edilecek açı çok küçük, motor dönmeyecek"
FAILED = "Motor hareketi başarısız!"
STATUS = "Sistem aktif - yeni komut bekleniyor..."
STATUS_POSITIONS = "Motor1: {m1}°, Motor2: {m2}°"

# The sketch and the board. Durations are seconds at speed_factor 1.
MOTOR_IDS = (1, 2)
BOOTLOADER_S = 0.5  # Optiboot listening for an upload after an external (DTR) reset
BOOT_PAUSE_S = 1.0  # delay(1000) at the end of setup()
STATUS_PERIOD_S = 30.0
PROGRESS_EVERY = 50  # steps between `Adım` lines
RX_BUFFER_BYTES = 64  # HardwareSerial's receive ring: what overflows it while the sketch blocks is lost
MAX_COMMAND_CHARS = 256  # String growth stops about here on the Uno's 2 KB of RAM; later chars are lost
TERMINATORS = b"\r\n"

_INT = re.compile(r"[ \t\v\f]*([+-]?\d+)")
_FLOAT = re.compile(r"[ \t\v\f]*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")
_LONG_MIN, _LONG_MAX = -(2**31), 2**31 - 1


def f32(value: float) -> float:
    """`value` rounded to an AVR float (IEEE single precision); out of range becomes +-inf."""
    try:
        return float(struct.unpack("f", struct.pack("f", value))[0])
    except OverflowError:
        return math.copysign(math.inf, value)


def print_float(value: float, digits: int = 2) -> str:
    """What Arduino's `Serial.print(float)` (Print::printFloat) prints, in single precision."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf"
    if abs(value) > 4294967040.0:
        return "ovf"
    number, sign = f32(value), ""
    if number < 0:
        number, sign = -number, "-"
    rounding = 0.5
    for _ in range(digits):
        rounding = f32(rounding / 10)
    number = f32(number + rounding)
    whole = int(number)
    remainder = f32(number - whole)
    decimals = ""
    for _ in range(digits):
        remainder = f32(remainder * 10)
        digit = int(remainder)
        decimals += str(digit)
        remainder = f32(remainder - digit)
    return f"{sign}{whole}" + (f".{decimals}" if digits else "")


def to_int(text: str) -> int:
    """Arduino `String.toInt()` (atol): the leading integer, 0 if there is none."""
    match = _INT.match(text)
    return min(max(int(match.group(1)), _LONG_MIN), _LONG_MAX) if match else 0


def to_float(text: str) -> float:
    """Arduino `String.toFloat()` (atof): the leading number as a float, 0 if there is none."""
    match = _FLOAT.match(text)
    return f32(float(match.group(1))) if match else 0.0


@dataclass(frozen=True, slots=True)
class _Wait:
    """The sketch blocks until `until`; while `loop()` idles (`on_input`), a received byte resumes it."""

    until: float
    on_input: bool


_Sketch = Generator[_Wait, None, None]


class StepMotorFirmware:
    """The step-motor Uno: call `reset` to power it up, then `receive` and `tick` with a monotonic
    clock (seconds). Each returns the lines printed meanwhile, without line endings.

    `speed_factor` > 1 runs every duration that many times faster (steps, the merge window, the boot
    pause, the bootloader, the status period); 1 is the real firmware's timing.
    """

    def __init__(self, motors: MotorSettings, speed_factor: float = 1.0) -> None:
        if not (math.isfinite(speed_factor) and speed_factor > 0):
            raise ValueError(f"speed_factor must be a positive number, not {speed_factor}")
        self._motors = motors
        self._scale = 1.0 / speed_factor
        self._step_s = motors.deg_per_step / motors.speed_deg_s * self._scale
        self._window_s = motors.min_interval_ms / 1000 * self._scale
        self._rx: deque[int] = deque()
        self._out: list[str] = []
        self._now = 0.0  # the sketch's clock: the time it has run up to
        self._sketch: _Sketch | None = None
        self._wait: _Wait | None = None
        self._positions = [f32(motors.boot_position_deg)] * len(MOTOR_IDS)
        self.resets = 0
        self.rx_dropped = 0  # received bytes lost to a full receive buffer

    @property
    def positions(self) -> tuple[float, ...]:
        """The position the firmware believes each motor is at, motor 1 first."""
        return tuple(self._positions)

    def reset(self, now: float, *, external: bool) -> list[str]:
        """Reset the board: RAM is lost and the sketch starts again. `external` is a reset through
        the reset pin (DTR when a host opens the port), which runs the bootloader first."""
        self.resets += 1
        self._rx.clear()
        self._now = now
        self._wait = None
        self._sketch = self._run(bootloader=external)
        self._advance(now)
        return self._take()

    def receive(self, data: bytes, now: float) -> list[str]:
        """Bytes from the host, arriving at `now`."""
        for byte in data:
            self._advance(now)  # an idle loop() empties the buffer as the bytes come in
            if len(self._rx) < RX_BUFFER_BYTES:
                self._rx.append(byte)
            else:
                self.rx_dropped += 1
        self._advance(now)
        return self._take()

    def tick(self, now: float) -> list[str]:
        """Let the sketch run up to `now`."""
        self._advance(now)
        return self._take()

    def next_event(self) -> float | None:
        """When the sketch next does something without input (None before the first reset)."""
        return None if self._wait is None else self._wait.until

    # The sketch ----------------------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        if self._sketch is None:
            return
        while True:
            wait = self._wait
            if wait is not None:
                if wait.until <= now:
                    self._now = wait.until
                elif wait.on_input and self._rx:
                    self._now = max(self._now, now)
                else:
                    return
            self._wait = next(self._sketch)

    def _take(self) -> list[str]:
        out, self._out = self._out, []
        return out

    def _print(self, line: str) -> None:
        self._out.append(line)

    def _delay(self, seconds: float) -> _Wait:
        return _Wait(self._now + seconds * self._scale, on_input=False)

    def _run(self, *, bootloader: bool) -> _Sketch:
        if bootloader:
            yield self._delay(BOOTLOADER_S)
            self._rx.clear()  # the bootloader consumed it
        # setup()
        self._positions = [f32(self._motors.boot_position_deg)] * len(MOTOR_IDS)
        self._print(BANNER)
        self._print(USAGE)
        for motor, position in zip(MOTOR_IDS, self._positions, strict=True):
            self._print(START_POSITION.format(id=motor, deg=print_float(position)))
        yield self._delay(BOOT_PAUSE_S)
        # loop()
        status_period = STATUS_PERIOD_S * self._scale
        command = bytearray()
        last_command = -math.inf
        last_status = self._now
        while True:
            while self._rx:
                byte = self._rx.popleft()
                if byte not in TERMINATORS:
                    if len(command) < MAX_COMMAND_CHARS:
                        command.append(byte)
                elif command and self._now - last_command > self._window_s:
                    yield from self._command(command.decode("utf-8", "surrogateescape"))
                    command.clear()
                    last_command = last_status = self._now
            # compare with the very time the idle wait below was for: `now - last >= period` can be
            # false at that time in floating point, which would spin on the same wait forever
            if self._now >= last_status + status_period:
                self._print(STATUS)
                m1, m2 = (print_float(p) for p in self._positions)
                self._print(STATUS_POSITIONS.format(m1=m1, m2=m2))
                last_status = self._now
            yield _Wait(last_status + status_period, on_input=True)

    def _command(self, command: str) -> _Sketch:
        self._print(RECEIVED.format(cmd=command))
        motor_text, colon, angle_text = command.partition(":")
        if not colon:
            self._print(ERR_FORMAT)
            return
        motor, delta = to_int(motor_text), to_float(angle_text)
        self._print(PARSED.format(id=motor, deg=print_float(delta)))
        if motor not in MOTOR_IDS:
            self._print(ERR_MOTOR_ID)
            return
        moved = yield from self._move(motor, delta)
        if not moved:
            self._print(FAILED)

    def _move(self, motor: int, delta: float) -> Generator[_Wait, None, bool]:
        index = MOTOR_IDS.index(motor)
        current = self._positions[index]
        self._print(CURRENT_POSITION.format(id=motor, deg=print_float(current)))
        if delta == 0:
            self._print(NO_MOVE)
            return True
        limit = f32(self._motors.limit_deg)
        target = min(max(f32(current + delta), -limit), limit)
        clamped = f32(target - current)
        steps = int(f32(abs(clamped) / f32(self._motors.deg_per_step)))
        if steps == 0:
            self._print(TOO_SMALL)
            return False
        self._print(STEPS.format(id=motor, n=steps, deg=print_float(clamped)))
        self._print(DIRECTION.format(level="HIGH" if clamped > 0 else "LOW", deg=print_float(clamped)))
        start = self._now
        for step in range(PROGRESS_EVERY, steps + 1, PROGRESS_EVERY):
            yield _Wait(start + step * self._step_s, on_input=False)
            self._print(PROGRESS.format(i=step, n=steps))
        yield _Wait(start + steps * self._step_s, on_input=False)
        self._positions[index] = target
        self._print(DONE.format(id=motor))
        self._print(NEW_POSITION.format(id=motor, deg=print_float(target)))
        return True
