"""Valve patterns: the stand's valve order turned into bit masks and back (services.common.valve_pattern).

Bit i of a mask is valve i of `settings.valves`, and digit i (left to right) of a pattern such as
"010000000" (= GOX1 open on the shipped stand). Names are upper case (`GOX1`), roles lower case
(`isolation`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import get_args

from services.common.settings import Settings, ValveRole
from services.common.valve_pattern import format_pattern, mask_bits, parse_pattern

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
        return parse_pattern(pattern, self.count, self.names)

    def format(self, mask: int) -> str:
        """The pattern of a mask: "010000000"."""
        return format_pattern(mask, self.count)

    def as_list(self, mask: int) -> list[int]:
        return mask_bits(mask, self.count)

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
        mask_bits(mask, self.count)  # range check
        bit = 1 << self._index[name]
        return mask | bit if open else mask & ~bit
