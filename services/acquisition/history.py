"""Request handlers that serve the ring buffer over MQTT request/response (see docs/protocol.md).

Arrays travel as MessagePack bin: little-endian int64 `seq`, float64 `t`, float32 sample-major data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from services.acquisition.ring_buffer import RingBuffer
from services.common.rpc import RpcError

MAX_HISTORY_SAMPLES = 50_000  # ~5 MB per reply at 22 channels; callers page with `next_seq`
MAX_REDUCED_POINTS = 20_000


@dataclass(frozen=True)
class HistorySource:
    ring: RingBuffer
    session: str
    channels: tuple[str, ...]

    def buffer_status(self, _request: dict[str, Any]) -> dict[str, Any]:
        ring = self.ring
        return {
            "session": self.session,
            "channels": list(self.channels),
            "capacity": ring.capacity,
            "size": ring.size,
            "fill": ring.size / ring.capacity,
            "first_seq": ring.first_seq,
            "last_seq": ring.last_seq,
            "memory_bytes": ring.nbytes,
        }

    def history(self, request: dict[str, Any]) -> dict[str, Any]:
        seq_from = _int(request, "seq_from", minimum=0)
        seq_to = _int(request, "seq_to", minimum=seq_from)
        limit = _int(request, "max_samples", minimum=1, default=MAX_HISTORY_SAMPLES)
        samples = self.ring.by_seq(seq_from, seq_to, min(limit, MAX_HISTORY_SAMPLES))
        n = len(samples.seq)
        complete = n == 0 or n < min(limit, MAX_HISTORY_SAMPLES)
        return {
            "session": self.session,
            "channels": list(self.channels),
            "n": n,
            "seq": samples.seq.astype("<i8").tobytes(),
            "t": samples.t.astype("<f8").tobytes(),
            "data": samples.data.astype("<f4").tobytes(),
            # where to ask next; equal to seq_to once everything still held has been returned
            "next_seq": seq_to if complete else int(samples.seq[-1]) + 1,
            "first_seq": self.ring.first_seq,
        }

    def history_reduced(self, request: dict[str, Any]) -> dict[str, Any]:
        seconds = _float(request, "seconds", minimum=0.0)
        points = _int(request, "points", minimum=1, default=2000)
        reduced = self.ring.last_seconds_reduced(seconds, min(points, MAX_REDUCED_POINTS))
        return {
            "session": self.session,
            "channels": list(self.channels),
            "n": len(reduced.t),
            "n_source": reduced.n_source,
            "seq_first": reduced.seq_first,
            "seq_last": reduced.seq_last,
            "t": reduced.t.astype("<f8").tobytes(),
            "min": reduced.min.astype("<f4").tobytes(),
            "max": reduced.max.astype("<f4").tobytes(),
        }


def _int(request: dict[str, Any], key: str, *, minimum: int, default: int | None = None) -> int:
    value = request.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RpcError(f"{key!r} must be an integer")
    if value < minimum:
        raise RpcError(f"{key!r} must be >= {minimum}, got {value}")
    return value


def _float(request: dict[str, Any], key: str, *, minimum: float) -> float:
    value = request.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or not np.isfinite(value):
        raise RpcError(f"{key!r} must be a number")
    if value < minimum:
        raise RpcError(f"{key!r} must be >= {minimum}, got {value}")
    return float(value)
