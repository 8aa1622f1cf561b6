"""Give every sample of a session its `seq` and its UNIX time.

Binary protocol: `seq` follows the device's sample counter, so samples the device took but the host
never received (dropped frames, an unplugged cable) leave a gap in `seq` — downstream sees exactly
what was lost, and `lost_samples` counts them (within a connection and across a reconnection alike).
A device whose counter goes backwards has reset: the mapping is rebased so that `seq` keeps
increasing (what it took between its last frame and the reset is unknown, so not counted).

Time is the device's microsecond clock plus an offset to the host clock. The offset estimates the
moment each sample was taken as the host's receive time minus the smallest transport delay seen
(the block that arrived fastest). The first block after opening the port may be backlog read late,
and the two clocks drift apart slowly, so the offset keeps following that minimum — but by slewing
(at most `MAX_SLEW` of the elapsed time, spread over the block's samples), never by stepping, so
time stays strictly increasing.

Legacy text protocol: there is no device counter; each received line is the next `seq` and its time
is the host's receive time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MAX_SLEW = 0.1  # the offset may change by at most 10 % of the elapsed time
DRIFT_WINDOW_S = 5.0  # the minimum delay is re-measured over windows this long


@dataclass(frozen=True, slots=True)
class Numbered:
    first_seq: int
    t: npt.NDArray[np.float64]


class SampleNumbering:
    def __init__(self) -> None:
        self.next_seq = 0
        self.device_resets = 0
        self.lost_samples = 0  # the device took them (its counter says so) but they never arrived
        self._seq_at_counter0: int | None = None  # seq = counter + this
        self._last_counter: int | None = None
        self._offset = 0.0  # UNIX seconds = device seconds + offset
        self._goal = 0.0  # where the offset is slewing to
        self._window_min = math.inf
        self._window_end = 0.0

    def device_block(self, counter: int, t_us: int, n: int, rate_hz: float, now: float) -> Numbered:
        """Number a contiguous block of `n` device samples whose last one arrived at `now`."""
        device_t = t_us * 1e-6 + np.arange(n, dtype=np.float64) / rate_hz
        observed = now - device_t[-1]  # offset if this block had had no transport delay at all
        if self._seq_at_counter0 is None or self._last_counter is None or counter <= self._last_counter:
            if self._last_counter is not None:
                self.device_resets += 1
            self._seq_at_counter0 = self.next_seq - counter
            self._offset = self._goal = observed
            self._window_min, self._window_end = math.inf, device_t[-1] + DRIFT_WINDOW_S
        else:
            self.lost_samples += counter - self._last_counter - 1
        first_seq = counter + self._seq_at_counter0
        self._last_counter = counter + n - 1
        self.next_seq = first_seq + n
        return Numbered(first_seq, self._slewed_time(device_t, observed, n / rate_hz))

    def _slewed_time(
        self, device_t: npt.NDArray[np.float64], observed: float, span_s: float
    ) -> npt.NDArray[np.float64]:
        self._goal = min(self._goal, observed)  # a faster block proves the offset is too late
        self._window_min = min(self._window_min, observed)
        if device_t[-1] >= self._window_end:  # the clocks drift: follow the last window's minimum
            self._goal = self._window_min
            self._window_min, self._window_end = math.inf, device_t[-1] + DRIFT_WINDOW_S
        step = float(np.clip(self._goal - self._offset, -MAX_SLEW * span_s, MAX_SLEW * span_s))
        ramp = np.arange(1, len(device_t) + 1, dtype=np.float64) / len(device_t)
        t = device_t + self._offset + step * ramp
        self._offset += step
        return t

    def host_block(self, n: int) -> int:
        """Number `n` samples that carry no device counter (legacy text protocol)."""
        first_seq = self.next_seq
        self.next_seq += n
        return first_seq
