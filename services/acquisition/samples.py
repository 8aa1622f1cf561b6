"""The sample path on the serial link's thread: a device block -> numbered, calibrated rows with the
derived channels -> the ring buffer.

Binary blocks carry the device's counter and clock (numbered by SampleNumbering.device_block,
calibrated from raw counts, tared, derived channels computed from the tared values); text blocks carry
engineering values (their derived channels the firmware's) and are numbered on the host, tared, their
rate measured. A block that does not fit the configured channels is
dropped, counted and logged (throttled).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from services.acquisition.binary_protocol import RawBlock
from services.acquisition.calibration import Calibration
from services.acquisition.numbering import SampleNumbering
from services.acquisition.rate import RateEstimator
from services.acquisition.ring_buffer import RingBuffer
from services.acquisition.tare import Offsets
from services.acquisition.text_protocol import EngineeringBlock
from services.common.derived import Derivation
from services.common.logs import Throttled
from services.common.settings import Settings

log = logging.getLogger("rcs.acquisition")


class SamplePath:
    def __init__(self, settings: Settings, ring: RingBuffer) -> None:
        self.ring = ring
        self.numbering = SampleNumbering()
        self.calibration = Calibration(settings)
        self.derivation = Derivation(settings)
        self.offsets = Offsets(len(settings.channels))
        self._measured_columns = [settings.channel_names.index(c.name) for c in settings.measured_channels]
        self.rate = RateEstimator(settings.acquisition.rate_hz)
        self.block_errors = 0
        self.appended_at: float | None = None  # time.monotonic() of the last block put in the ring
        self._problems = Throttled(log)

    def append(self, block: RawBlock | EngineeringBlock) -> bool:
        """Put `block`'s samples in the ring; False if it was dropped."""
        try:
            if isinstance(block, RawBlock):
                n = len(block.raw)
                numbered = self.numbering.device_block(
                    block.counter, block.t_us, n, block.rate_hz, time.time()
                )
                offsets = self.offsets.for_block(numbered.first_seq)[self._measured_columns]
                rows = self.derivation.compute(numbered.t, self.calibration.apply(block.raw) - offsets)
                self.ring.append(numbered.first_seq, numbered.t, rows)
                self.rate.set_nominal(block.rate_hz)
            else:
                n = len(block.t)
                first_seq = self.numbering.host_block(n)
                offsets = self.offsets.for_block(first_seq)
                self.ring.append(first_seq, block.t, np.subtract(block.values, offsets, dtype=np.float32))
                self.rate.count(n, time.monotonic())
        except ValueError as exc:  # a block that does not fit the configured channels
            self.block_errors += 1
            self._problems.warning("block", "dropped a sample block: %s", exc)
            return False
        self.appended_at = time.monotonic()
        return True
