"""STM32 binary protocol v1: COBS frames delimited by 0x00, each ending in a CRC-16/CCITT-FALSE.

Used by the acquisition link (host side) and the STM32 emulator (device side), so both speak from one
definition. docs/stm32-protocol.md is the specification firmware implements; keep them identical.

A decoded frame is `type (u8) | payload | crc16 (u16 LE)`, the CRC taken over type and payload with
`binascii.crc_hqx(data, 0xFFFF)`. All integers are little-endian.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt
from cobs import cobs

PROTOCOL_VERSION = 1
DELIMITER = b"\x00"
MAX_FRAME_BYTES = 4096  # a decoded frame longer than this is garbage, not data
HEARTBEAT_TIMEOUT_S = 0.5  # the device closes every valve after this long without a heartbeat


class FrameType(IntEnum):
    # device -> host
    SAMPLES = 0x01
    STATUS = 0x02
    VALVE_ACK = 0x03
    # host -> device
    SET_VALVES = 0x81
    HEARTBEAT = 0x82
    GO_SAFE = 0x83
    HELLO = 0x84


class AckResult(IntEnum):
    APPLIED = 0
    REFUSED_NO_HEARTBEAT = 1  # valves stay closed until heartbeats resume
    REFUSED_BAD_MASK = 2  # bits set beyond the device's valve count


STATUS_FLAG_SAFE = 0x01  # the device is holding every valve closed (go-safe or heartbeat timeout)
STATUS_FLAG_HEARTBEAT_OK = 0x02  # a heartbeat arrived within the timeout

_SAMPLES_HEADER = struct.Struct("<IQBH")  # counter, t_us, n_channels, n_samples
_STATUS = struct.Struct("<BIBHBH")  # version, rate_hz, n_channels, valves, flags, last_cmd
_VALVE_ACK = struct.Struct("<HHB")  # cmd_no, valves, result
_SET_VALVES = struct.Struct("<HH")  # cmd_no, valves
_U16 = struct.Struct("<H")
_CRC = struct.Struct("<H")


class FrameError(ValueError):
    """A frame that decoded but does not follow the protocol (wrong length, unknown type...)."""


def crc16(data: bytes) -> int:
    return binascii.crc_hqx(data, 0xFFFF)


def encode_frame(frame_type: FrameType, payload: bytes = b"") -> bytes:
    """Return the bytes to put on the wire: COBS(type | payload | crc) followed by 0x00."""
    body = bytes([frame_type]) + payload
    encoded: bytes = cobs.encode(body + _CRC.pack(crc16(body)))
    return encoded + DELIMITER


@dataclass(frozen=True, slots=True)
class SamplesFrame:
    counter: int  # device sample counter of the first sample (u32, wraps)
    t_us: int  # device microseconds of the first sample
    raw: npt.NDArray[np.uint16]  # (n_samples, n_channels) raw ADC counts


@dataclass(frozen=True, slots=True)
class StatusFrame:
    version: int
    rate_hz: int
    n_channels: int
    valves: int
    flags: int
    last_cmd: int
    device: str

    @property
    def safe(self) -> bool:
        return bool(self.flags & STATUS_FLAG_SAFE)


@dataclass(frozen=True, slots=True)
class ValveAckFrame:
    cmd_no: int
    valves: int
    result: AckResult


@dataclass(frozen=True, slots=True)
class SetValvesFrame:
    cmd_no: int
    valves: int


@dataclass(frozen=True, slots=True)
class HeartbeatFrame:
    counter: int


@dataclass(frozen=True, slots=True)
class GoSafeFrame:
    cmd_no: int


@dataclass(frozen=True, slots=True)
class HelloFrame:
    pass


Frame = (
    SamplesFrame | StatusFrame | ValveAckFrame | SetValvesFrame | HeartbeatFrame | GoSafeFrame | HelloFrame
)


def encode_samples(counter: int, t_us: int, raw: npt.NDArray[np.uint16]) -> bytes:
    n_samples, n_channels = raw.shape
    header = _SAMPLES_HEADER.pack(counter & 0xFFFFFFFF, t_us, n_channels, n_samples)
    return encode_frame(FrameType.SAMPLES, header + raw.astype("<u2", copy=False).tobytes())


def encode_status(status: StatusFrame) -> bytes:
    fixed = _STATUS.pack(
        status.version, status.rate_hz, status.n_channels, status.valves, status.flags, status.last_cmd
    )
    return encode_frame(FrameType.STATUS, fixed + status.device.encode())


def encode_valve_ack(ack: ValveAckFrame) -> bytes:
    return encode_frame(FrameType.VALVE_ACK, _VALVE_ACK.pack(ack.cmd_no, ack.valves, ack.result))


def encode_set_valves(cmd_no: int, valves: int) -> bytes:
    return encode_frame(FrameType.SET_VALVES, _SET_VALVES.pack(cmd_no & 0xFFFF, valves))


def encode_heartbeat(counter: int) -> bytes:
    return encode_frame(FrameType.HEARTBEAT, _U16.pack(counter & 0xFFFF))


def encode_go_safe(cmd_no: int) -> bytes:
    return encode_frame(FrameType.GO_SAFE, _U16.pack(cmd_no & 0xFFFF))


def encode_hello() -> bytes:
    return encode_frame(FrameType.HELLO)


def _exact(payload: bytes, layout: struct.Struct, name: str) -> tuple[int, ...]:
    if len(payload) != layout.size:
        raise FrameError(f"{name} payload is {len(payload)} bytes, expected {layout.size}")
    return layout.unpack(payload)


def parse_frame(body: bytes) -> Frame:
    """Parse a COBS-decoded, CRC-checked frame body (type and payload, CRC removed)."""
    if not body:
        raise FrameError("empty frame")
    kind, payload = body[0], body[1:]
    if kind == FrameType.SAMPLES:
        if len(payload) < _SAMPLES_HEADER.size:
            raise FrameError("SAMPLES frame shorter than its header")
        counter, t_us, n_channels, n_samples = _SAMPLES_HEADER.unpack_from(payload)
        expected = _SAMPLES_HEADER.size + 2 * n_channels * n_samples
        if len(payload) != expected or n_channels == 0 or n_samples == 0:
            raise FrameError(
                f"SAMPLES frame of {n_samples}x{n_channels} has {len(payload)} payload bytes, "
                f"expected {expected}"
            )
        raw = np.frombuffer(payload, dtype="<u2", offset=_SAMPLES_HEADER.size).reshape(n_samples, n_channels)
        return SamplesFrame(counter, t_us, raw)
    if kind == FrameType.STATUS:
        if len(payload) < _STATUS.size:
            raise FrameError("STATUS frame shorter than its fixed part")
        version, rate_hz, n_channels, valves, flags, last_cmd = _STATUS.unpack_from(payload)
        device = payload[_STATUS.size :].decode("utf-8", errors="replace")
        return StatusFrame(version, rate_hz, n_channels, valves, flags, last_cmd, device)
    if kind == FrameType.VALVE_ACK:
        cmd_no, valves, result = _exact(payload, _VALVE_ACK, "VALVE_ACK")
        try:
            return ValveAckFrame(cmd_no, valves, AckResult(result))
        except ValueError as exc:
            raise FrameError(f"VALVE_ACK with unknown result {result}") from exc
    if kind == FrameType.SET_VALVES:
        return SetValvesFrame(*_exact(payload, _SET_VALVES, "SET_VALVES"))
    if kind == FrameType.HEARTBEAT:
        return HeartbeatFrame(*_exact(payload, _U16, "HEARTBEAT"))
    if kind == FrameType.GO_SAFE:
        return GoSafeFrame(*_exact(payload, _U16, "GO_SAFE"))
    if kind == FrameType.HELLO:
        if payload:
            raise FrameError("HELLO carries no payload")
        return HelloFrame()
    raise FrameError(f"unknown frame type 0x{kind:02x}")


@dataclass
class DeframerStats:
    frames: int = 0
    crc_errors: int = 0
    bad_frames: int = 0  # COBS errors, oversize or undersize frames
    discarded_bytes: int = 0


class Deframer:
    """Split a byte stream into CRC-checked frame bodies, whatever the chunk boundaries.

    Corrupt input costs the frames it touches and nothing else: the next 0x00 resynchronises.
    The bytes before the first delimiter are usually the tail of a frame sent before the port was
    opened: they are dropped without counting as an error unless they happen to be a whole frame.
    """

    def __init__(self) -> None:
        self._pending = bytearray()
        self._synced = False
        self.stats = DeframerStats()

    def feed(self, chunk: bytes) -> list[bytes]:
        self._pending += chunk
        *complete, rest = self._pending.split(DELIMITER)
        if len(rest) > MAX_FRAME_BYTES * 2:  # no delimiter for far too long: drop, resync later
            self.stats.discarded_bytes += len(rest)
            self.stats.bad_frames += 1
            rest = bytearray()
        self._pending = rest
        bodies: list[bytes] = []
        for encoded in complete:
            if not encoded:
                continue  # back-to-back delimiters are legal padding
            body = self._check(bytes(encoded), count_errors=self._synced)
            self._synced = True
            if body is not None:
                bodies.append(body)
        return bodies

    def _check(self, encoded: bytes, *, count_errors: bool) -> bytes | None:
        body: bytes | None = None
        crc_ok = False
        try:
            decoded = cobs.decode(encoded)
        except cobs.DecodeError:
            decoded = b""
        if 3 <= len(decoded) <= MAX_FRAME_BYTES:
            body, (crc,) = decoded[:-2], _CRC.unpack(decoded[-2:])
            crc_ok = crc16(body) == crc
        if crc_ok:
            self.stats.frames += 1
            return body
        self.stats.discarded_bytes += len(encoded)
        if count_errors:
            if body is None:
                self.stats.bad_frames += 1
            else:
                self.stats.crc_errors += 1
        return None
