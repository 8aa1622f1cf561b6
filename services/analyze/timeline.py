"""A run's events as a timeline: markers (valve changes, alarms, red-lines, aborts, ...), phase bands,
the ignition valve's openings and T-0.

Events are the logger's records (docs/protocol.md, "Events"), `ts` in UNIX seconds. Each kind has its
reader in `READERS`; a kind without one is still listed, as `other`. Valve states come from actuation's
`valves` events (`open` or `bits`, on every change the STM32 acknowledged); without any (older
recordings), from the results of accepted `valves`/`valve` commands. Phases and T-0 come from
actuation's `step` events (a sequence's step, phase and T-0; the abort sequence is phase `abort`), or
from events with the fields of `rcs/state/system`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from services.analyze.run import unix_time

Category = Literal["valve", "phase", "alarm", "redline", "abort", "state", "command", "data", "other"]
VALVE_STATE_KINDS = ("valves", "valve_state")
PHASE_KINDS = ("system", "phase", "step", "sequence", "sequence_step")


@dataclass(frozen=True, slots=True)
class Marker:
    t: float  # UNIX seconds
    category: Category
    kind: str  # the event's kind
    label: str


@dataclass(frozen=True, slots=True)
class PhaseBand:
    start: float
    end: float | None  # None: until the run's end
    name: str


@dataclass(slots=True)
class Timeline:
    markers: list[Marker] = field(default_factory=list)
    phases: list[PhaseBand] = field(default_factory=list)
    t0: float | None = None
    valve_states: list[tuple[float, frozenset[str]]] = field(default_factory=list)

    def openings(self, valve: str) -> list[float]:
        """When `valve` went from closed to open."""
        times, was_open = [], False
        for t, open_now in self.valve_states:
            if valve in open_now and not was_open:
                times.append(t)
            was_open = valve in open_now
        return times

    def of(self, *categories: Category) -> list[Marker]:
        return [m for m in self.markers if m.category in categories]


class _Builder:
    def __init__(self, valve_names: Sequence[str], use_commands_for_valves: bool) -> None:
        self.valve_names = tuple(valve_names)
        self.timeline = Timeline()
        self.use_commands_for_valves = use_commands_for_valves
        self._open: frozenset[str] = frozenset()
        self._phase: str | None = None

    def mark(self, t: float, category: Category, kind: str, label: str) -> None:
        self.timeline.markers.append(Marker(t, category, kind, label))

    def valves(self, t: float, kind: str, open_now: frozenset[str] | None) -> bool:
        if open_now is None:
            return False
        opened, closed = self._in_order(open_now - self._open), self._in_order(self._open - open_now)
        self.timeline.valve_states.append((t, open_now))
        self._open = open_now
        if opened or closed:
            words = [f"{', '.join(opened)} opened"] * bool(opened) + [f"{', '.join(closed)} closed"] * bool(
                closed
            )
            self.mark(t, "valve", kind, "; ".join(words))
        return True

    def _in_order(self, names: frozenset[str]) -> list[str]:
        """In valve order (names the stand lacks last)."""
        return [n for n in self.valve_names if n in names] + sorted(names - set(self.valve_names))

    def phase(self, t: float, kind: str, name: Any, t0: Any, *, ended: bool = False) -> None:
        """A step of a sequence: its phase (None: the phase goes on), or the sequence `ended`."""
        t0_time = unix_time(t0)
        if t0_time is not None and self.timeline.t0 is None:
            self.timeline.t0 = t0_time
            self.mark(t0_time, "phase", kind, "T-0")
        if not ended and (not isinstance(name, str) or name == self._phase):
            return
        phases = self.timeline.phases
        if phases and phases[-1].end is None:
            phases[-1] = PhaseBand(phases[-1].start, t, phases[-1].name)
        self._phase = None if ended else name
        if self._phase is not None:
            phases.append(PhaseBand(t, None, self._phase))
            self.mark(t, "phase", kind, f"phase {self._phase}")

    def open_set(self, value: Any) -> frozenset[str] | None:
        """Open valves from a list of names, a "0101…" pattern or a list of 0/1 in valve order."""
        if isinstance(value, str) and set(value) <= {"0", "1"} and len(value) == len(self.valve_names):
            return frozenset(n for n, bit in zip(self.valve_names, value, strict=True) if bit == "1")
        if (
            isinstance(value, list)
            and len(value) == len(self.valve_names)
            and all(v in (0, 1) for v in value)
        ):
            return frozenset(n for n, bit in zip(self.valve_names, value, strict=True) if bit == 1)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return frozenset(value)
        return None


def _text(value: Any, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _valves(b: _Builder, t: float, event: dict[str, Any]) -> None:
    open_now = b.open_set(event.get("open"))
    if open_now is None:
        open_now = b.open_set(event.get("bits"))
    if not b.valves(t, str(event["kind"]), open_now):
        b.mark(t, "other", str(event["kind"]), "valve state without open valves or bits")


def _phase(b: _Builder, t: float, event: dict[str, Any]) -> None:
    """A `step` event (actuation's: `sequence` the name, null once it ended) or a `system` one (the
    fields of rcs/state/system: `sequence` a map, null when none runs)."""
    sequence = event.get("sequence")
    if isinstance(sequence, dict):
        source = sequence
    elif sequence is None and ("sequence" in event or event["kind"] == "system"):
        b.phase(t, str(event["kind"]), None, None, ended=True)
        return
    else:
        source = event
    name = source.get("phase") or ("abort" if source.get("abort") else None)
    b.phase(unix_time(source.get("at")) or t, str(event["kind"]), name, source.get("t0"))


def _state(b: _Builder, t: float, event: dict[str, Any]) -> None:
    new, reason = event.get("new"), _text(event.get("reason", ""))
    if new == "aborting":
        b.mark(t, "abort", "state", f"ABORT: {reason}")
    else:
        b.mark(t, "state", "state", f"{event.get('old')} → {new}: {reason}")


def _command(b: _Builder, t: float, event: dict[str, Any]) -> None:
    command = event.get("command")
    who = _text(event.get("who", "?"), 60)
    accepted = event.get("accepted", event.get("ok", True)) is not False
    if command == "abort":
        args = event.get("args")
        reason = args.get("reason") if isinstance(args, dict) else None
        b.mark(t, "abort", "command", f"abort by {who}" + (f": {_text(reason)}" if reason else ""))
        return
    verdict = "" if accepted else f" refused: {_text(event.get('reason', ''))}"
    b.mark(t, "command", "command", f"{command} by {who}{verdict}")
    result = event.get("result")
    if b.use_commands_for_valves and accepted and command in ("valves", "valve") and isinstance(result, dict):
        b.valves(t, "command", b.open_set(result.get("bits", result.get("valves"))))


def _redline(b: _Builder, t: float, event: dict[str, Any]) -> None:
    b.mark(
        t,
        "redline",
        "redline",
        f"red-line {event.get('channel')} {event.get('direction')} {event.get('limit')} "
        f"(value {_number(event.get('value'))})",
    )


def _alarm(b: _Builder, t: float, event: dict[str, Any]) -> None:
    alarm = event.get("alarm")
    if not isinstance(alarm, dict):
        b.mark(t, "alarm", "alarm", "alarm (no details)")
        return
    name = alarm.get("key") or f"{alarm.get('kind', 'alarm')} {alarm.get('channel', '')}"
    b.mark(t, "alarm", "alarm", f"{name}: {alarm.get('state')} (value {_number(alarm.get('value'))})")


def _reason(category: Category, prefix: str) -> Callable[[_Builder, float, dict[str, Any]], None]:
    def read(b: _Builder, t: float, event: dict[str, Any]) -> None:
        b.mark(t, category, str(event["kind"]), f"{prefix}: {_text(event.get('reason', ''))}")

    return read


def _gap(b: _Builder, t: float, event: dict[str, Any]) -> None:
    b.mark(t, "data", "gap", f"{event.get('size')} samples lost: {_text(event.get('reason', ''))}")


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


READERS: dict[str, Callable[[_Builder, float, dict[str, Any]], None]] = {
    **dict.fromkeys(VALVE_STATE_KINDS, _valves),
    **dict.fromkeys(PHASE_KINDS, _phase),
    "state": _state,
    "command": _command,
    "redline": _redline,
    "alarm": _alarm,
    "deadman": _reason("abort", "deadman"),
    "go_safe": _reason("abort", "STM32 made safe by acquisition"),
    "valve_ack_timeout": _reason("state", "valve not acknowledged"),
    "valve_refused": _reason("state", "valve refused"),
    "gap": _gap,
    "disk_error": _reason("data", "logger cannot write"),
}


def build(events: Sequence[dict[str, Any]], valve_names: Sequence[str], notes: list[str]) -> Timeline:
    """The timeline of `events` (any order); events without a usable `ts` go to `notes`."""
    timed = [(unix_time(e.get("ts")), i, e) for i, e in enumerate(events)]
    untimed = sum(1 for t, _, _ in timed if t is None)
    if untimed:
        notes.append(f"{untimed} event(s) without a time (`ts`): not shown")
    ordered = sorted((t, i, e) for t, i, e in timed if t is not None and math.isfinite(t))
    has_valve_states = any(e.get("kind") in VALVE_STATE_KINDS for _, _, e in ordered)
    builder = _Builder(valve_names, use_commands_for_valves=not has_valve_states)
    for t, _, event in ordered:
        kind = str(event.get("kind", "?"))
        reader = READERS.get(kind)
        if reader is None:
            builder.mark(t, "other", kind, f"{event.get('service', '?')}: {kind}")
        else:
            reader(builder, t, {**event, "kind": kind})
    builder.timeline.markers.sort(key=lambda m: m.t)
    return builder.timeline
