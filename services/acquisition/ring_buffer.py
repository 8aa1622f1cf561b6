"""The in-memory history of a session: a preallocated ring of samples, one writer, lock-free readers.

A sample is `seq` (int64, strictly increasing, gaps are lost samples), `t` (UNIX seconds, float64) and
one float32 value per channel. Samples are addressed by *logical position*: the n-th sample ever
appended has position n - 1, and lives in row `position % capacity` until it is overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.common.minmax import merge_runs, runs_minmax

_SEQ = np.dtype(np.int64)
_T = np.dtype(np.float64)
_DATA = np.dtype(np.float32)
# rows per reduceat call: reduceat holds the GIL, this keeps the writer thread waiting a few ms at most
_REDUCE_CHUNK = 1 << 16


@dataclass(frozen=True, eq=False, slots=True)
class Samples:
    """Consecutive samples copied out of the buffer: safe to keep while the writer moves on."""

    seq: npt.NDArray[np.int64]  # (n,)
    t: npt.NDArray[np.float64]  # (n,)
    data: npt.NDArray[np.float32]  # (n, channels)


@dataclass(frozen=True, eq=False, slots=True)
class Reduced:
    """A min/max envelope of `n_source` samples in buckets of (almost) equal sample count.

    `min` and `max` are per bucket and channel, so a one-sample spike survives the reduction. When
    there is nothing to reduce (empty buffer) `n_source` is 0, the arrays are empty and `seq_first` and
    `seq_last` are -1.
    """

    seq_first: int
    seq_last: int
    n_source: int
    t: npt.NDArray[np.float64]  # (buckets,) time of each bucket's first sample
    min: npt.NDArray[np.float32]  # (buckets, channels)
    max: npt.NDArray[np.float32]  # (buckets, channels)


class RingBuffer:
    """The last `capacity` samples of `n_channels` channels, preallocated (`np.empty`, so pages are only
    touched as the ring fills).

    Concurrency contract: exactly one thread calls `append`; any number of threads read, with no lock
    on either side.

    - The writer first announces the logical end of the block it is about to write (`_reserved`),
      copies the block into at most two slices per array, and only then publishes the new `written`.
      Each announcement is a single int assignment.
    - A reader takes `written` as the end of the data, copies what it needs, and then reads
      `_reserved`: any position below `_reserved - capacity` may have been overwritten while it was
      copying (seqlock style). `read_from` trims such rows and reports them as skipped; `by_seq` and
      `last_seconds_reduced` retry, each attempt starting further from the oldest edge, so they
      converge even while the writer keeps going.
    - Every result is a copy that never mixes rows of two different samples.

    This relies on CPython's global interpreter lock to order the int stores and loads against the
    array copies; a free-threaded interpreter would need explicit memory fences.

    `t` is assumed non-decreasing with position (the acquisition stamps it from the device clock):
    `last_seconds_reduced` locates its window by bisection.
    """

    def __init__(self, capacity: int, n_channels: int) -> None:
        if capacity < 1 or n_channels < 1:
            raise ValueError(f"capacity and n_channels must be >= 1, got {capacity}, {n_channels}")
        self._capacity = capacity
        self._n_channels = n_channels
        self._seq = np.empty(capacity, _SEQ)
        self._t = np.empty(capacity, _T)
        self._data = np.empty((capacity, n_channels), _DATA)
        self._reserved = 0  # logical end of the block being written; == _written between appends
        self._written = 0

    @staticmethod
    def required_nbytes(capacity: int, n_channels: int) -> int:
        """Memory a buffer of this shape holds once full, without allocating one."""
        return capacity * (_SEQ.itemsize + _T.itemsize + n_channels * _DATA.itemsize)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def n_channels(self) -> int:
        return self._n_channels

    @property
    def written(self) -> int:
        """Total samples ever appended: the logical position one past the newest sample."""
        return self._written

    @property
    def size(self) -> int:
        """Samples currently held."""
        return min(self._written, self._capacity)

    @property
    def nbytes(self) -> int:
        return self._seq.nbytes + self._t.nbytes + self._data.nbytes

    @property
    def first_seq(self) -> int | None:
        """`seq` of the oldest sample held, None when empty."""
        while True:
            written = self._written
            if written == 0:
                return None
            oldest = max(0, written - self._capacity)
            seq = int(self._seq[oldest % self._capacity])
            if oldest >= self._reserved - self._capacity:
                return seq

    @property
    def last_seq(self) -> int | None:
        """`seq` of the newest sample, None when empty."""
        while True:
            written = self._written
            if written == 0:
                return None
            seq = int(self._seq[(written - 1) % self._capacity])
            if written - 1 >= self._reserved - self._capacity:
                return seq

    def append(self, first_seq: int, t: npt.NDArray[np.float64], data: npt.NDArray[np.float32]) -> None:
        """Append one contiguous block: sample i has `seq` first_seq + i.

        `first_seq` must be greater than `last_seq` (a gap means lost samples). A block longer than the
        capacity keeps its tail. Only the writer thread may call this.
        """
        n = len(t)
        if t.shape != (n,) or data.shape != (n, self._n_channels):
            raise ValueError(
                f"block shapes t{t.shape}, data{data.shape} do not match ({n},) and ({n}, {self._n_channels})"
            )
        last_seq = self.last_seq
        if last_seq is not None and first_seq <= last_seq:
            raise ValueError(f"first_seq {first_seq} does not follow the last seq {last_seq}")
        if n == 0:
            return
        kept = min(n, self._capacity)
        dropped = n - kept
        end = self._written + n
        head, tail = self._slices(end - kept, end)
        split: int = head.stop - head.start
        seq = np.arange(first_seq + dropped, first_seq + n, dtype=_SEQ)
        self._reserved = end
        for ring, block in ((self._seq, seq), (self._t, t[dropped:]), (self._data, data[dropped:])):
            ring[head] = block[:split]
            ring[tail] = block[split:]
        self._written = end

    def read_from(self, position: int, max_samples: int) -> tuple[int, int, Samples]:
        """Read up to `max_samples` samples from a streaming reader's cursor `position`.

        Returns `(skipped, new_position, samples)`. When the writer has overwritten samples the reader
        had not read yet, reading resumes at the oldest valid sample and `skipped` counts the lost ones.
        `new_position` never exceeds `written`, and exceeds `position` whenever `position < written`.
        """
        written = self._written
        if not 0 <= position <= written:
            raise ValueError(f"position {position} outside [0, written={written}]")
        if max_samples < 0:
            raise ValueError(f"max_samples must be >= 0, got {max_samples}")
        start = max(position, written - self._capacity)
        stop = min(written, start + max_samples)
        copied = self._copy(start, stop)
        valid = min(max(start, self._reserved - self._capacity), stop)
        if valid > start:  # overwritten during the copy
            cut = valid - start
            copied = Samples(copied.seq[cut:], copied.t[cut:], copied.data[cut:])
        return valid - position, stop, copied

    def by_seq(self, seq_from: int, seq_to: int, max_samples: int) -> Samples:
        """The first `max_samples` samples held with `seq_from <= seq < seq_to`."""
        if max_samples < 0:
            raise ValueError(f"max_samples must be >= 0, got {max_samples}")
        margin = 0
        while True:
            written = self._written
            lowest = min(written, max(0, written - self._capacity) + margin)
            start = self._bisect(self._seq, seq_from, lowest, written)
            stop = self._bisect(self._seq, seq_to, start, min(written, start + max_samples))
            samples = self._copy(start, stop)
            reserved = self._reserved
            if start >= reserved - self._capacity:
                return samples
            margin = max(2 * margin, 2 * (reserved - written))

    def last_seconds(self, seconds: float, max_samples: int) -> Samples:
        """A copy of the samples with `t >= t_newest - seconds`, at most the newest `max_samples`."""
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        if not seconds >= 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        margin = 0
        while True:
            written = self._written
            if written == 0:
                return Samples(np.empty(0, _SEQ), np.empty(0, _T), np.empty((0, self._n_channels), _DATA))
            newest = written - 1
            lowest = min(newest, max(0, written - self._capacity + margin, written - max_samples))
            threshold = float(self._t[newest % self._capacity]) - seconds
            start = min(self._bisect(self._t, threshold, lowest, written), newest)
            samples = self._copy(start, written)
            if start >= self._reserved - self._capacity:
                return samples
            margin = max(2 * margin, 2 * (self._reserved - written))

    def last_seconds_reduced(self, seconds: float, points: int) -> Reduced:
        """Samples with `t >= t_newest - seconds`, reduced to at most `points` min/max buckets.

        Buckets hold equal sample counts (to one sample); with fewer samples than `points`, each sample
        is its own bucket (min == max).
        """
        if not seconds >= 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        if points < 1:
            raise ValueError(f"points must be >= 1, got {points}")
        margin = 0
        while True:
            written = self._written
            if written == 0:
                empty = np.empty((0, self._n_channels), _DATA)
                return Reduced(-1, -1, 0, np.empty(0, _T), empty, empty.copy())
            newest = written - 1
            lowest = min(newest, max(0, written - self._capacity) + margin)
            threshold = float(self._t[newest % self._capacity]) - seconds
            start = min(self._bisect(self._t, threshold, lowest, written), newest)
            n = written - start
            buckets = min(points, n)
            offsets = (np.arange(buckets, dtype=np.int64) * n) // buckets
            minimum, maximum = self._min_max(start, written, offsets)
            reduced = Reduced(
                seq_first=int(self._seq[start % self._capacity]),
                seq_last=int(self._seq[newest % self._capacity]),
                n_source=n,
                t=self._t[(start + offsets) % self._capacity],
                min=minimum,
                max=maximum,
            )
            reserved = self._reserved
            if start >= reserved - self._capacity:
                return reduced
            margin = max(2 * margin, 2 * (reserved - written))

    def _slices(self, start: int, stop: int) -> tuple[slice, slice]:
        """The rows holding logical positions [start, stop), in order (stop - start <= capacity)."""
        row = start % self._capacity
        head = min(stop - start, self._capacity - row)
        return slice(row, row + head), slice(0, stop - start - head)

    def _copy(self, start: int, stop: int) -> Samples:
        head, tail = self._slices(start, stop)
        return Samples(
            np.concatenate((self._seq[head], self._seq[tail])),
            np.concatenate((self._t[head], self._t[tail])),
            np.concatenate((self._data[head], self._data[tail])),
        )

    def _bisect(
        self, ring: npt.NDArray[np.int64] | npt.NDArray[np.float64], x: float, lo: int, hi: int
    ) -> int:
        """The first position in [lo, hi) whose value in `ring` is >= x, or hi: O(log n).

        Values must be non-decreasing with position. Under concurrent overwriting, callers trust the
        answer only if it is not below `_reserved - capacity` read afterwards: probes at or above that
        position read stable values, and a probe below it can only have put the answer below it
        (caught) or moved it past rows that are gone anyway.
        """
        head, tail = self._slices(lo, hi)
        split: int = head.stop - head.start
        if tail.stop > 0 and ring[0] < x:  # row 0 holds the first position after the wrap
            return lo + split + int(np.searchsorted(ring[tail], x))
        return lo + int(np.searchsorted(ring[head], x))

    def _min_max(
        self, start: int, stop: int, offsets: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Per-bucket min and max of the rows of positions [start, stop), buckets starting at `offsets`
        (relative to start, strictly increasing, the first 0).

        `reduceat` holds the GIL, so the rows go through it in pieces that never cross the wrap and
        hold at most `_REDUCE_CHUNK` rows, reduced into sub-buckets (bucket starts plus piece starts);
        a last `reduceat` merges the sub-buckets into buckets. Min and max share each piece while it is
        in cache. NaN samples follow `services.common.minmax`'s rule (ignored; all-NaN gives NaN).
        """
        n = stop - start
        head, _ = self._slices(start, stop)
        pieces = np.unique(np.concatenate((np.arange(0, n, _REDUCE_CHUNK), [head.stop - head.start, n])))
        cuts = np.union1d(offsets, pieces[:-1])  # sub-bucket starts
        piece_cuts = np.searchsorted(cuts, pieces).tolist()  # each piece's first sub-bucket
        minima: list[npt.NDArray[np.float32]] = []
        maxima: list[npt.NDArray[np.float32]] = []
        for lo, hi, first, last in zip(
            pieces[:-1].tolist(), pieces[1:].tolist(), piece_cuts[:-1], piece_cuts[1:], strict=True
        ):
            row = (start + lo) % self._capacity
            rows = self._data[row : row + hi - lo]
            sub_starts = cuts[first:last] - lo
            low, high = runs_minmax(rows, sub_starts)
            minima.append(low)
            maxima.append(high)
        return merge_runs(np.concatenate(minima), np.concatenate(maxima), np.searchsorted(cuts, offsets))
