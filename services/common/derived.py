"""Derived channels computed on the host: propellant mass flows, specific impulse, impulse, velocity."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from services.common.settings import DERIVED_CHANNELS, Settings

BAR = 1e5  # Pa
ATMOSPHERE_BAR = 1.01325  # gauge + this = absolute
ZERO_CELSIUS = 273.15  # K


def _orifice_area(diameter_mm: float) -> float:
    return math.pi * (diameter_mm * 1e-3) ** 2 / 4


class Derivation:
    """Full telemetry rows from measured engineering values, in `settings.channels` order.

    - D1, GOX mass flow: compressible gas through a sharp orifice, `Cd·A·sqrt(2·ρ·ΔP)` with the
      density from the upstream absolute pressure and temperature, `ρ = P_up / (R·T_up)`.
    - D2, fuel mass flow: incompressible liquid through a sharp orifice, `Cd·A·sqrt(2·ρ·ΔP)`.
    - ISP = THRUST / ((D1 + D2)·g0), NaN below `derived.min_flow_kg_s` of total flow.
    - IMPULSE: running trapezoidal integral of THRUST over time, continuous across `compute` calls
      until `reset` (a new session).
    - VELOCITY = ISP·g0.

    Pressures are gauge bar and temperatures °C, as the calibrations deliver them; ΔP is clipped at 0
    (no reverse flow). Impossible inputs (temperatures at or below 0 K) give NaN or inf, not warnings.
    """

    def __init__(self, settings: Settings) -> None:
        names = settings.channel_names
        measured = [c.name for c in settings.measured_channels]
        unknown = [c.name for c in settings.channels if not c.measured and c.name not in DERIVED_CHANNELS]
        if unknown:
            raise ValueError(f"channels {unknown} have no calibration and are not derived channels")
        self._n_measured = len(measured)
        self._n_channels = len(names)
        self._measured_columns = np.array([names.index(name) for name in measured], dtype=np.intp)
        self._d1, self._d2, self._isp, self._impulse, self._velocity = (
            names.index(name) for name in ("D1", "D2", "ISP", "IMPULSE", "VELOCITY")
        )
        self._thrust = measured.index("THRUST")

        derived = settings.derived
        gox, fuel = derived.gox_orifice, derived.fuel_orifice
        self._gox_up, self._gox_down, self._gox_temperature = (
            measured.index(name) for name in (gox.upstream, gox.downstream, gox.temperature)
        )
        self._gox_cd_area = gox.discharge_coefficient * _orifice_area(gox.diameter_mm)
        self._gox_gas_constant = gox.gas_constant
        self._fuel_up, self._fuel_down = (measured.index(name) for name in (fuel.upstream, fuel.downstream))
        # sqrt(2·ρ·ΔP) with ρ constant: fold Cd·A·sqrt(2ρ) into one factor
        self._fuel_factor = (
            fuel.discharge_coefficient * _orifice_area(fuel.diameter_mm) * math.sqrt(2 * fuel.density)
        )
        self._g0 = derived.g0
        self._min_flow = derived.min_flow_kg_s

        self._impulse_total = 0.0
        self._last: tuple[float, float] | None = None  # (t, THRUST) of the previous call's last sample

    def reset(self) -> None:
        """Restart IMPULSE at 0: the next sample integrates from itself, not from the previous call."""
        self._impulse_total = 0.0
        self._last = None

    def compute(
        self, t: npt.NDArray[np.float64], measured: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float32]:
        """Rows (n, len(channels)) of every channel for `measured` (n, measured channels) at times `t`."""
        n = len(t)
        if t.shape != (n,) or measured.shape != (n, self._n_measured):
            raise ValueError(
                f"shapes t{t.shape}, measured{measured.shape}: expected ({n},) and ({n}, {self._n_measured})"
            )
        rows = np.empty((n, self._n_channels), dtype=np.float32)
        rows[:, self._measured_columns] = measured
        if n == 0:
            return rows

        with np.errstate(invalid="ignore", divide="ignore"):
            gox_up = measured[:, self._gox_up]
            gox_dp = np.clip(gox_up - measured[:, self._gox_down], 0.0, None) * BAR
            density = (
                (gox_up + ATMOSPHERE_BAR)
                * BAR
                / (self._gox_gas_constant * (measured[:, self._gox_temperature] + ZERO_CELSIUS))
            )
            d1 = self._gox_cd_area * np.sqrt(2 * density * gox_dp)
            fuel_dp = np.clip(measured[:, self._fuel_up] - measured[:, self._fuel_down], 0.0, None) * BAR
            d2 = self._fuel_factor * np.sqrt(fuel_dp)

            thrust = measured[:, self._thrust]
            flow = d1 + d2
            isp = np.where(flow >= self._min_flow, thrust / (flow * self._g0), np.nan)

        rows[:, self._d1] = d1
        rows[:, self._d2] = d2
        rows[:, self._isp] = isp
        rows[:, self._velocity] = isp * self._g0
        rows[:, self._impulse] = self._integrate(t, thrust)
        return rows

    def _integrate(
        self, t: npt.NDArray[np.float64], thrust: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """IMPULSE at each sample; the first trapezoid starts at the previous call's last sample."""
        previous_t, previous_thrust = self._last if self._last is not None else (t[0], thrust[0])
        t_ext = np.concatenate(([previous_t], t))
        thrust_ext = np.concatenate(([previous_thrust], thrust))
        steps = 0.5 * (thrust_ext[1:] + thrust_ext[:-1]) * np.diff(t_ext)
        impulse = self._impulse_total + np.cumsum(steps)
        self._impulse_total = float(impulse[-1])
        self._last = (float(t[-1]), float(thrust[-1]))
        return impulse
