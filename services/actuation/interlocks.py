"""Interlocks: the configured rules that refuse a valve pattern, manual or sequenced.

A rule lists valves by name or role and trips when a pattern opens any (`match: any`) or all
(`match: all`) of them. With `requires_armed: true` (the default) it trips only while the stand is not
armed; with `requires_armed: false` the combination is forbidden in every state.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.actuation.valve_map import ValveMap
from services.common.settings import Interlock, Settings


@dataclass(frozen=True)
class Refusal:
    rule: str
    reason: str

    def __str__(self) -> str:
        return f"refused by interlock {self.rule}: {self.reason}"


class Interlocks:
    def __init__(self, settings: Settings, valve_map: ValveMap) -> None:
        self._settings = settings
        self._valves = valve_map
        self._rules: tuple[tuple[Interlock, int], ...] = tuple(
            (rule, valve_map.mask_of(rule.valves)) for rule in settings.interlocks
        )

    def check(self, mask: int, *, armed: bool) -> Refusal | None:
        """The first rule (in configuration order) that refuses `mask`, or None when it is allowed."""
        for rule, valves in self._rules:
            if rule.requires_armed and armed:
                continue
            opened = mask & valves
            if (opened != 0) if rule.match == "any" else (opened == valves):
                return Refusal(rule.name, rule.reason)
        return None

    def validate_sequences(self) -> None:
        """Raise ValueError naming every sequence step the interlocks would refuse when it runs.

        Steps that open or close valves by name are checked as if the sequence started all closed (at
        run time every step is checked again). A sequence without `requires_armed` may run unarmed,
        so its steps are checked as unarmed. A
        sequence with it, and the abort sequence (exempt from `requires_armed` rules), are checked as
        armed: only rules that hold in every state can refuse them.
        """
        problems = []
        for name, sequence in self._settings.sequences.items():
            armed = sequence.abort or sequence.requires_armed
            after_steps = sequence.patterns(self._valves.names)
            for i, after in enumerate(after_steps, start=1):
                if after is None:
                    continue
                mask = self._valves.mask_of(after)
                refusal = self.check(mask, armed=armed)
                if refusal is None:
                    continue
                pattern = self._valves.format(mask)
                where = f"step {i}/{len(sequence.steps)} ({pattern}) would be {refusal}"
                if armed:
                    problems.append(f"sequence {name!r} {where}")
                else:
                    problems.append(
                        f"sequence {name!r} may run unarmed, but {where} (set requires_armed: true)"
                    )
        if problems:
            raise ValueError("sequences refused by the interlocks:\n" + "\n".join(f"  {p}" for p in problems))

    def validate_guards(self) -> None:
        """Raise ValueError unless opening any isolation valve or igniter alone is refused while not armed.

        The command authority's guarantees (nothing dangerous open in idle) rest on these rules.
        """
        unguarded = [
            self._valves.names[i]
            for i in self._settings.valves_with_roles("isolation", "igniter")
            if self.check(1 << i, armed=False) is None
        ]
        if unguarded:
            raise ValueError(
                f"no interlock keeps {', '.join(unguarded)} closed while the stand is not armed: "
                "add a rule with valves [isolation] / [igniter] (config/stand.yaml, interlocks)"
            )
