"""The sample rate that telemetry batches and meta announce.

The binary protocol's device states its rate (nominal). The legacy text protocol does not, so its
rate is measured: samples counted over windows of at least `window_s` seconds.
"""

from __future__ import annotations


class RateEstimator:
    def __init__(self, nominal_hz: float, window_s: float = 2.0) -> None:
        self.hz = nominal_hz
        self._window_s = window_s
        self._window_start: float | None = None
        self._window_count = 0

    def set_nominal(self, hz: float) -> None:
        self.hz = hz

    def count(self, n: int, now: float) -> None:
        if self._window_start is None:
            self._window_start, self._window_count = now, 0
            return
        self._window_count += n
        elapsed = now - self._window_start
        if elapsed >= self._window_s:
            self.hz = round(self._window_count / elapsed, 1)
            self._window_start, self._window_count = now, 0
