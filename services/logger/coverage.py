"""Which sample numbers (`seq`) of each acquisition session are already on disk.

The logger asks `new_part` before writing a batch (so a sample is never written twice, whether it
arrives live, from a repair, or both), writes only those rows, then `add`s them. `missing` names the
holes to repair. Ranges are half-open `(start, stop)` pairs, except `load`'s input, which takes the
inclusive `(first_seq, last_seq)` pairs that data files record.

Each session's coverage is a list of disjoint, non-adjacent intervals in ascending order (two
parallel lists of starts and stops, searched with `bisect`). Live telemetry extends the last interval,
which costs O(1); anything else costs O(log k) to find plus O(k) to splice, k being the number of
intervals (the number of holes plus one: small). Not thread-safe: one owner calls it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field

Range = tuple[int, int]  # (start, stop), stop exclusive


@dataclass
class _Intervals:
    starts: list[int] = field(default_factory=list)
    stops: list[int] = field(default_factory=list)


class Coverage:
    """The set of covered `seq` per session, as merged sorted intervals."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Intervals] = {}

    def add(self, session: str, first: int, n: int) -> None:
        """Mark `first .. first + n - 1` covered (overlap with what is covered already is fine)."""
        _check(first, n)
        if n == 0:
            return
        stop = first + n
        iv = self._sessions.setdefault(session, _Intervals())
        starts, stops = iv.starts, iv.stops
        if starts and starts[-1] <= first <= stops[-1]:  # the live case: extends the last interval
            stops[-1] = max(stops[-1], stop)
            return
        i = bisect_left(stops, first)  # first interval ending at or after `first` (touching merges)
        j = bisect_right(starts, stop)  # intervals before j start at or before `stop`
        if i < j:
            first = min(first, starts[i])
            stop = max(stop, stops[j - 1])
        starts[i:j] = [first]
        stops[i:j] = [stop]

    def new_part(self, session: str, first: int, n: int) -> list[Range]:
        """The sub-ranges of `first .. first + n - 1` not covered yet, ascending."""
        _check(first, n)
        stop = first + n
        iv = self._sessions.get(session)
        if n == 0:
            return []
        if iv is None or not iv.starts or first >= iv.stops[-1]:
            return [(first, stop)]
        parts: list[Range] = []
        cursor = first
        k = bisect_right(iv.stops, first)  # first interval ending after `first`
        while k < len(iv.starts) and iv.starts[k] < stop:
            if cursor < iv.starts[k]:
                parts.append((cursor, iv.starts[k]))
            cursor = iv.stops[k]
            k += 1
        if cursor < stop:
            parts.append((cursor, stop))
        return parts

    def missing(self, session: str, up_to: int) -> list[Range]:
        """The holes between the lowest covered seq and `up_to` (exclusive), ascending.

        Nothing before the lowest covered seq counts as missing: where a session starts is not known.
        """
        iv = self._sessions.get(session)
        if iv is None or not iv.starts:
            return []
        holes: list[Range] = []
        for hole_start, hole_stop in zip(iv.stops, [*iv.starts[1:], up_to], strict=True):
            if hole_start >= up_to:
                break
            if hole_start < hole_stop:
                holes.append((hole_start, min(hole_stop, up_to)))
        return holes

    def last(self, session: str) -> int | None:
        """The highest covered seq, None when nothing of the session is covered."""
        iv = self._sessions.get(session)
        return iv.stops[-1] - 1 if iv is not None and iv.stops else None

    def load(self, session: str, intervals: Iterable[tuple[int, int]]) -> None:
        """Seed from existing files: `(first_seq, last_seq)` pairs, both inclusive, in any order."""
        for first, last in intervals:
            if last < first:
                raise ValueError(f"interval ({first}, {last}): last_seq is below first_seq")
            self.add(session, first, last - first + 1)

    def intervals(self, session: str) -> list[Range]:
        """The covered ranges `(start, stop)`, stop exclusive, ascending and merged."""
        iv = self._sessions.get(session)
        return [] if iv is None else list(zip(iv.starts, iv.stops, strict=True))


def _check(first: int, n: int) -> None:
    if first < 0 or n < 0:
        raise ValueError(f"first={first}, n={n}: both must be >= 0")
