"""How far behind the recording is: the age of the oldest telemetry batch not yet recorded.

Age is measured from the batch's first sample time (UNIX, acquisition's host clock) to now, so it
counts every wait on the way: a logger that could not read the broker for a while (stopped, starved)
falls behind just as one whose recorder is slow. paho's thread calls `queued(t)` as it hands a batch
to the recorder, the recorder `taken()` as it starts on one; `check()` (from either thread: paho's
keeps calling it while the recorder is stuck) reports through `on_change(behind_s)` when the age
passes `threshold_s` (`behind_s` = the age), when it has grown by another `REPORT_STEP_S` since, and
once with None when it is below again.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

REPORT_STEP_S = 1.0


class Lag:
    def __init__(self, threshold_s: float, on_change: Callable[[float | None], None]) -> None:
        self._threshold_s = threshold_s
        self._on_change = on_change
        self._waiting: deque[float] = deque()  # first sample times of the batches not yet taken
        self._lock = threading.Lock()
        self._reported: float | None = None

    @property
    def behind(self) -> bool:
        """As last reported."""
        return self._reported is not None

    def queued(self, sample_t: float) -> None:
        self._waiting.append(sample_t)

    def taken(self) -> None:
        if self._waiting:
            self._waiting.popleft()

    def check(self) -> None:
        try:
            wait = time.time() - self._waiting[0]
        except IndexError:
            wait = 0.0
        behind = wait if wait > self._threshold_s else None
        with self._lock:
            reported = self._reported
            if behind is None and reported is None:
                return
            if behind is not None and reported is not None and behind < reported + REPORT_STEP_S:
                return
            self._reported = behind
            self._on_change(behind)  # under the lock: reports go out in the order they were made
