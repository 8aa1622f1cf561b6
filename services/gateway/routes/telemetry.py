"""Telemetry routes: the newest sample, acquisition's ring buffer and its reduced history."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query

from services.common import topics
from services.gateway import legacy
from services.gateway.deps import GatewayDep, Viewer
from services.gateway.models import REFUSED, UNANSWERED, BufferStatus, History, Number, SensorData, Sensors

MAX_POINTS = 20_000
MAX_HISTORY_S = 3600.0  # acquisition returns what its ring buffer holds (10 minutes by default)

router = APIRouter(tags=["telemetry"])


@router.get("/api/sensors")
async def sensors(_: Viewer, gateway: GatewayDep) -> Sensors:
    sample = gateway.bus.latest_sample()
    if sample is None:
        return Sensors(t=None, channels={}, sensor_data=SensorData(**legacy.sensor_data((), None, ())))
    channels, t, values = sample
    return Sensors(
        t=t,
        channels={name: legacy.finite(float(v)) for name, v in zip(channels, values, strict=True)},
        sensor_data=SensorData(**legacy.sensor_data(channels, t, values)),
    )


@router.get("/api/buffer_status", responses=REFUSED | UNANSWERED)
async def buffer_status(_: Viewer, gateway: GatewayDep) -> BufferStatus:
    return BufferStatus(**await gateway.call("acquisition", topics.ACQ_BUFFER_STATUS, {}))


@router.get("/api/history", responses=REFUSED | UNANSWERED)
async def history(
    _: Viewer,
    gateway: GatewayDep,
    seconds: Annotated[float, Query(gt=0, le=MAX_HISTORY_S, allow_inf_nan=False)] = 10.0,
    points: Annotated[int, Query(ge=1, le=MAX_POINTS)] = 2000,
) -> History:
    """The last `seconds` from acquisition's ring buffer in at most `points` min/max buckets."""
    with gateway.heavy.take():  # the answer (up to points x channels x 2 numbers) is built under it too
        result = await gateway.call(
            "acquisition", topics.ACQ_HISTORY_REDUCED, {"seconds": seconds, "points": points}
        )
        n, channels = int(result["n"]), list(result["channels"])
        return History(
            session=result.get("session"),
            channels=channels,
            n=n,
            n_source=int(result["n_source"]),
            seq_first=result.get("seq_first"),
            seq_last=result.get("seq_last"),
            t=np.frombuffer(result["t"], dtype="<f8").tolist(),
            min=_columns(result["min"], n, channels),
            max=_columns(result["max"], n, channels),
        )


def _columns(values: bytes, n: int, channels: list[str]) -> dict[str, list[Number]]:
    matrix = np.frombuffer(values, dtype="<f4").reshape(n, len(channels)).astype(np.float64)
    return {name: [legacy.finite(v) for v in matrix[:, i].tolist()] for i, name in enumerate(channels)}
