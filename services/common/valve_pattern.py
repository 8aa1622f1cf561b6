"""Valve patterns and masks: the one parser from "010000000" (or [0, 1, 0, ...]) to a bit mask and back.

Digit i (left to right) of a pattern is valve i of `settings.valves`, and so is bit i of a mask;
1 = open. Digits are the characters "0"/"1" or the integers 0/1 (never booleans, never other values).
"""

from __future__ import annotations

from collections.abc import Sequence


def parse_pattern(pattern: str | Sequence[int], count: int, names: Sequence[str] = ()) -> int:
    """The mask of a pattern of `count` digits; ValueError (naming `names`, when given) otherwise.

    The ValueError's text never repeats the pattern: it may go back to whoever sent it."""
    digits = list(pattern)
    if len(digits) != count:
        valves = f" (one per valve: {', '.join(names)})" if names else ""
        raise ValueError(f"valve pattern has {len(digits)} digits, expected {count}{valves}")
    if isinstance(pattern, str):
        bits = [{"0": 0, "1": 1}.get(d, -1) for d in pattern]
    else:
        bits = [d if type(d) is int and d in (0, 1) else -1 for d in digits]
    if -1 in bits:
        raise ValueError("valve pattern may only contain 0 and 1 (not true/false)")
    return sum(bit << i for i, bit in enumerate(bits))


def mask_bits(mask: int, count: int) -> list[int]:
    """The digits of `mask` for `count` valves, as integers; ValueError when out of range."""
    if not 0 <= mask < 1 << count:
        raise ValueError(f"valve mask {mask} is out of range for {count} valves")
    return [(mask >> i) & 1 for i in range(count)]


def format_pattern(mask: int, count: int) -> str:
    """The pattern of a mask: "010000000"."""
    return "".join(str(bit) for bit in mask_bits(mask, count))
