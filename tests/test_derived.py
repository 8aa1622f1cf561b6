"""Derived channels: orifice mass flows, ISP, VELOCITY and the running IMPULSE integral."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from services.common.derived import Derivation
from services.common.settings import (
    Channel,
    DerivedSettings,
    GasOrifice,
    LiquidOrifice,
    Settings,
)

# Settings order deliberately mixes derived and measured channels; the measured order is this minus
# the derived ones: P1, P2, T1, THRUST, P3, P4, X.
ORDER = ("D1", "P1", "ISP", "P2", "T1", "THRUST", "VELOCITY", "P3", "IMPULSE", "P4", "D2", "X")
MEASURED = ("P1", "P2", "T1", "THRUST", "P3", "P4", "X")
# The hot fire's conditions name channels these settings leave out: its steps become one, all closed
# (settings sources are merged key by key, so the stand's other sequences stay as they are).
SEQUENCES: dict[str, Any] = {"hotfire": {"steps": [{"valves": "000000000"}]}}
# The report's channels must exist too: the chamber pressure and the plots become ones these keep.
REPORT: dict[str, Any] = {"chamber_pressure": "P1", "plot_channels": ["THRUST"]}
DERIVED = DerivedSettings(
    g0=9.80665,
    min_flow_kg_s=0.001,
    gox_orifice=GasOrifice(
        upstream="P1",
        downstream="P2",
        temperature="T1",
        discharge_coefficient=0.62,
        diameter_mm=3.0,
        gas_constant=259.8,
    ),
    fuel_orifice=LiquidOrifice(
        upstream="P3", downstream="P4", discharge_coefficient=0.65, diameter_mm=2.0, density=789.0
    ),
)


@pytest.fixture(scope="module")
def stand() -> Settings:
    channels = tuple(
        Channel(name=name, unit="u", calibration=(0.0, 1.0) if name in MEASURED else None) for name in ORDER
    )
    return Settings(channels=channels, derived=DERIVED, redlines=(), sequences=SEQUENCES, report=REPORT)


def measured_rows(**columns: list[float]) -> npt.NDArray[np.float64]:
    """A measured block from named columns (missing ones are 0)."""
    n = len(next(iter(columns.values())))
    rows = np.zeros((n, len(MEASURED)))
    for name, values in columns.items():
        rows[:, MEASURED.index(name)] = values
    return rows


def column(rows: npt.NDArray[np.float32], name: str) -> npt.NDArray[np.float32]:
    return rows[:, ORDER.index(name)]


def test_hand_computed_orifice_flows(stand: Settings) -> None:
    rows = Derivation(stand).compute(
        np.array([0.0]), measured_rows(P1=[40.0], P2=[30.0], T1=[20.0], P3=[25.0], P4=[5.0], THRUST=[1000.0])
    )
    # GOX: A = π (3 mm)² / 4; ρ = (40 + 1.01325) bar / (259.8 J/(kg K) · 293.15 K); ΔP = 10 bar
    area = math.pi * 0.003**2 / 4
    density = 41.01325e5 / (259.8 * 293.15)
    d1 = 0.62 * area * math.sqrt(2 * density * 10e5)
    assert density == pytest.approx(53.8512, rel=1e-5)
    assert d1 == pytest.approx(0.0454817, rel=1e-5)
    # fuel: A = π (2 mm)² / 4; ρ = 789 kg/m³; ΔP = 20 bar
    d2 = 0.65 * math.pi * 0.002**2 / 4 * math.sqrt(2 * 789.0 * 20e5)
    assert d2 == pytest.approx(0.114718, rel=1e-5)

    assert column(rows, "D1")[0] == pytest.approx(d1, rel=1e-6)
    assert column(rows, "D2")[0] == pytest.approx(d2, rel=1e-6)
    assert column(rows, "ISP")[0] == pytest.approx(1000.0 / ((d1 + d2) * 9.80665), rel=1e-6)
    assert column(rows, "ISP")[0] == pytest.approx(636.528, rel=1e-5)
    assert column(rows, "VELOCITY")[0] == pytest.approx(1000.0 / (d1 + d2), rel=1e-6)
    assert column(rows, "IMPULSE")[0] == 0.0


def test_measured_values_keep_their_columns(stand: Settings) -> None:
    measured = np.arange(3 * len(MEASURED), dtype=np.float64).reshape(3, len(MEASURED)) + 0.5
    rows = Derivation(stand).compute(np.arange(3.0), measured)
    assert rows.dtype == np.float32
    assert rows.shape == (3, len(ORDER))
    for i, name in enumerate(MEASURED):
        np.testing.assert_array_equal(column(rows, name), measured[:, i].astype(np.float32))


def test_no_flow_means_no_isp(stand: Settings) -> None:
    rows = Derivation(stand).compute(
        np.arange(3.0),
        measured_rows(
            P1=[20.0, 20.0, 20.0],
            P2=[20.0, 25.0, 20.0],  # equal, then reversed: no GOX flow (ΔP clipped at 0)
            T1=[20.0, 20.0, 20.0],
            P3=[10.0, 5.0, 10.0],
            P4=[10.0, 8.0, 10.0 - 1e-12],  # a negligible fuel flow, below min_flow_kg_s
            THRUST=[5.0, 5.0, 5.0],
        ),
    )
    np.testing.assert_array_equal(column(rows, "D1"), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(column(rows, "D2")[:2], [0.0, 0.0])
    assert 0 < column(rows, "D2")[2] < 0.001
    assert np.isnan(column(rows, "ISP")).all()
    assert np.isnan(column(rows, "VELOCITY")).all()
    assert np.isfinite(column(rows, "IMPULSE")).all()


def test_impulse_of_a_constant_thrust(stand: Settings) -> None:
    derivation = Derivation(stand)
    t = (1.7e9 + np.arange(100) * 1e-4).astype(np.float64)
    first = derivation.compute(t[:60], measured_rows(THRUST=[250.0] * 60))
    second = derivation.compute(t[60:], measured_rows(THRUST=[250.0] * 40))
    impulse = np.concatenate((column(first, "IMPULSE"), column(second, "IMPULSE")))
    np.testing.assert_allclose(impulse, 250.0 * (t - t[0]), rtol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    thrust=hnp.arrays(np.float64, st.integers(1, 60), elements=st.floats(-500, 5000)),
    steps=st.lists(st.floats(1e-5, 0.1), min_size=60, max_size=60),
    splits=st.lists(st.integers(0, 60), max_size=5),
)
def test_impulse_is_continuous_across_blocks(
    stand: Settings, thrust: npt.NDArray[np.float64], steps: list[float], splits: list[int]
) -> None:
    n = len(thrust)
    t = 1.7e9 + np.cumsum(steps[:n])
    whole = column(Derivation(stand).compute(t, measured_rows(THRUST=list(thrust))), "IMPULSE")

    derivation = Derivation(stand)
    bounds = [0, *sorted(min(s, n) for s in splits), n]
    pieces = [
        column(derivation.compute(t[lo:hi], measured_rows(THRUST=list(thrust[lo:hi]))), "IMPULSE")
        for lo, hi in itertools.pairwise(bounds)
        if hi > lo
    ]
    split = np.concatenate(pieces)

    expected = np.concatenate(([0.0], np.cumsum(0.5 * (thrust[1:] + thrust[:-1]) * np.diff(t))))
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(whole, expected, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(split, whole, rtol=0, atol=1e-6 * scale)


def test_reset_restarts_impulse(stand: Settings) -> None:
    derivation = Derivation(stand)
    t = np.linspace(0.0, 0.9, 10)
    derivation.compute(t, measured_rows(THRUST=[100.0] * 10))
    derivation.reset()
    rows = derivation.compute(
        np.linspace(5.0, 5.9, 10), measured_rows(THRUST=[100.0] * 10)
    )  # no integration over the pause
    np.testing.assert_allclose(column(rows, "IMPULSE"), 100.0 * np.arange(10) * 0.1, rtol=1e-6)


def test_empty_block_changes_nothing(stand: Settings) -> None:
    derivation = Derivation(stand)
    derivation.compute(np.array([0.0, 1.0]), measured_rows(THRUST=[10.0, 10.0]))
    assert derivation.compute(np.empty(0), np.empty((0, len(MEASURED)))).shape == (0, len(ORDER))
    rows = derivation.compute(np.array([2.0]), measured_rows(THRUST=[10.0]))
    assert column(rows, "IMPULSE")[0] == pytest.approx(20.0)


def test_rejects_mismatched_shapes(stand: Settings) -> None:
    derivation = Derivation(stand)
    with pytest.raises(ValueError, match="expected"):
        derivation.compute(np.arange(3.0), np.zeros((3, len(MEASURED) - 1)))
    with pytest.raises(ValueError, match="expected"):
        derivation.compute(np.arange(2.0), np.zeros((3, len(MEASURED))))


def test_rejects_an_unknown_uncalibrated_channel(stand: Settings) -> None:
    channels = (*stand.channels, Channel(name="MYSTERY", unit="u"))
    with pytest.raises(ValueError, match="MYSTERY"):
        Derivation(
            Settings(channels=channels, derived=DERIVED, redlines=(), sequences=SEQUENCES, report=REPORT)
        )
