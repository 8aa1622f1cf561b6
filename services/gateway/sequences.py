"""The sequences of config/stand.yaml as an operator's console shows them: each one's kind and steps,
each step in one line a person reads ("open GOX1, FUEL1 · until P1 above 30 (2 s, else abort)"),
with the phase it runs in (kept from an earlier step, as actuation does) and whether it is T-0."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.common.settings import Sequence, Settings, Step


def _seconds(ms: float) -> str:
    return f"{ms / 1000:g} s"


def _require(step: Step) -> str | None:
    if not step.require:
        return None
    conditions = ", ".join(f"{r} (else {r.on_fail})" for r in step.require)
    return f"require {conditions}"


def _hold(step: Step) -> str | None:
    return None if step.hold is None else f"hold: {step.hold}"


def _valves(step: Step) -> str | None:
    parts = []
    if step.valves is not None:
        parts.append(f"valves {step.valves}")
    if step.open:
        parts.append("open " + ", ".join(step.open))
    if step.close:
        parts.append("close " + ", ".join(step.close))
    return " · ".join(parts) or None


def _motor(step: Step) -> str | None:
    move = step.motor
    if move is None:
        return None
    where = f"to {move.target_deg:g}°" if move.target_deg is not None else f"by {move.by_deg:g}°"
    return f"{move.motor} {where} (within {_seconds(move.timeout_ms)})"


def _wait(step: Step) -> str | None:
    until = step.wait_until
    if until is not None:
        return f"until {until} ({_seconds(until.timeout_ms)}, else {until.on_timeout})"
    return _seconds(step.wait_ms) if step.wait_ms else None


# In the order actuation does them (docs/safety.md §4): require, hold, valves, motor, wait.
_PARTS: tuple[Callable[[Step], str | None], ...] = (_require, _hold, _valves, _motor, _wait)


def step_text(step: Step) -> str:
    """One line for a person: what the step does, in the order it does it."""
    return " · ".join(part for part in (describe(step) for describe in _PARTS) if part) or "(nothing)"


def sequence_view(name: str, sequence: Sequence) -> dict[str, Any]:
    steps = []
    phase: str | None = None
    for number, step in enumerate(sequence.steps, start=1):
        phase = step.phase or phase
        steps.append(
            {
                "step": number,
                "phase": phase,
                "t0": step.t0,
                "text": step_text(step),
                "wait_ms": step.wait_ms if step.wait_until is None else None,
            }
        )
    return {
        "name": name,
        "description": sequence.description,
        "procedure": sequence.procedure,
        "requires_armed": sequence.requires_armed,
        "abort": sequence.abort,
        "steps": steps,
    }


def sequences_view(settings: Settings) -> list[dict[str, Any]]:
    """Every sequence in config order, the abort sequence included (`abort: true`)."""
    return [sequence_view(name, sequence) for name, sequence in settings.sequences.items()]
