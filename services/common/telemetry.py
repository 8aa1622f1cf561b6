"""The telemetry contract: one MessagePack map per batch of samples on `rcs/telemetry/sensors`.

    {v: 1, session: str, seq: int, n: int, rate_hz: float, channels: [str],
     t: bin (n x float64 LE, UNIX seconds), data: bin (n x len(channels) float32 LE, sample-major)}

Within a session the next batch's `seq` is this batch's `seq + n`; anything else is a gap.
docs/protocol.md is the public statement of this format: change both together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt

from services.common.codec import WireFormatError, unpack_map

VERSION = 1
_T_DTYPE = np.dtype("<f8")
_DATA_DTYPE = np.dtype("<f4")


@dataclass(frozen=True, slots=True)
class TelemetryBatch:
    session: str
    seq: int
    rate_hz: float
    channels: tuple[str, ...]
    t: npt.NDArray[np.float64]  # (n,)
    data: npt.NDArray[np.float32]  # (n, len(channels))

    @property
    def n(self) -> int:
        return len(self.t)

    @property
    def next_seq(self) -> int:
        return self.seq + self.n


def encode_batch(batch: TelemetryBatch) -> bytes:
    if batch.data.shape != (batch.n, len(batch.channels)):
        raise ValueError(f"data shape {batch.data.shape} does not match n={batch.n} x channels")
    packed: bytes = msgpack.packb(
        {
            "v": VERSION,
            "session": batch.session,
            "seq": batch.seq,
            "n": batch.n,
            "rate_hz": batch.rate_hz,
            "channels": list(batch.channels),
            "t": batch.t.astype(_T_DTYPE, copy=False).tobytes(),
            "data": batch.data.astype(_DATA_DTYPE, copy=False).tobytes(),
        },
        use_bin_type=True,
    )
    return packed


def _field(message: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = message.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise WireFormatError(f"field {key!r} missing or not {kind}")
    return value


def decode_batch(payload: bytes) -> TelemetryBatch:
    """Decode and validate one telemetry message; raises WireFormatError, never anything else."""
    message = unpack_map(payload)
    if message.get("v") != VERSION:
        raise WireFormatError(f"unsupported telemetry version {message.get('v')!r}")
    session = _field(message, "session", str)
    seq = _field(message, "seq", int)
    n = _field(message, "n", int)
    rate_hz = float(_field(message, "rate_hz", (int, float)))
    channels = _field(message, "channels", list)
    if not channels or not all(isinstance(c, str) for c in channels):
        raise WireFormatError("field 'channels' must be a non-empty list of strings")
    t_bytes = _field(message, "t", bytes)
    data_bytes = _field(message, "data", bytes)
    if seq < 0 or n <= 0:
        raise WireFormatError(f"seq={seq}, n={n}: seq must be >= 0 and n > 0")
    if len(t_bytes) != n * _T_DTYPE.itemsize:
        raise WireFormatError(f"'t' has {len(t_bytes)} bytes, expected {n * _T_DTYPE.itemsize}")
    if len(data_bytes) != n * len(channels) * _DATA_DTYPE.itemsize:
        raise WireFormatError(
            f"'data' has {len(data_bytes)} bytes, expected {n * len(channels) * _DATA_DTYPE.itemsize}"
        )
    return TelemetryBatch(
        session=session,
        seq=seq,
        rate_hz=rate_hz,
        channels=tuple(channels),
        t=np.frombuffer(t_bytes, dtype=_T_DTYPE),
        data=np.frombuffer(data_bytes, dtype=_DATA_DTYPE).reshape(n, len(channels)),
    )
