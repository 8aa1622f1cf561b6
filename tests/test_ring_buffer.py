"""RingBuffer against a plain list model, across wrap-around, and under a concurrent writer."""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Callable, Iterator
from unittest.mock import patch

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.acquisition import ring_buffer
from services.acquisition.ring_buffer import Reduced, RingBuffer, Samples

CHANNELS = 3
DT = 0.25  # t = seq * DT: exact in binary, so window thresholds compare exactly


def rows_of(seq: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    """Columns seq, -seq and seq / 2: every row says which sample it is."""
    return np.stack((seq, -seq, seq / 2), axis=1).astype(np.float32).reshape(-1, CHANNELS)


def block(first_seq: int, n: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]:
    seq = np.arange(first_seq, first_seq + n, dtype=np.int64)
    return seq.astype(np.float64) * DT, rows_of(seq)


def assert_samples(samples: Samples, expected_seq: list[int]) -> None:
    expected = np.array(expected_seq, dtype=np.int64)
    assert samples.seq.dtype == np.int64
    assert samples.t.dtype == np.float64
    assert samples.data.dtype == np.float32
    np.testing.assert_array_equal(samples.seq, expected)
    np.testing.assert_array_equal(samples.t, expected * DT)
    np.testing.assert_array_equal(samples.data, rows_of(expected))


def assert_reduced(reduced: Reduced, window: list[int], points: int) -> None:
    """Compare with brute force; bucket bounds are read back from `reduced.t`, then checked."""
    assert reduced.n_source == len(window)
    assert reduced.seq_first == window[0]
    assert reduced.seq_last == window[-1]
    n_buckets = min(points, len(window))
    assert reduced.t.shape == (n_buckets,)
    assert reduced.min.shape == reduced.max.shape == (n_buckets, CHANNELS)
    where = {seq: i for i, seq in enumerate(window)}
    starts = [where[round(t / DT)] for t in reduced.t]
    bounds = [*starts, len(window)]
    sizes = np.diff(bounds)
    assert starts[0] == 0
    assert sizes.min() >= 1
    assert sizes.max() - sizes.min() <= 1  # equal sample counts, to one sample
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        rows = rows_of(np.array(window[lo:hi], dtype=np.int64))
        np.testing.assert_array_equal(reduced.min[i], rows.min(axis=0))
        np.testing.assert_array_equal(reduced.max[i], rows.max(axis=0))


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(1, 12),
    blocks=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 4)), max_size=20),
    data=st.data(),
)
def test_matches_list_model_across_wrap_around(
    capacity: int, blocks: list[tuple[int, int]], data: st.DataObject
) -> None:
    # min/max go through reduceat in pieces of at most _REDUCE_CHUNK rows: make pieces small here too
    chunk = data.draw(st.integers(1, 5), label="reduce chunk")
    with patch.object(ring_buffer, "_REDUCE_CHUNK", chunk):
        check_against_model(RingBuffer(capacity, CHANNELS), blocks, data)


def check_against_model(ring: RingBuffer, blocks: list[tuple[int, int]], data: st.DataObject) -> None:
    capacity = ring.capacity
    model: list[int] = []  # seq of every sample ever appended, in order
    cursor = 0  # a streaming reader's position
    next_seq = 0
    for n, gap in blocks:
        first_seq = next_seq + gap
        ring.append(first_seq, *block(first_seq, n))
        if n:
            model.extend(range(first_seq, first_seq + n))
            next_seq = first_seq + n
        held = model[-capacity:]
        oldest = len(model) - len(held)

        assert ring.written == len(model)
        assert ring.size == len(held)
        assert ring.first_seq == (held[0] if held else None)
        assert ring.last_seq == (held[-1] if held else None)

        seq_from = data.draw(st.integers(-2, next_seq + 2), label="seq_from")
        seq_to = data.draw(st.integers(-2, next_seq + 2), label="seq_to")
        limit = data.draw(st.integers(0, capacity + 2), label="max_samples")
        expected = [s for s in held if seq_from <= s < seq_to][:limit]
        assert_samples(ring.by_seq(seq_from, seq_to, limit), expected)

        limit = data.draw(st.integers(0, capacity + 2), label="read_from max_samples")
        skipped, new_cursor, samples = ring.read_from(cursor, limit)
        start = max(cursor, oldest)
        expected = model[start : min(len(model), start + limit)]
        assert skipped == start - cursor
        assert new_cursor == start + len(expected)
        assert_samples(samples, expected)
        cursor = new_cursor

        seconds = data.draw(st.integers(0, 4 * (capacity + 2)), label="quarter seconds") * DT
        points = data.draw(st.integers(1, capacity + 2), label="points")
        reduced = ring.last_seconds_reduced(seconds, points)
        if held:
            window = [s for s in held if s * DT >= held[-1] * DT - seconds]
            assert_reduced(reduced, window, points)
        else:
            assert reduced.n_source == 0
            assert (reduced.seq_first, reduced.seq_last) == (-1, -1)
            assert reduced.t.shape == (0,)
            assert reduced.min.shape == reduced.max.shape == (0, CHANNELS)


def test_block_larger_than_capacity_keeps_its_tail() -> None:
    ring = RingBuffer(5, CHANNELS)
    ring.append(100, *block(100, 3))
    ring.append(200, *block(200, 12))
    assert ring.written == 15
    assert ring.size == 5
    assert (ring.first_seq, ring.last_seq) == (207, 211)
    assert_samples(ring.by_seq(0, 1000, 100), list(range(207, 212)))
    skipped, position, samples = ring.read_from(3, 100)
    assert (skipped, position) == (7, 15)
    assert_samples(samples, list(range(207, 212)))


def test_reduction_of_many_samples_keeps_spikes() -> None:
    ring = RingBuffer(1000, 2)
    t = np.arange(1500, dtype=np.float64) * 1e-3
    values = np.zeros((1500, 2), dtype=np.float32)
    values[1234, 0] = 50.0
    values[1235, 1] = -7.0
    ring.append(0, t[:700], values[:700])
    ring.append(700, t[700:], values[700:])  # the window (last 1000 samples) wraps
    reduced = ring.last_seconds_reduced(10.0, 10)
    assert reduced.n_source == 1000
    assert (reduced.seq_first, reduced.seq_last) == (500, 1499)
    np.testing.assert_array_equal(reduced.t, (500 + 100 * np.arange(10)) * 1e-3)
    spike = (1234 - 500) // 100
    expected_max = np.zeros((10, 2), dtype=np.float32)
    expected_max[spike, 0] = 50.0
    expected_min = np.zeros((10, 2), dtype=np.float32)
    expected_min[spike, 1] = -7.0
    np.testing.assert_array_equal(reduced.max, expected_max)
    np.testing.assert_array_equal(reduced.min, expected_min)


def test_reduction_ignores_nan_and_keeps_all_nan_buckets_nan() -> None:
    ring = RingBuffer(8, 2)
    values = np.array([[1, np.nan], [np.nan, np.nan], [np.nan, np.nan], [np.nan, np.nan]], np.float32)
    ring.append(0, np.arange(4, dtype=np.float64), values)
    reduced = ring.last_seconds_reduced(10.0, 2)
    np.testing.assert_array_equal(reduced.min, [[1, np.nan], [np.nan, np.nan]])
    np.testing.assert_array_equal(reduced.max, [[1, np.nan], [np.nan, np.nan]])


def test_rejects_bad_blocks_and_arguments() -> None:
    ring = RingBuffer(8, CHANNELS)
    ring.append(10, *block(10, 3))
    with pytest.raises(ValueError, match="does not follow"):
        ring.append(12, *block(12, 1))
    with pytest.raises(ValueError, match="does not follow"):
        ring.append(5, *block(5, 1))
    t, data = block(20, 2)
    with pytest.raises(ValueError, match="shapes"):
        ring.append(20, t, data[:, :2])
    with pytest.raises(ValueError, match="shapes"):
        ring.append(20, t[:1], data)
    with pytest.raises(ValueError, match="position"):
        ring.read_from(4, 10)
    with pytest.raises(ValueError, match="position"):
        ring.read_from(-1, 10)
    with pytest.raises(ValueError, match="max_samples"):
        ring.by_seq(0, 10, -1)
    with pytest.raises(ValueError, match="seconds"):
        ring.last_seconds_reduced(float("nan"), 10)
    with pytest.raises(ValueError, match="points"):
        ring.last_seconds_reduced(1.0, 0)
    with pytest.raises(ValueError, match="capacity"):
        RingBuffer(0, 3)
    assert_samples(ring.by_seq(0, 100, 100), [10, 11, 12])  # the refused blocks left no trace


def test_memory_of_ten_minutes_at_10_khz() -> None:
    assert RingBuffer.required_nbytes(6_000_000, 22) == 6_000_000 * (8 + 8 + 22 * 4)  # 624 MB
    assert RingBuffer(100, 22).nbytes == RingBuffer.required_nbytes(100, 22)


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("frequent_thread_switches")
def test_concurrent_readers_never_see_torn_rows() -> None:
    """Every column of every row equals its seq (and t), so a row mixing two samples shows."""
    capacity, channels = 97, 6
    ring = RingBuffer(capacity, channels)
    done = threading.Event()
    failures: list[BaseException] = []
    reads = {"read_from": 0, "by_seq": 0, "reduced": 0}

    def write() -> None:
        rng = np.random.default_rng(7)
        seq = 0
        for _ in range(20000):
            n = int(rng.integers(1, 2 * capacity))  # sometimes more than the whole ring
            seq += int(rng.integers(0, 3))
            values = np.arange(seq, seq + n, dtype=np.float64)
            ring.append(seq, values, np.repeat(values.astype(np.float32)[:, None], channels, axis=1))
            seq += n
        done.set()

    def check_rows(samples: Samples) -> None:
        assert np.all(np.diff(samples.seq) > 0)
        np.testing.assert_array_equal(samples.t, samples.seq)
        np.testing.assert_array_equal(samples.data, np.repeat(samples.seq[:, None], channels, axis=1))

    def stream() -> None:
        position = 0
        while not done.is_set():
            skipped, new_position, samples = ring.read_from(position, 40)
            assert new_position - position == skipped + len(samples.seq)
            check_rows(samples)
            position = new_position
            reads["read_from"] += 1

    def history() -> None:
        while not done.is_set():
            last = ring.last_seq
            if last is None:
                continue
            samples = ring.by_seq(last - capacity - 10, last + 1, capacity)
            check_rows(samples)
            assert len(samples.seq) == 0 or samples.seq[0] >= last - capacity - 10
            reads["by_seq"] += 1

    def reduced() -> None:
        while not done.is_set():
            r = ring.last_seconds_reduced(1e9, 7)
            if r.n_source == 0:
                continue
            assert r.n_source <= capacity
            assert r.t[0] == r.seq_first
            np.testing.assert_array_equal(r.min, np.repeat(r.t[:, None], channels, axis=1))
            assert np.all(r.max == r.max[:, :1])
            assert np.all(r.max[:-1, 0] < r.t[1:])
            assert r.max[-1, 0] == r.seq_last
            reads["reduced"] += 1

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                failures.append(exc)
                done.set()

        return run

    threads = [threading.Thread(target=guarded(f)) for f in (write, stream, stream, history, reduced)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures[0]
    assert all(count > 0 for count in reads.values()), reads
