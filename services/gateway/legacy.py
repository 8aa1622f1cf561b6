"""The existing frontend's `sensor_data` shape, built from one telemetry sample.

Every value is a number or null (NaN/inf and channels the telemetry lacks become null: a string
breaks that frontend); `timestamp` is ISO-8601 UTC and never empty. Fields and their channels:

| field | value |
|---|---|
| `pressures` | [P1 … P8] (bar) |
| `temperatures` | [T1 … T6, Tbogaz1, Tbogaz2] (°C) |
| `thrust` | THRUST (N) |
| `isp` | ISP (s) |
| `oxygen_consumption`, `fuel_consumption` | D1, D2 (kg/s) |
| `total_impulse` | IMPULSE (N·s) |
| `exhaust_velocity` | VELOCITY (m/s) |
| `p_chamber` | P5, the chamber pressure (bar) |
| `debis` | [D1, D2], the two mass flows (kg/s) |
| `kutlesel_debi` | D1 + D2, the total mass flow (kg/s) |
| `deltap2` | P3 − P4, the pressure drop across the fuel orifice (bar) |
| `adiabatic_temperature` | null: nothing on this stand measures or computes it |
| `errors` | how many measured channels are missing or not finite in this sample (0 = all good) |
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

PRESSURES = tuple(f"P{i}" for i in range(1, 9))
TEMPERATURES = (*(f"T{i}" for i in range(1, 7)), "Tbogaz1", "Tbogaz2")
SCALARS = {
    "thrust": "THRUST",
    "isp": "ISP",
    "oxygen_consumption": "D1",
    "fuel_consumption": "D2",
    "total_impulse": "IMPULSE",
    "exhaust_velocity": "VELOCITY",
    "p_chamber": "P5",
}
MEASURED = (*PRESSURES, *TEMPERATURES, "THRUST")


def finite(value: float | None) -> float | None:
    """The value as a JSON-safe float: NaN, ±inf and None become None."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def iso_utc(t: float) -> str:
    """UNIX seconds as ISO-8601 UTC with milliseconds, e.g. `2026-11-24T13:07:00.123Z`."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else finite(a - b)


def sensor_data(
    channels: Sequence[str], t: float | None, values: npt.NDArray[np.float32] | Sequence[float]
) -> dict[str, Any]:
    """The legacy map for one sample; `t` None (no telemetry yet) stamps the current time."""
    by_name = {name: finite(float(v)) for name, v in zip(channels, values, strict=True)}
    d1, d2 = by_name.get("D1"), by_name.get("D2")
    data: dict[str, Any] = {
        "pressures": [by_name.get(name) for name in PRESSURES],
        "temperatures": [by_name.get(name) for name in TEMPERATURES],
        **{field: by_name.get(channel) for field, channel in SCALARS.items()},
        "debis": [d1, d2],
        "kutlesel_debi": None if d1 is None or d2 is None else finite(d1 + d2),
        "deltap2": _difference(by_name.get("P3"), by_name.get("P4")),
        "adiabatic_temperature": None,
        "errors": sum(1 for name in MEASURED if by_name.get(name) is None),
        "timestamp": iso_utc(datetime.now(UTC).timestamp() if t is None else t),
    }
    return data
