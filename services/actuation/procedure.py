"""Sequences compiled for the core: each step's valve change as masks, its waits in seconds, its phase.

Pure. The settings loader has already checked every name (valves, channels, phases, motors) and every
rule a step must follow (docs/safety.md §4); here they only become what the core runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.actuation.valve_map import ValveMap
from services.common.settings import Condition, MotorMove, Requirement, Sequence, WaitUntil


@dataclass(frozen=True)
class ValveChange:
    """A whole pattern (`whole`), or valves opened and closed with the others as they are."""

    whole: int | None = None
    opened: int = 0
    closed: int = 0

    def apply(self, current: int) -> int:
        if self.whole is not None:
            return self.whole
        return (current & ~self.closed) | self.opened


@dataclass(frozen=True)
class ProgramStep:
    change: ValveChange | None
    wait_s: float
    wait_until: WaitUntil | None
    require: tuple[Requirement, ...]
    hold: str | None
    motor: MotorMove | None
    phase: str | None  # in force from this step on (inherited from the steps before when not named)
    t0: bool


@dataclass(frozen=True)
class Program:
    name: str
    steps: tuple[ProgramStep, ...]
    abort: bool
    procedure: bool
    t0_index: int | None  # the step that starts at T-0

    def planned_s(self, start: int, stop: int) -> float:
        """The fixed waits (`wait_ms`) of steps[start:stop]: what is known of their duration."""
        return sum(step.wait_s for step in self.steps[start:stop])


def compile_program(name: str, sequence: Sequence, valves: ValveMap) -> Program:
    steps: list[ProgramStep] = []
    phase: str | None = None
    for step in sequence.steps:
        change = None
        if step.valves is not None:
            change = ValveChange(whole=valves.parse(step.valves))
        elif step.open or step.close:
            change = ValveChange(opened=valves.mask_of(step.open), closed=valves.mask_of(step.close))
        phase = step.phase or phase
        steps.append(
            ProgramStep(
                change=change,
                wait_s=step.wait_ms / 1000,
                wait_until=step.wait_until,
                require=step.require,
                hold=step.hold,
                motor=step.motor,
                phase=phase,
                t0=step.t0,
            )
        )
    return Program(name, tuple(steps), sequence.abort, sequence.procedure, sequence.t0_index)


def unmet(conditions: tuple[Condition, ...], values: Mapping[str, float]) -> Condition | None:
    """The first condition the latest values do not meet (a channel never seen meets none)."""
    for condition in conditions:
        value = values.get(condition.channel)
        if value is None or not condition.met(value):
            return condition
    return None


def describe(condition: Condition, values: Mapping[str, float]) -> str:
    """`P7 above 35 (is 12.3)`, or `(no value)`."""
    value = values.get(condition.channel)
    return f"{condition} ({'no value' if value is None else f'is {value:.4g}'})"
