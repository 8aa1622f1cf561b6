"""Calibration: raw ADC counts to engineering values, against numpy's own polynomial evaluation."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from services.acquisition.calibration import Calibration
from services.common.settings import DERIVED_CHANNELS, Channel, Settings, load_settings

# The measured channels the derived-channel inputs require, interleaved with the derived channels so
# that the measured (column) order differs from the settings order.
MEASURED = ("P1", "P2", "P3", "P4", "T1", "THRUST")
# The hot fire's conditions name channels these settings leave out: its steps become one, all closed
# (settings sources are merged key by key, so the stand's other sequences stay as they are).
SEQUENCES: dict[str, Any] = {"hotfire": {"steps": [{"valves": "000000000"}]}}
# The report's channels must exist too: the chamber pressure and the plots become ones these keep.
REPORT: dict[str, Any] = {"chamber_pressure": "P1", "plot_channels": ["THRUST"]}


def settings_with(polynomials: list[tuple[float, ...]]) -> Settings:
    """The stand's settings with channels P1..P4, T1, THRUST calibrated by `polynomials`."""
    measured = [Channel(name=n, unit="u", calibration=p) for n, p in zip(MEASURED, polynomials, strict=True)]
    derived = [Channel(name=n, unit="u") for n in DERIVED_CHANNELS]
    channels = [c for pair in zip(measured, derived, strict=False) for c in pair] + measured[len(derived) :]
    return Settings(channels=tuple(channels), redlines=(), sequences=SEQUENCES, report=REPORT)


def reference(raw: npt.NDArray[np.uint16], polynomials: list[tuple[float, ...]]) -> npt.NDArray[np.float64]:
    """np.polyval per channel (it takes descending powers)."""
    return np.stack(
        [np.polyval(p[::-1], raw[:, i].astype(np.float64)) for i, p in enumerate(polynomials)], axis=1
    )


def test_stand_linear_calibrations() -> None:
    stand = load_settings()
    calibration = Calibration(stand)
    assert calibration.names == tuple(c.name for c in stand.measured_channels)
    m = len(stand.measured_channels)
    raw = np.array([[0] * m, [4095] * m, list(range(0, 256 * m, 256))], dtype=np.uint16)
    polynomials = [c.calibration or () for c in stand.measured_channels]
    values = calibration.apply(raw)
    assert values.dtype == np.float64
    np.testing.assert_allclose(values, reference(raw, polynomials), rtol=1e-12)
    assert values[1, calibration.names.index("P1")] == pytest.approx(4095 * 0.02442)
    assert values[0, calibration.names.index("THRUST")] == pytest.approx(-100.0)


def test_mixed_degrees_are_padded() -> None:
    polynomials = [(1.0,), (-5.0, 0.1), (1.0, 2.0, 3.0), (0.0, 0.0, 0.0, 1e-6), (2.0, -1.0, 0.5), (7.0, 0.0)]
    calibration = Calibration(settings_with(polynomials))
    assert calibration.names == MEASURED
    raw = np.array([[0] * 6, [1] * 6, [10] * 6, [4095] * 6, [65535] * 6], dtype=np.uint16)
    expected = np.array(
        [
            [1.0, -5.0, 1.0, 0.0, 2.0, 7.0],
            [1.0, -4.9, 6.0, 1e-6, 1.5, 7.0],
            [1.0, -4.0, 321.0, 1e-3, 42.0, 7.0],
        ]
    )
    values = calibration.apply(raw)
    np.testing.assert_allclose(values[:3], expected, rtol=1e-12)
    np.testing.assert_allclose(values, reference(raw, polynomials), rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    polynomials=st.lists(
        st.lists(st.floats(-100, 100), min_size=1, max_size=4).map(tuple), min_size=6, max_size=6
    ),
    raw=hnp.arrays(np.uint16, st.tuples(st.integers(0, 20), st.just(6))),
)
def test_matches_polyval(polynomials: list[tuple[float, ...]], raw: npt.NDArray[np.uint16]) -> None:
    values = Calibration(settings_with(polynomials)).apply(raw)
    assert values.shape == raw.shape
    np.testing.assert_allclose(values, reference(raw, polynomials), rtol=1e-9, atol=1e-6)


def test_rejects_blocks_of_the_wrong_width() -> None:
    calibration = Calibration(load_settings())
    m = len(calibration.names)
    with pytest.raises(ValueError, match="expected"):
        calibration.apply(np.zeros((4, m - 1), dtype=np.uint16))
    with pytest.raises(ValueError, match="expected"):
        calibration.apply(np.zeros(m, dtype=np.uint16))
    assert calibration.apply(np.zeros((0, m), dtype=np.uint16)).shape == (0, m)


def test_rejects_an_empty_polynomial() -> None:
    with pytest.raises(ValueError, match="empty calibration"):
        Calibration(settings_with([(0.0, 1.0), (), (0.0, 1.0), (0.0, 1.0), (0.0, 1.0), (0.0, 1.0)]))
