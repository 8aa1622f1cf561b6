"""The C firmware core (firmware/) on the host: its own unit tests under ASan/UBSan, and byte-for-byte
agreement with services/common/stm32_wire.py and the Python STM32 emulator's device logic.

The comparison loads the core as a shared library (ctypes, on a fake port whose clock the test sets)
and feeds it and the Python side the same inputs at the same instants. Event times are chosen off
the millisecond grid (heartbeats at .25 ms, the rest at .5/.75 ms) so that no comparison against the
500 ms watchdog or the 100 ms STATUS period ties, where float seconds and integer µs could round
differently; the clock only moves forward (the core takes a backward step for a wrap of its
32-bit timer).
"""

from __future__ import annotations

import ctypes
import random
import subprocess
from collections.abc import Iterator

import numpy as np
import pytest
from cobs import cobs

from services.common import stm32_wire as wire
from services.common.settings import Settings
from services.emulators.stm32.firmware import DEVICE_ID, BinaryFirmware
from tests.firmware import host_build

_u8p = ctypes.POINTER(ctypes.c_uint8)
_u16p = ctypes.POINTER(ctypes.c_uint16)


def load_core() -> ctypes.CDLL:
    """librcsfw.so with its signatures declared."""
    lib = ctypes.CDLL(str(host_build() / "librcsfw.so"))
    lib.rcs_crc16.restype = ctypes.c_uint16
    lib.rcs_crc16.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.rcs_frame_encode.restype = ctypes.c_size_t
    lib.rcs_frame_encode.argtypes = [ctypes.c_uint8, ctypes.c_char_p, ctypes.c_size_t, _u8p]
    lib.rcs_cobs_decode.restype = ctypes.c_size_t
    lib.rcs_cobs_decode.argtypes = [ctypes.c_char_p, ctypes.c_size_t, _u8p, ctypes.c_size_t]
    lib.rcs_test_device_new.restype = ctypes.c_void_p
    lib.rcs_test_device_new.argtypes = [
        ctypes.c_uint32,
        ctypes.c_uint8,
        ctypes.c_uint8,
        ctypes.c_uint16,
        ctypes.c_char_p,
        ctypes.c_uint32,
        ctypes.c_size_t,
    ]
    lib.rcs_test_device_free.argtypes = [ctypes.c_void_p]
    lib.rcs_test_device_set_time.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.rcs_test_device_receive.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.rcs_test_device_tick.argtypes = [ctypes.c_void_p]
    lib.rcs_test_device_samples.argtypes = [ctypes.c_void_p, _u16p, ctypes.c_size_t]
    lib.rcs_test_device_output.restype = ctypes.c_size_t
    lib.rcs_test_device_output.argtypes = [ctypes.c_void_p, _u8p, ctypes.c_size_t]
    lib.rcs_test_device_valves.restype = ctypes.c_uint16
    lib.rcs_test_device_valves.argtypes = [ctypes.c_void_p]
    return lib


@pytest.fixture(scope="module")
def core() -> ctypes.CDLL:
    return load_core()


class CoreDevice:
    """The C core on its fake port: set the time, feed it, collect what it wrote."""

    def __init__(self, lib: ctypes.CDLL, settings: Settings, now_us: int) -> None:
        self._lib = lib
        self._handle = lib.rcs_test_device_new(
            round(settings.acquisition.rate_hz),
            len(settings.measured_channels),
            len(settings.valves),
            20,
            DEVICE_ID.encode(),
            now_us,
            256 * 1024,
        )
        assert self._handle

    def close(self) -> None:
        self._lib.rcs_test_device_free(self._handle)

    def at(self, now_us: int) -> CoreDevice:
        self._lib.rcs_test_device_set_time(self._handle, now_us)
        return self

    def receive(self, data: bytes) -> None:
        self._lib.rcs_test_device_receive(self._handle, data, len(data))

    def tick(self) -> None:
        self._lib.rcs_test_device_tick(self._handle)

    def samples(self, raw: np.ndarray) -> None:
        block = np.ascontiguousarray(raw, dtype=np.uint16)
        self._lib.rcs_test_device_samples(self._handle, block.ctypes.data_as(_u16p), len(block))

    def output(self) -> bytes:
        buffer = (ctypes.c_uint8 * (1 << 20))()
        n = self._lib.rcs_test_device_output(self._handle, buffer, len(buffer))
        return bytes(buffer[:n])

    @property
    def valves(self) -> int:
        return int(self._lib.rcs_test_device_valves(self._handle))


@pytest.fixture
def device(core: ctypes.CDLL, settings: Settings) -> Iterator[CoreDevice]:
    instance = CoreDevice(core, settings, now_us=0)
    yield instance
    instance.close()


def test_unit_tests_pass_under_sanitizers() -> None:
    result = subprocess.run(
        [str(host_build() / "test_core")], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all tests passed" in result.stdout


def test_frames_and_cobs_agree_with_the_host_wire_code(core: ctypes.CDLL) -> None:
    rng = random.Random(7)
    out = (ctypes.c_uint8 * 8192)()
    lengths = [*range(250, 260), *range(505, 512), *(rng.randrange(0, 4094) for _ in range(400))]
    for length in lengths:
        frame_type = rng.choice(list(wire.FrameType))
        payload = bytes(rng.choice((0, rng.randrange(256))) for _ in range(length))
        n = core.rcs_frame_encode(frame_type, payload, len(payload), out)
        encoded = bytes(out[:n])
        assert encoded == wire.encode_frame(frame_type, payload), (frame_type, length)
        body = bytes([frame_type]) + payload
        assert core.rcs_crc16(body, len(body)) == wire.crc16(body)
        decoded_n = core.rcs_cobs_decode(encoded[:-1], n - 1, out, len(out))
        assert bytes(out[:decoded_n]) == cobs.decode(encoded[:-1])


def test_samples_frames_agree_byte_for_byte(device: CoreDevice, settings: Settings) -> None:
    rng = np.random.default_rng(3)
    n_channels = len(settings.measured_channels)
    period_us = round(1e6 / settings.acquisition.rate_hz)
    device.output()  # the boot STATUS
    counter = 0
    for _ in range(200):
        n = int(rng.integers(1, 21))
        # 12-bit counts, and now and then any u16 (zero bytes exercise COBS)
        high = 1 << 16 if rng.random() < 0.3 else 1 << 12
        raw = rng.integers(0, high, size=(n, n_channels), dtype=np.uint16)
        t_first = 1_000 + counter * period_us
        device.at(t_first + (n - 1) * period_us).samples(raw)  # the callback follows the last sample
        assert device.output() == wire.encode_samples(counter, t_first, raw)
        counter += n


def test_device_logic_agrees_with_the_python_emulator(device: CoreDevice, settings: Settings) -> None:
    """The same host traffic (heartbeats that come and go, valve commands, go-safe, hello, bad frames
    and garbage) at the same instants: every byte the two devices send is the same."""
    rng = random.Random(11)
    python = BinaryFirmware(settings, settings.acquisition.rate_hz)
    assert device.output() == b"".join(python.boot(0.0))
    n_valves = len(settings.valves)
    heartbeating = True
    cmd_no = 0
    seen: set[str] = set()  # what the run went through, so it cannot pass without covering it
    for ms in range(1, 4000):
        if rng.random() < 0.002:
            heartbeating = not heartbeating  # gaps long enough to trip the watchdog, sometimes
        if heartbeating and ms % 100 == 0:
            now_us = ms * 1000 + 250
            frame = wire.encode_heartbeat(ms)
            device.at(now_us).receive(frame)
            assert python.receive(frame, now_us / 1e6) == []
        now_us = ms * 1000 + 500
        open_before = python.valves != 0
        device.at(now_us).tick()
        assert device.output() == b"".join(python.tick(now_us / 1e6)), f"tick at {ms} ms"
        assert device.valves == python.valves
        if open_before and python.valves == 0:
            seen.add("watchdog")
        if rng.random() < 0.05:
            cmd_no += 1
            host_frame = rng.choice(
                (
                    wire.encode_set_valves(cmd_no, rng.randrange(1 << n_valves)),
                    wire.encode_set_valves(cmd_no, rng.randrange(1 << 16)),  # often a bad mask
                    wire.encode_go_safe(cmd_no),
                    wire.encode_hello(),
                    wire.encode_frame(wire.FrameType.SET_VALVES, b"\x01\x02\x03"),  # wrong size
                    wire.encode_frame(wire.FrameType.VALVE_ACK, b"\x01\x00\x00\x00\x00"),  # wrong way
                    bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 60))) + b"\x00",
                )
            )
            cut = rng.randrange(len(host_frame) + 1)  # any chunking
            now_us = ms * 1000 + 750
            device.at(now_us).receive(host_frame[:cut])
            device.receive(host_frame[cut:])
            replies = python.receive(host_frame, now_us / 1e6)
            assert device.output() == b"".join(replies), f"at {ms} ms after {host_frame.hex(' ')}"
            assert device.valves == python.valves
            for reply in replies:
                answer = wire.parse_frame(wire.Deframer().feed(b"\x00" + reply)[0])
                if isinstance(answer, wire.ValveAckFrame):
                    seen.add(answer.result.name)
                else:
                    seen.add(type(answer).__name__)
    assert seen >= {"watchdog", "APPLIED", "REFUSED_NO_HEARTBEAT", "REFUSED_BAD_MASK", "StatusFrame"}, seen
