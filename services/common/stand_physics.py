"""The stand behind the STM32, as pure vectorised functions: valve mask in, channel values out.

`Plant.advance` maps (state, valves, n, dt) to the next state and an (n, len(QUANTITIES)) block of
noise-free values; `Sensors` orders them as the stand's measured channels and adds noise; `Adc` turns
engineering values into 12-bit counts and back; `DerivedChannels` computes the legacy firmware's derived
channels (flows, ISP, impulse, exhaust velocity).

Every plant quantity relaxes like a node of a resistor-capacitor network: a line pressure toward the
conductance-weighted mean of the pressures it reaches through open valves, a temperature toward its
hot or cold equilibrium. Targets and rates are evaluated at the start of a block and frozen within it,
so a block has the closed form

    x[k] = target + (x0 - target) * exp(-rate * (k + 1) * dt)

with no per-sample loop. Blocks last a few milliseconds, well under the shortest time constant here,
and each target is a convex combination of current values, so freezing them is stable and invisible.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from math import pi

import numpy as np
import numpy.typing as npt
from numpy.polynomial import polynomial

from services.common.settings import Channel, DerivedSettings, EmulatorSettings

FloatArray = npt.NDArray[np.float64]

# What the plant computes, in column order. Sensors map the stand's measured channels onto these by
# name; a measured channel the plant does not know reads 0.
QUANTITIES = (
    *("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8"),
    *("T1", "T2", "T3", "T4", "T5", "T6", "Tbogaz1", "Tbogaz2"),
    "THRUST",
)
_I = {name: i for i, name in enumerate(QUANTITIES)}

ADC_COUNTS = 4096  # the STM32's 12-bit ADC

# Conductances between pressure nodes, as relaxation rates (1/s); 1 / rate is a time constant.
SUPPLY_RATE = 2.0  # bottle / tank regulator keeping P7 and P8 at their supply pressure
DRAW_RATE = 0.1  # droop of a supply while its isolation valve feeds the line
FILL_RATE = 1 / 0.3  # isolation valve open: the line fills from the supply with tau ~0.3 s
VENT_RATE = 1 / 0.2  # relief valve open: the line vents to atmosphere
ORIFICE_RATE = 2.0  # metering orifice between the P1/P2 (P3/P4) taps
INJECTOR_RATE = 2.0 * 2 / 3  # run valve + injector to the chamber: ~40 % of the feed drop is here
PURGE_FILL_RATE = 5.0  # one purge valve open: the purge line fills from the N2 supply
PURGE_BLEED_RATE = 0.5  # purge line leaking into the injector once its valves close
CHAMBER_RATE = 20.0  # chamber filling / emptying, tau 50 ms
LOAD_CELL_RATE = 50.0  # thrust stand response, tau 20 ms

# Chamber pressure as a fraction of the lower propellant feed (burning), of the feeds that flow cold
# (not burning), and of the purge line (N2 through the injector).
CHAMBER_BURN_FRACTION = 0.6
CHAMBER_COLD_FRACTION = 0.06
CHAMBER_PURGE_FRACTION = 0.05
FLOW_MIN_DP_BAR = 1.0  # a propellant flows while its run valve is open and its feed tops the chamber by this
THRUST_PER_BAR = 22.4  # N per bar of chamber pressure: ~280 N at 12.5 bar

# Temperatures: (channel, rise above ambient when burning, heating rate, cooling rate) in degC and 1/s.
HOT_PARTS = (
    ("T3", 160.0, 1 / 3.0, 1 / 15.0),  # injector face
    ("T4", 330.0, 1 / 6.0, 1 / 25.0),  # chamber wall 1
    ("T5", 300.0, 1 / 6.0, 1 / 25.0),  # chamber wall 2
    ("T6", 430.0, 1 / 5.0, 1 / 20.0),  # nozzle wall
    ("Tbogaz1", 1330.0, 1 / 1.5, 1 / 8.0),  # throat
    ("Tbogaz2", 1380.0, 1 / 1.5, 1 / 8.0),  # throat
)
GOX_CHILL_DEGC = 8.0  # expansion cooling of the GOX line while oxygen flows
FUEL_LINE_WARMING_DEGC = 5.0  # radiant heating of the fuel line during a burn
LINE_TEMPERATURE_RATE = 1 / 5.0  # T1, T2 response


@dataclass(frozen=True, slots=True)
class PlantState:
    x: FloatArray  # current value of each of QUANTITIES
    burning: bool  # combustion latched: ignited while both propellants flow, until one stops


@lru_cache(maxsize=8)
def _elapsed(n: int, dt: float) -> FloatArray:
    """(k + 1) * dt for k in 0..n-1: the time of each sample of a block after the block start."""
    return np.arange(1, n + 1, dtype=np.float64) * dt


def _node(links: Iterable[tuple[float, float]], current: float) -> tuple[float, float]:
    """(target, rate) of a node joined by (rate, pressure) links; with no link it holds its value."""
    rate = 0.0
    weighted = 0.0
    for g, p in links:
        rate += g
        weighted += g * p
    return (weighted / rate, rate) if rate > 0 else (current, 0.0)


class Plant:
    """Pressures, temperatures and thrust of the stand as the valves open and close.

    Valves are found by name among the stand's valves (bit i of a mask is valve i); a valve this model
    does not know has no effect, one the stand lacks is always closed.
    """

    def __init__(self, valve_names: Sequence[str], emulator: EmulatorSettings) -> None:
        self._bits = {name: 1 << i for i, name in enumerate(valve_names)}
        self._env = emulator

    def initial_state(self) -> PlantState:
        x = np.zeros(len(QUANTITIES))
        x[_I["P7"]] = self._env.gox_supply_bar
        x[_I["P8"]] = self._env.fuel_supply_bar
        x[_I["T1"] : _I["Tbogaz2"] + 1] = self._env.ambient_degc
        return PlantState(x, burning=False)

    def advance(self, state: PlantState, valves: int, n: int, dt: float) -> tuple[PlantState, FloatArray]:
        """The next n samples, dt apart, with the valves held at `valves`: (new state, (n, Q) values)."""
        burning = self._burning(state, valves)
        target, rate = self._targets(state.x, valves, burning)
        decay = np.exp(np.multiply.outer(_elapsed(n, dt), -rate))
        block: FloatArray = target + (state.x - target) * decay
        return PlantState(block[-1].copy(), burning), block

    def _open(self, valves: int, name: str) -> bool:
        return bool(valves & self._bits.get(name, 0))

    def _burning(self, state: PlantState, valves: int) -> bool:
        p = state.x
        gox_flows = self._open(valves, "GOX2") and p[_I["P2"]] - p[_I["P5"]] > FLOW_MIN_DP_BAR
        fuel_flows = self._open(valves, "FUEL2") and p[_I["P4"]] - p[_I["P5"]] > FLOW_MIN_DP_BAR
        return gox_flows and fuel_flows and (state.burning or self._open(valves, "IGNITION"))

    def _targets(self, x: FloatArray, valves: int, burning: bool) -> tuple[FloatArray, FloatArray]:
        gox1, gox2, relief1, fuel1, fuel2, relief2, purge1, purge2 = (
            float(self._open(valves, name))
            for name in ("GOX1", "GOX2", "RELIEF1", "FUEL1", "FUEL2", "RELIEF2", "PURGE1", "PURGE2")
        )
        p1, p2, p3, p4, p5, p6, p7, p8 = (float(v) for v in x[:8])
        env = self._env
        nodes = {
            "P7": _node([(SUPPLY_RATE, env.gox_supply_bar), (DRAW_RATE * gox1, p1)], p7),
            "P8": _node([(SUPPLY_RATE, env.fuel_supply_bar), (DRAW_RATE * fuel1, p3)], p8),
            "P1": _node([(FILL_RATE * gox1, p7), (VENT_RATE * relief1, 0.0), (ORIFICE_RATE, p2)], p1),
            "P2": _node([(ORIFICE_RATE, p1), (INJECTOR_RATE * gox2, p5)], p2),
            "P3": _node([(FILL_RATE * fuel1, p8), (VENT_RATE * relief2, 0.0), (ORIFICE_RATE, p4)], p3),
            "P4": _node([(ORIFICE_RATE, p3), (INJECTOR_RATE * fuel2, p5)], p4),
            "P6": _node(
                [
                    (PURGE_FILL_RATE * purge1, env.n2_supply_bar),
                    (PURGE_FILL_RATE * purge2, env.n2_supply_bar),
                    (PURGE_BLEED_RATE, p5),
                ],
                p6,
            ),
        }
        if burning:
            chamber = CHAMBER_BURN_FRACTION * min(p2, p4)
        else:
            chamber = CHAMBER_COLD_FRACTION * (p2 * gox2 + p4 * fuel2) + CHAMBER_PURGE_FRACTION * p6
        nodes["P5"] = (chamber, CHAMBER_RATE)
        nodes["THRUST"] = (THRUST_PER_BAR * float(x[_I["P5"]]), LOAD_CELL_RATE)

        ambient = env.ambient_degc
        gox_flows = gox2 > 0 and p2 - p5 > FLOW_MIN_DP_BAR
        nodes["T1"] = (ambient - GOX_CHILL_DEGC * gox_flows, LINE_TEMPERATURE_RATE)
        nodes["T2"] = (ambient + FUEL_LINE_WARMING_DEGC * burning, LINE_TEMPERATURE_RATE)
        for name, rise, heating, cooling in HOT_PARTS:
            hot = ambient + rise * burning
            nodes[name] = (hot, heating if hot > x[_I[name]] else cooling)

        target = np.array([nodes[name][0] for name in QUANTITIES])
        rate = np.array([nodes[name][1] for name in QUANTITIES])
        return target, rate


def full_scale(channel: Channel) -> float:
    """The engineering span of a measured channel over the ADC's 0..4095 counts."""
    assert channel.calibration is not None
    ends = polynomial.polyval(np.array([0.0, ADC_COUNTS - 1.0]), channel.calibration)
    return float(abs(ends[1] - ends[0]))


class Sensors:
    """Reads the plant through the stand's measured channels: column order and Gaussian noise.

    The noise has a standard deviation of `noise_fraction` of each channel's full scale.
    """

    def __init__(self, measured: Sequence[Channel], noise_fraction: float) -> None:
        known = [(j, _I[ch.name]) for j, ch in enumerate(measured) if ch.name in _I]
        self._columns = np.array([j for j, _ in known], dtype=np.intp)
        self._quantities = np.array([q for _, q in known], dtype=np.intp)
        self._sigma = np.array([noise_fraction * full_scale(ch) for ch in measured])

    def measure(self, plant_values: FloatArray, rng: np.random.Generator) -> FloatArray:
        n = plant_values.shape[0]
        out: FloatArray = rng.standard_normal((n, self._sigma.size)) * self._sigma
        out[:, self._columns] += plant_values[:, self._quantities]
        return out


class Adc:
    """The 12-bit ADC and the calibration: engineering values to raw counts and back.

    Each calibration must be monotonic over 0..4095. To invert it, its table polyval(0..4095) is
    normalised to 0..1 and shifted to the channel's own interval [2j, 2j + 1], so one np.interp over
    the concatenated tables inverts every channel of a block at once. Values beyond a channel's range
    clip to 0 / 4095.
    """

    def __init__(self, measured: Sequence[Channel]) -> None:
        calibrations = [ch.calibration or () for ch in measured]
        degree = max(len(c) for c in calibrations)
        # (degree, channels): ascending powers, zero-padded to the highest degree
        self._coefficients = np.array([[*c, *[0.0] * (degree - len(c))] for c in calibrations]).T
        counts = np.arange(ADC_COUNTS, dtype=np.float64)
        tables = polynomial.polyval(counts[:, None], self._coefficients, tensor=False)  # (4096, channels)
        steps = np.diff(tables, axis=0)
        for j, ch in enumerate(measured):
            if not (np.all(steps[:, j] > 0) or np.all(steps[:, j] < 0)):
                raise ValueError(f"calibration of {ch.name} is not monotonic over 0..{ADC_COUNTS - 1}")
        self._low = tables[0]
        self._span = tables[-1] - tables[0]
        self._offset = 2.0 * np.arange(len(measured))
        self._xp = ((tables - self._low) / self._span + self._offset).T.ravel()
        self._fp = np.tile(counts, len(measured))

    def counts(self, values: FloatArray) -> npt.NDArray[np.uint16]:
        """(n, channels) engineering values to (n, channels) counts 0..4095."""
        position = np.clip((values - self._low) / self._span, 0.0, 1.0) + self._offset
        counts: npt.NDArray[np.uint16] = np.rint(np.interp(position, self._xp, self._fp)).astype(np.uint16)
        return counts

    def engineering(self, counts: npt.NDArray[np.uint16]) -> FloatArray:
        """(n, channels) counts to engineering values: each channel's calibration polynomial."""
        values: FloatArray = polynomial.polyval(counts.astype(np.float64), self._coefficients, tensor=False)
        return values


class DerivedChannels:
    """The legacy firmware's derived channels, computed from measured engineering values.

    D1: gas through a sharp orifice, mdot = Cd A sqrt(2 rho dP) with rho = P_up / (R T_up).
    D2: liquid through a sharp orifice, mdot = Cd A sqrt(2 rho dP).
    ISP = THRUST / ((D1 + D2) g0), NaN while D1 + D2 < min_flow; VELOCITY = ISP g0;
    IMPULSE = running integral of THRUST.
    """

    def __init__(self, measured_names: Sequence[str], derived: DerivedSettings) -> None:
        col = {name: j for j, name in enumerate(measured_names)}
        gox, fuel = derived.gox_orifice, derived.fuel_orifice
        self._gox = (col[gox.upstream], col[gox.downstream], col[gox.temperature])
        self._fuel = (col[fuel.upstream], col[fuel.downstream])
        self._thrust = col["THRUST"]
        self._gox_cda = gox.discharge_coefficient * pi * (gox.diameter_mm * 1e-3 / 2) ** 2
        self._fuel_cda = fuel.discharge_coefficient * pi * (fuel.diameter_mm * 1e-3 / 2) ** 2
        self._gas_constant = gox.gas_constant
        self._fuel_density = fuel.density
        self._g0 = derived.g0
        self._min_flow = derived.min_flow_kg_s

    def compute(
        self, measured: FloatArray, dt: float, impulse0: float
    ) -> tuple[dict[str, FloatArray], float]:
        """Derived channels of a block of samples dt apart, and the impulse at the block's end."""
        up, down, temp = (measured[:, j] for j in self._gox)
        p_up = np.maximum(up, 0.0) * 1e5
        rho = p_up / (self._gas_constant * (temp + 273.15))
        d1 = self._gox_cda * np.sqrt(2 * rho * np.maximum(up - down, 0.0) * 1e5)
        fuel_up, fuel_down = (measured[:, j] for j in self._fuel)
        d2 = self._fuel_cda * np.sqrt(2 * self._fuel_density * np.maximum(fuel_up - fuel_down, 0.0) * 1e5)
        thrust = measured[:, self._thrust]
        flow = d1 + d2
        with np.errstate(divide="ignore", invalid="ignore"):
            isp = np.where(flow >= self._min_flow, thrust / (flow * self._g0), np.nan)
        impulse = impulse0 + np.cumsum(thrust) * dt
        channels = {"ISP": isp, "D1": d1, "D2": d2, "IMPULSE": impulse, "VELOCITY": isp * self._g0}
        return channels, float(impulse[-1])
