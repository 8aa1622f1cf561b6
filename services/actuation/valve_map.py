"""Valve patterns: the stand's valve order turned into bit masks and back.

Bit i of a mask is valve i of `settings.valves`, and digit i (left to right) of a pattern such as
"010000000" (= GOX1 open on the shipped stand). Names are upper case (`GOX1`), roles lower case
(`isolation`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import get_args

from services.common.settings import Settings, ValveRole

_ROLES = frozenset(get_args(ValveRole))


class ValveMap:
    def __init__(self, settings: Settings) -> None:
        self.names: tuple[str, ...] = settings.valve_names
        self._roles = tuple(v.role for v in settings.valves)
        self._index = {name: i for i, name in enumerate(self.names)}

    @property
    def count(self) -> int:
        return len(self.names)

    def parse(self, pattern: str | Sequence[int]) -> int:
        """A pattern ("010000000" or [0, 1, 0, ...], one digit per valve, 1 = open) as a mask.

        The ValueError's text never repeats the pattern (it goes back to whoever sent it)."""
        digits = list(pattern)
        if len(digits) != self.count:
            raise ValueError(
                f"valve pattern has {len(digits)} digits, expected {self.count} "
                f"(one per valve: {', '.join(self.names)})"
            )
        if isinstance(pattern, str):
            bits = [{"0": 0, "1": 1}.get(d, -1) for d in pattern]
        else:
            bits = [d if type(d) is int and d in (0, 1) else -1 for d in digits]
        if -1 in bits:
            raise ValueError("valve pattern may only contain 0 and 1 (not true/false)")
        return sum(bit << i for i, bit in enumerate(bits))

    def format(self, mask: int) -> str:
        """The pattern of a mask: "010000000"."""
        return "".join(str(bit) for bit in self.as_list(mask))

    def as_list(self, mask: int) -> list[int]:
        self._check(mask)
        return [(mask >> i) & 1 for i in range(self.count)]

    def mask_of(self, names_or_roles: Iterable[str]) -> int:
        """The mask of these valves: a valve by name (upper case), or every valve of a role (lower case)."""
        mask = 0
        for item in names_or_roles:
            if item in self._index:
                mask |= 1 << self._index[item]
            elif item in _ROLES:
                mask |= sum(1 << i for i, role in enumerate(self._roles) if role == item)
            else:
                raise ValueError(
                    f"unknown valve or role {item!r} (valves: {', '.join(self.names)}; "
                    f"roles: {', '.join(sorted(_ROLES))})"
                )
        return mask

    def open_names(self, mask: int) -> list[str]:
        return [name for name, bit in zip(self.names, self.as_list(mask), strict=True) if bit]

    def with_valve(self, mask: int, name: str, open: bool) -> int:
        """`mask` with one valve (by name) opened or closed."""
        if name not in self._index:
            raise ValueError(f"unknown valve {name!r} (valves: {', '.join(self.names)})")
        self._check(mask)
        bit = 1 << self._index[name]
        return mask | bit if open else mask & ~bit

    def _check(self, mask: int) -> None:
        if not 0 <= mask < 1 << self.count:
            raise ValueError(f"valve mask {mask} is out of range for {self.count} valves")
