"""Per-channel statistics over recordings, accumulated batch by batch (numpy reductions only)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from services.analyze.load import SessionIds, micros


@dataclass(slots=True)
class ChannelStats:
    """Count of valid (non-NaN) values, NaN count, extremes, mean and population standard deviation.

    Batches merge with Chan's parallel formula for the sum of squared deviations (`m2`), which stays
    accurate where a running sum of squares would cancel catastrophically.
    """

    count: int = 0
    nan_count: int = 0
    minimum: float = math.nan
    maximum: float = math.nan
    mean: float = math.nan
    m2: float = 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else math.nan

    def add(self, values: np.ndarray) -> None:
        values = values.astype(np.float64, copy=False)
        valid = values[~np.isnan(values)]
        self.nan_count += len(values) - len(valid)
        n = len(valid)
        if n == 0:
            return
        batch_mean = float(valid.mean())
        batch_m2 = float(np.square(valid - batch_mean).sum())
        low, high = float(valid.min()), float(valid.max())
        if self.count == 0:
            self.count, self.mean, self.m2, self.minimum, self.maximum = n, batch_mean, batch_m2, low, high
            return
        total = self.count + n
        delta = batch_mean - self.mean
        self.m2 += batch_m2 + delta * delta * self.count * n / total
        self.mean += delta * n / total
        self.count = total
        self.minimum, self.maximum = min(self.minimum, low), max(self.maximum, high)


@dataclass(slots=True)
class Summary:
    channels: dict[str, ChannelStats]
    rows: int = 0
    first_us: int | None = None
    last_us: int | None = None
    session_rows: dict[str, int] = field(default_factory=dict)


def summarise(batches: Iterable[pa.RecordBatch], channels: Sequence[str]) -> Summary:
    """Statistics of `channels` over batches that hold `timestamp`, `session` and those channels."""
    summary = Summary({name: ChannelStats() for name in channels})
    sessions = SessionIds()
    session_counts = np.zeros(0, dtype=np.int64)
    for batch in batches:
        summary.rows += batch.num_rows
        t = micros(batch.column("timestamp"))
        low, high = int(t.min()), int(t.max())
        summary.first_us = low if summary.first_us is None else min(summary.first_us, low)
        summary.last_us = high if summary.last_us is None else max(summary.last_us, high)
        counts = np.bincount(sessions.ids(batch.column("session")), minlength=len(sessions.names))
        session_counts = np.pad(session_counts, (0, len(counts) - len(session_counts))) + counts
        for name in channels:
            summary.channels[name].add(batch.column(name).to_numpy(zero_copy_only=False))
    summary.session_rows = dict(zip(sessions.names, (int(c) for c in session_counts), strict=True))
    return summary
