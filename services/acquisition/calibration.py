"""Raw ADC counts to engineering units: one polynomial per measured channel (from stand.yaml)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from services.common.settings import Settings


class Calibration:
    """The calibration polynomials of `settings.measured_channels`, in that (column) order.

    Coefficients are ascending powers of the raw count. They are stored as one matrix padded with
    zeros to the highest degree, so `apply` evaluates every channel at once by Horner's scheme.
    """

    def __init__(self, settings: Settings) -> None:
        channels = settings.measured_channels
        self.names = tuple(c.name for c in channels)
        polynomials: list[tuple[float, ...]] = []
        for channel in channels:
            if not channel.calibration:
                raise ValueError(f"channel {channel.name} has an empty calibration polynomial")
            polynomials.append(channel.calibration)
        degree = max(len(p) for p in polynomials) - 1
        self._coefficients = np.zeros((degree + 1, len(channels)))  # row k: coefficient of raw**k
        for column, polynomial in enumerate(polynomials):
            self._coefficients[: len(polynomial), column] = polynomial

    def apply(self, raw: npt.NDArray[np.uint16]) -> npt.NDArray[np.float64]:
        """Engineering values (n, m) of raw counts (n, m), m = the number of measured channels."""
        if raw.ndim != 2 or raw.shape[1] != len(self.names):
            raise ValueError(
                f"raw block has shape {raw.shape}, expected (n, {len(self.names)}) for channels {self.names}"
            )
        x = raw.astype(np.float64)
        values = np.empty_like(x)
        values[:] = self._coefficients[-1]
        for coefficient in self._coefficients[-2::-1]:
            values *= x
            values += coefficient
        return values
