"""Host side of STM32 binary protocol v1: byte chunks in, sample blocks and device messages out.

The wire format lives in `services.common.stm32_wire`; this module adds what the host needs on top:
unwrapping the u32 sample counter, merging contiguous SAMPLES frames into one block per read, and
counting what was lost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.common.settings import Settings
from services.common.stm32_wire import (
    Deframer,
    FrameError,
    SamplesFrame,
    StatusFrame,
    ValveAckFrame,
    parse_frame,
)

_COUNTER_MODULUS = 1 << 32
_COUNTER_HALF = 1 << 31


@dataclass(frozen=True)
class RawBlock:
    """Contiguous device samples."""

    counter: int  # device sample counter of the first sample, unwrapped: monotonic within a connection
    t_us: int  # device microseconds of the first sample
    rate_hz: float  # from the latest STATUS frame (settings.acquisition.rate_hz until one is seen)
    raw: npt.NDArray[np.uint16]  # (n, n_measured) raw ADC counts, measured channels in settings order


BinaryMessage = RawBlock | StatusFrame | ValveAckFrame


@dataclass(frozen=True)
class BinaryStats:
    frames: int = 0  # CRC-valid frames
    samples: int = 0  # samples delivered in RawBlocks
    crc_errors: int = 0
    bad_frames: int = 0  # undecodable, unparseable, wrong channel count or host-bound frame types
    counter_gaps: int = 0  # forward jumps of the sample counter
    lost_samples: int = 0  # samples skipped by those jumps
    counter_resets: int = 0  # backward jumps (device reset without a USB disconnect)


class BinaryDecoder:
    """Decode one connection's byte stream. Create a new decoder for every connection.

    Consecutive SAMPLES frames with contiguous counters are merged into one RawBlock per `feed`
    call. Anything else (a STATUS, an ACK, a counter jump, a bad frame) ends the current block, so
    the returned list keeps the device's order.

    The wire counter is u32: it is unwrapped against the next expected counter, a forward jump
    below 2**31 counting as lost samples, so the counter is monotonic within a connection unless
    the device restarts its counter without the port going away (a reset behind an ST-Link UART
    bridge): that backward jump is counted in `counter_resets` and the counter starts again from
    the wire value, exactly as it would on a new connection, so consumers rebase on it the same way.
    """

    def __init__(self, settings: Settings) -> None:
        self._n_channels = len(settings.measured_channels)
        self._rate_hz = float(settings.acquisition.rate_hz)
        self._deframer = Deframer()
        self._next_counter: int | None = None  # unwrapped counter expected for the next sample
        self._samples = 0
        self._bad_frames = 0
        self._counter_gaps = 0
        self._lost_samples = 0
        self._counter_resets = 0

    @property
    def stats(self) -> BinaryStats:
        d = self._deframer.stats
        return BinaryStats(
            frames=d.frames,
            samples=self._samples,
            crc_errors=d.crc_errors,
            bad_frames=d.bad_frames + self._bad_frames,
            counter_gaps=self._counter_gaps,
            lost_samples=self._lost_samples,
            counter_resets=self._counter_resets,
        )

    @property
    def rate_hz(self) -> float:
        return self._rate_hz

    def feed(self, chunk: bytes) -> list[BinaryMessage]:
        out: list[BinaryMessage] = []
        run: list[npt.NDArray[np.uint16]] = []  # raw arrays of the block being merged
        run_counter = run_t_us = 0

        def flush() -> None:
            if run:
                raw = np.concatenate(run).astype(np.uint16, copy=False)
                out.append(RawBlock(run_counter, run_t_us, self._rate_hz, raw))
                self._samples += len(raw)
                run.clear()

        for body in self._deframer.feed(chunk):
            try:
                frame = parse_frame(body)
            except FrameError:
                self._bad_frames += 1
                continue
            if isinstance(frame, SamplesFrame):
                if frame.raw.shape[1] != self._n_channels:
                    self._bad_frames += 1
                    continue
                counter, contiguous = self._unwrap(frame.counter, len(frame.raw))
                if not contiguous:
                    flush()
                if not run:
                    run_counter, run_t_us = counter, frame.t_us
                run.append(frame.raw)
            elif isinstance(frame, StatusFrame):
                flush()
                if frame.rate_hz > 0:
                    self._rate_hz = float(frame.rate_hz)
                out.append(frame)
            elif isinstance(frame, ValveAckFrame):
                flush()
                out.append(frame)
            else:  # a host -> device frame type coming from the device
                self._bad_frames += 1
        flush()
        return out

    def _unwrap(self, wire_counter: int, n_samples: int) -> tuple[int, bool]:
        """Return the unwrapped counter of a frame and whether it follows the previous one."""
        expected = self._next_counter
        if expected is None:
            counter, contiguous = wire_counter, False
        else:
            delta = (wire_counter - expected) % _COUNTER_MODULUS
            contiguous = delta == 0
            if delta == 0:
                counter = expected
            elif delta < _COUNTER_HALF:
                counter = expected + delta
                self._counter_gaps += 1
                self._lost_samples += delta
            else:
                counter = wire_counter
                self._counter_resets += 1
        self._next_counter = counter + n_samples
        return counter, contiguous
