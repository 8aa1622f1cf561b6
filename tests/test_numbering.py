"""Sample numbering: seq follows the device counter (gaps stay gaps), device resets never go backwards."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.acquisition.numbering import SampleNumbering

RATE = 10_000.0


def test_contiguous_blocks_get_contiguous_seq_and_device_time() -> None:
    numbering = SampleNumbering()
    first = numbering.device_block(counter=500, t_us=50_000, n=20, rate_hz=RATE, now=1000.0)
    second = numbering.device_block(counter=520, t_us=52_000, n=20, rate_hz=RATE, now=1000.002)
    assert (first.first_seq, second.first_seq) == (0, 20)
    # the anchor puts the first block's last sample at `now`; later times follow the device clock
    assert first.t[-1] == pytest.approx(1000.0)
    np.testing.assert_allclose(np.diff(np.concatenate([first.t, second.t])), 1 / RATE)


def test_device_counter_gap_is_a_seq_gap() -> None:
    numbering = SampleNumbering()
    numbering.device_block(counter=0, t_us=0, n=20, rate_hz=RATE, now=1.0)
    after_gap = numbering.device_block(counter=120, t_us=12_000, n=20, rate_hz=RATE, now=1.1)
    assert after_gap.first_seq == 120
    assert numbering.next_seq == 140
    assert numbering.lost_samples == 100  # counted: the samples the device took that never arrived


def test_device_reset_rebases_without_going_backwards() -> None:
    numbering = SampleNumbering()
    numbering.device_block(counter=10_000, t_us=1_000_000, n=20, rate_hz=RATE, now=5.0)
    reset = numbering.device_block(counter=0, t_us=0, n=20, rate_hz=RATE, now=6.0)
    assert reset.first_seq == 20
    assert numbering.device_resets == 1
    assert numbering.lost_samples == 0  # what a resetting device took before is unknown
    assert reset.t[-1] == pytest.approx(6.0)


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(1, 40), st.booleans()), min_size=1, max_size=50))
def test_seq_is_strictly_increasing_whatever_the_device_does(blocks: list[tuple[int, int, bool]]) -> None:
    numbering = SampleNumbering()
    counter, last_seq = 1_000, -1
    for skip, n, reset in blocks:
        counter = 0 if reset else counter + skip
        numbered = numbering.device_block(counter, counter * 100, n, RATE, now=float(counter))
        assert numbered.first_seq > last_seq
        last_seq = numbered.first_seq + n - 1
        counter += n


def test_host_numbering_counts_lines() -> None:
    numbering = SampleNumbering()
    assert numbering.host_block(3) == 0
    assert numbering.host_block(2) == 3
    assert numbering.next_seq == 5


def _stream(
    numbering: SampleNumbering, seconds: float, delay_s: list[float], drift: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Feed 20-sample blocks; block i arrives `delay_s[i % len]` after its last sample was taken.

    Returns (true host time of each sample, the time numbering assigned)."""
    truth, assigned = [], []
    n, blocks = 20, int(seconds * RATE / 20)
    for i in range(blocks):
        counter = i * n
        device_us = int(counter / RATE * (1 + drift) * 1e6)  # a device clock running fast by `drift`
        true_t = 1000.0 + (counter + np.arange(n)) / RATE
        numbered = numbering.device_block(
            counter, device_us, n, RATE, now=true_t[-1] + delay_s[i % len(delay_s)]
        )
        truth.append(true_t)
        assigned.append(numbered.t)
    return np.concatenate(truth), np.concatenate(assigned)


def test_a_late_first_block_is_corrected_by_slewing_not_stepping() -> None:
    # the first block is 100 ms of backlog, every later one arrives within 1-3 ms
    truth, assigned = _stream(SampleNumbering(), 5.0, [0.100] + [0.001, 0.003, 0.002] * 100)
    assert (np.diff(assigned) > 0).all()
    assert abs(assigned[-1] - truth[-1]) < 0.0015  # converged to the fastest delivery


def test_clock_drift_is_followed() -> None:
    truth, assigned = _stream(SampleNumbering(), 30.0, [0.002, 0.004], drift=200e-6)
    assert (np.diff(assigned) > 0).all()
    assert abs(assigned[-1] - truth[-1]) < 0.003  # 200 ppm would be 6 ms off by now


@given(st.lists(st.floats(0, 0.2), min_size=1, max_size=40))
def test_time_is_strictly_increasing_whatever_the_delays(delays: list[float]) -> None:
    _truth, assigned = _stream(SampleNumbering(), 0.2, delays)
    assert (np.diff(assigned) > 0).all()
