"""What clients are told of the running sequence and of the alarms (rcs/state/system, rcs/state/alarms).

Times inside the core are monotonic; clients get UNIX times (`*_ts`) and seconds as of the message's `ts`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from services.actuation.alarms import Alarm, AlarmBook
from services.actuation.core import StandCore
from services.common.telemetry import TelemetryBatch


def sequence_state(core: StandCore, monotonic: float, unix: float) -> dict[str, Any] | None:
    """The `sequence` of rcs/state/system: name, step i/n, phase, T-time, time to the next step, hold."""
    progress = core.sequence
    if progress is None:
        return None
    t_s, next_step_in_s = core.timing(monotonic)
    fields = asdict(progress)
    return fields | {
        "started": unix - (monotonic - progress.started),
        "t0": None if progress.t0 is None else unix - (monotonic - progress.t0),
        "t_s": t_s,  # T-time at `ts`: negative before T-0 (estimated from the fixed waits)
        "next_step_in_s": next_step_in_s,  # or to the current wait's timeout; None when held or unknown
    }


def alarms_state(book: AlarmBook, unix: float) -> dict[str, Any]:
    """The retained rcs/state/alarms: every alarm not yet both cleared and acknowledged."""
    return {"alarms": [alarms_state_entry(alarm) for alarm in book.alarms], "ts": unix}


def alarms_state_entry(alarm: Alarm) -> dict[str, Any]:
    return asdict(alarm) | {"state": str(alarm.state)}


def batch_values(batch: TelemetryBatch) -> dict[str, float]:
    """The mean of each channel over a batch (NaN samples ignored): what sequence conditions judge."""
    with np.errstate(all="ignore"):
        finite = np.isfinite(batch.data)
        counts = finite.sum(axis=0)
        sums = np.where(finite, batch.data, 0.0).sum(axis=0, dtype=np.float64)
    return {name: float(sums[i] / counts[i]) for i, name in enumerate(batch.channels) if counts[i]}
