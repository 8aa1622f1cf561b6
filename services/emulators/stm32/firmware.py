"""What the STM32 firmware says and does, without any I/O: bytes in, messages out.

Two firmwares share one interface (`Firmware`): the binary protocol v1 of services.common.stm32_wire
(heartbeat watchdog, acknowledged valve commands, periodic STATUS) and the legacy text protocol (one
`NAME: value | ...` line per sample, `Valves:` commands, no heartbeat). The emulator feeds them host
bytes, the clock and blocks of measured samples, and writes each message they return as a unit; a
message is one COBS frame or one text line. `corrupt` damages a message the way a bad link would.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from cobs import cobs

from services.common import stm32_wire as wire
from services.common.settings import Settings
from services.common.stand_physics import Adc, DerivedChannels, FloatArray
from services.common.valve_pattern import parse_pattern

DEVICE_ID = "rcs-emulator stm32f767zi"
FRAME_PERIOD_S = 0.002  # a binary SAMPLES frame carries ~2 ms of samples
STATUS_PERIOD_S = 0.1
LEGACY_TEXT_RATE_HZ = 50.0  # lines per second of the existing text firmware (230400 baud allows ~80)
INFO_PERIOD_S = 1.0
INFO_LINE = b"INFO: rcs-emulator legacy-text\n"
MAX_COMMAND_BYTES = 256  # host input longer than this without a newline is garbage: discarded
VALVES_COMMAND = b"Valves:"

# Number formats of the text protocol, chosen at random per value so host parsers meet them all.
TEXT_FORMATS = ("{:.1f}", "{:.2f}", "{:.3f}", "{:.4e}", "{:g}")


class Firmware(Protocol):
    """The protocol side of the device. `now` is a monotonic clock in seconds."""

    rate_hz: float
    block_size: int  # samples per data message (binary) or per data block (text: lines)

    @property
    def valves(self) -> int: ...

    def boot(self, now: float) -> list[bytes]:
        """Messages sent when the device starts."""
        ...

    def receive(self, data: bytes, now: float) -> list[bytes]:
        """Handle bytes from the host; return the replies."""
        ...

    def tick(self, now: float) -> list[bytes]:
        """Run timers (watchdog, periodic messages); return what they send."""
        ...

    def data(self, first_sample: int, measured: FloatArray) -> list[bytes]:
        """Messages carrying a block of samples (engineering values, settings' measured order)."""
        ...

    def corrupt(self, message: bytes, rng: np.random.Generator) -> bytes:
        """The message as a noisy link would deliver it, damaged enough to be rejected."""
        ...


class BinaryFirmware:
    """Protocol v1: SAMPLES of raw counts, STATUS, acknowledged SET_VALVES, heartbeat watchdog.

    The device holds every valve closed (STATUS_FLAG_SAFE) from boot until a SET_VALVES is applied,
    after GO_SAFE, and whenever no HEARTBEAT arrived for stm32_wire.HEARTBEAT_TIMEOUT_S. SET_VALVES is
    refused while heartbeats are missing, and for bits beyond the valve count.
    """

    def __init__(self, settings: Settings, rate_hz: float) -> None:
        self.rate_hz = rate_hz
        self.block_size = max(1, round(rate_hz * FRAME_PERIOD_S))
        self._n_valves = len(settings.valves)
        self._n_channels = len(settings.measured_channels)
        self._adc = Adc(settings.measured_channels)
        self._deframer = wire.Deframer()
        self._valves = 0
        self._safe = True
        self._last_cmd = 0
        self._last_heartbeat = float("-inf")
        self._next_status = float("inf")
        self._now = float("-inf")

    @property
    def valves(self) -> int:
        return self._valves

    def boot(self, now: float) -> list[bytes]:
        self._now = now
        self._next_status = now + STATUS_PERIOD_S
        return [self._status()]

    def receive(self, data: bytes, now: float) -> list[bytes]:
        self._now = now
        replies: list[bytes] = []
        for body in self._deframer.feed(data):
            try:
                frame = wire.parse_frame(body)
            except wire.FrameError:
                continue  # a real device ignores what it cannot parse; the host times out
            reply = self._handle(frame, now)
            if reply is not None:
                replies.append(reply)
        return replies

    def tick(self, now: float) -> list[bytes]:
        self._now = now
        if not self._heartbeat_ok(now) and not self._safe:
            self._go_safe()
        if now < self._next_status:
            return []
        self._next_status = max(self._next_status + STATUS_PERIOD_S, now)
        return [self._status()]

    def data(self, first_sample: int, measured: FloatArray) -> list[bytes]:
        t_us = round(first_sample * 1_000_000 / self.rate_hz)
        return [wire.encode_samples(first_sample, t_us, self._adc.counts(measured))]

    def corrupt(self, message: bytes, rng: np.random.Generator) -> bytes:
        """Flip one bit of the frame's content, so that it still frames but fails its CRC."""
        body = bytearray(cobs.decode(message[:-1]))
        body[int(rng.integers(len(body)))] ^= 1 << int(rng.integers(8))
        encoded: bytes = cobs.encode(bytes(body))
        return encoded + wire.DELIMITER

    def _handle(self, frame: wire.Frame, now: float) -> bytes | None:
        if isinstance(frame, wire.HeartbeatFrame):
            self._last_heartbeat = now
            return None
        if isinstance(frame, wire.HelloFrame):
            return self._status()
        if isinstance(frame, wire.GoSafeFrame):
            self._last_cmd = frame.cmd_no
            self._go_safe()
            return self._ack(frame.cmd_no, wire.AckResult.APPLIED)
        if isinstance(frame, wire.SetValvesFrame):
            self._last_cmd = frame.cmd_no
            if frame.valves >> self._n_valves:
                return self._ack(frame.cmd_no, wire.AckResult.REFUSED_BAD_MASK)
            if not self._heartbeat_ok(now):
                return self._ack(frame.cmd_no, wire.AckResult.REFUSED_NO_HEARTBEAT)
            self._valves = frame.valves
            self._safe = False
            return self._ack(frame.cmd_no, wire.AckResult.APPLIED)
        return None  # device -> host frame types: not for the device

    def _heartbeat_ok(self, now: float) -> bool:
        return now - self._last_heartbeat < wire.HEARTBEAT_TIMEOUT_S

    def _go_safe(self) -> None:
        self._valves = 0
        self._safe = True

    def _ack(self, cmd_no: int, result: wire.AckResult) -> bytes:
        return wire.encode_valve_ack(wire.ValveAckFrame(cmd_no, self._valves, result))

    def _status(self) -> bytes:
        flags = (wire.STATUS_FLAG_SAFE if self._safe else 0) | (
            wire.STATUS_FLAG_HEARTBEAT_OK if self._heartbeat_ok(self._now) else 0
        )
        status = wire.StatusFrame(
            version=wire.PROTOCOL_VERSION,
            rate_hz=round(self.rate_hz),
            n_channels=self._n_channels,
            valves=self._valves,
            flags=flags,
            last_cmd=self._last_cmd,
            device=DEVICE_ID,
        )
        return wire.encode_status(status)


class TextFirmware:
    """The legacy text firmware: a line of all channels in engineering units per sample.

    Values are ADC counts through the calibration, as the firmware reads them (quantised, clipped
    to each channel's range); derived channels are computed from them as the existing firmware does,
    an undefined ISP or VELOCITY (flow below min_flow) printing as 0. Valve commands are `Valves:`
    and one 0/1 digit per valve, answered `ACK: Valves:<digits>` or `NACK: <reason>`; like the
    existing firmware it ignores any other input line (the host's auto-detection sends a binary
    HELLO and a newline). An INFO line goes out every second.
    """

    def __init__(self, settings: Settings, rate_hz: float, rng: np.random.Generator) -> None:
        self.rate_hz = rate_hz
        self.block_size = 1
        self._rng = rng
        self._n_valves = len(settings.valves)
        measured = [ch.name for ch in settings.measured_channels]
        self._adc = Adc(settings.measured_channels)
        self._derived = DerivedChannels(measured, settings.derived)
        self._names = settings.channel_names
        self._measured_column = {name: j for j, name in enumerate(measured)}
        self._impulse = 0.0
        self._pending = b""
        self._valves = 0
        self._next_info = float("inf")

    @property
    def valves(self) -> int:
        return self._valves

    def boot(self, now: float) -> list[bytes]:
        self._next_info = now + INFO_PERIOD_S
        return [INFO_LINE]

    def receive(self, data: bytes, now: float) -> list[bytes]:
        *lines, self._pending = (self._pending + data).split(b"\n")
        if len(self._pending) > MAX_COMMAND_BYTES:
            self._pending = b""
        return [self._command(line.strip()) for line in lines if line.strip().startswith(VALVES_COMMAND)]

    def tick(self, now: float) -> list[bytes]:
        if now < self._next_info:
            return []
        self._next_info = max(self._next_info + INFO_PERIOD_S, now)
        return [INFO_LINE]

    def data(self, first_sample: int, measured: FloatArray) -> list[bytes]:
        measured = self._adc.engineering(self._adc.counts(measured))  # what the firmware's ADC reads
        derived, self._impulse = self._derived.compute(measured, 1.0 / self.rate_hz, self._impulse)
        columns = [
            measured[:, self._measured_column[name]] if name in self._measured_column else derived[name]
            for name in self._names
        ]
        values = np.nan_to_num(np.column_stack(columns), nan=0.0)
        formats = self._rng.integers(len(TEXT_FORMATS), size=values.shape)
        return [self._line(row, fmt) for row, fmt in zip(values.tolist(), formats.tolist(), strict=True)]

    def corrupt(self, message: bytes, rng: np.random.Generator) -> bytes:
        """Set the high bit of one character: the line no longer parses (nor decodes as UTF-8)."""
        damaged = bytearray(message)
        damaged[int(rng.integers(len(message) - 1))] |= 0x80
        return bytes(damaged)

    def _line(self, row: list[float], formats: list[int]) -> bytes:
        pairs = zip(self._names, row, formats, strict=True)
        fields = " | ".join(f"{name}: {TEXT_FORMATS[f].format(v)}" for name, v, f in pairs)
        return fields.encode() + b"\n"

    def _command(self, line: bytes) -> bytes:
        digits = line[len(VALVES_COMMAND) :]
        try:
            self._valves = parse_pattern(digits.decode("latin-1"), self._n_valves)
        except ValueError:
            return f"NACK: expected Valves: and {self._n_valves} digits 0/1\n".encode()
        return b"ACK: Valves:" + digits + b"\n"
