"""Continuity by `seq`: within a session consecutive samples have consecutive `seq` (docs/protocol.md).

A larger step is a gap (samples lost), an equal `seq` a duplicate (a sample recorded twice). Every
file's (session, seq, timestamp) keys are read, sorted per session and differenced, all in numpy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from services.analyze.load import SessionIds, micros

Int64Array = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Gap:
    after_seq: int  # the last sample before the gap
    next_seq: int  # the first sample after it
    after_us: int
    next_us: int

    @property
    def missing(self) -> int:
        return self.next_seq - self.after_seq - 1


@dataclass(frozen=True, slots=True)
class SessionContinuity:
    session: str
    samples: int  # rows, duplicates included
    first_seq: int
    last_seq: int
    first_us: int
    last_us: int
    gap_count: int
    missing: int  # samples lost in all gaps
    duplicates: int  # rows whose (session, seq) an earlier row already has
    largest_gaps: tuple[Gap, ...]  # the largest first

    @property
    def ok(self) -> bool:
        return self.gap_count == 0 and self.duplicates == 0


@dataclass(frozen=True, slots=True)
class Keys:
    """Row keys of recordings: session ids (see SessionIds), seq and timestamp, in read order."""

    session_names: tuple[str, ...]
    session: npt.NDArray[np.int32]
    seq: Int64Array
    t_us: Int64Array

    def order(self) -> Int64Array:
        """Row indices sorted by (session id, seq), stable: of equal keys the first read comes first.

        Recordings are usually already in seq order per session, so a stable sort by session alone is
        tried first and the full two-key sort done only when it leaves a session out of order.
        """
        order: Int64Array = np.argsort(self.session, kind="stable")
        seq = self.seq[order]
        same_session = self.session[order][1:] == self.session[order][:-1]
        if np.any(np.diff(seq)[same_session] < 0):
            order = np.lexsort((self.seq, self.session))
        return order


def read_keys(batches: Iterable[pa.RecordBatch]) -> Keys:
    """The keys of batches that hold `session`, `seq` and `timestamp`."""
    sessions = SessionIds()
    ids, seqs, times = [], [], []
    for batch in batches:
        ids.append(sessions.ids(batch.column("session")))
        seqs.append(batch.column("seq").to_numpy(zero_copy_only=False).astype(np.int64, copy=False))
        times.append(micros(batch.column("timestamp")))
    if not ids:
        empty = np.zeros(0, dtype=np.int64)
        return Keys((), np.zeros(0, dtype=np.int32), empty, empty)
    return Keys(tuple(sessions.names), np.concatenate(ids), np.concatenate(seqs), np.concatenate(times))


def check(keys: Keys, largest: int = 5) -> list[SessionContinuity]:
    """Continuity of every session, in order of first appearance."""
    if len(keys.seq) == 0:
        return []
    order = keys.order()
    session, seq, t_us = keys.session[order], keys.seq[order], keys.t_us[order]
    starts = np.flatnonzero(np.diff(session)) + 1
    bounds = zip(np.r_[0, starts], np.r_[starts, len(session)], strict=True)
    return [_session(keys.session_names[session[a]], seq[a:b], t_us[a:b], largest) for a, b in bounds]


def _session(name: str, seq: Int64Array, t_us: Int64Array, largest: int) -> SessionContinuity:
    step = np.diff(seq)
    gaps = np.flatnonzero(step > 1)
    biggest = gaps[np.argsort(-step[gaps], kind="stable")[:largest]]
    return SessionContinuity(
        session=name,
        samples=len(seq),
        first_seq=int(seq[0]),
        last_seq=int(seq[-1]),
        first_us=int(t_us.min()),
        last_us=int(t_us.max()),
        gap_count=len(gaps),
        missing=int((step[gaps] - 1).sum()),
        duplicates=int(np.count_nonzero(step == 0)),
        largest_gaps=tuple(
            Gap(int(seq[i]), int(seq[i + 1]), int(t_us[i]), int(t_us[i + 1])) for i in biggest
        ),
    )


@dataclass(frozen=True, slots=True)
class RingTail:
    """Samples of a recorded session that acquisition took after the recording's last one."""

    session: str
    recorded_last_seq: int
    ring_first_seq: int
    ring_last_seq: int

    @property
    def unrecorded(self) -> int:
        """Seqs after the recording's last, up to the ring's newest."""
        return self.ring_last_seq - self.recorded_last_seq

    @property
    def in_ring(self) -> int:
        """Of those, the ones the ring still holds (the rest it has overwritten)."""
        return self.ring_last_seq - max(self.recorded_last_seq + 1, self.ring_first_seq) + 1


def ring_tail(
    sessions: list[SessionContinuity],
    ring_session: str,
    ring_first_seq: int | None,
    ring_last_seq: int | None,
) -> RingTail | None:
    """What acquisition's ring buffer (its buffer status) says the recording of its session lacks at
    the end; None when the files do not hold that session, the ring is empty, or nothing is missing.

    A recording cannot tell by itself that it ends early (a logger killed before flushing leaves a
    file that is continuous up to where it stops); acquisition, still running the session, can.
    """
    recorded = next((s for s in sessions if s.session == ring_session), None)
    if recorded is None or ring_first_seq is None or ring_last_seq is None:
        return None
    if ring_last_seq <= recorded.last_seq:
        return None
    return RingTail(ring_session, recorded.last_seq, ring_first_seq, ring_last_seq)
