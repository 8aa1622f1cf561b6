"""The command authority's decisions: the stand's state, arming, manual valves, sequences and abort.

Pure: no I/O and no clock (`now` is monotonic seconds, passed in). Every command returns a Verdict;
the service sends its `writes` to the STM32 in order and publishes its `transitions`, whether the
command was accepted or not (a sequence aborted at its first step is refused, yet writes the abort's
first step).

The service reports each write's outcome: `on_ack` for every acknowledgement of the device, in the
order they arrive, and `on_write_failed` for a write not acknowledged in time or refused. A write stays
*unconfirmed* until the device acknowledges it or a later write; the valves it opens count as possibly
open (`possibly_open`) until then, so the stand never goes idle on the strength of a write the device
may not have applied, nor while an earlier one that opened a valve may still be on its way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from services.actuation.interlocks import Interlocks
from services.actuation.valve_map import ValveMap
from services.common.settings import Settings


class SystemState(StrEnum):
    IDLE = "idle"
    ARMED = "armed"
    RUNNING = "running"
    ABORTING = "aborting"


@dataclass(frozen=True)
class ValveWrite:
    mask: int
    cause: str  # "manual", "sequence <name> step i/n", "abort <name> step i/n", ...


@dataclass(frozen=True)
class Transition:
    old: SystemState
    new: SystemState
    reason: str


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str = ""  # why refused (a person reads it), or a short note when accepted
    writes: tuple[ValveWrite, ...] = ()  # to send to the STM32, in order, now (even when refused)
    transitions: tuple[Transition, ...] = ()


@dataclass(frozen=True)
class SequenceProgress:
    """A sequence in progress: `step` of its `steps` steps written so far."""

    name: str
    step: int
    steps: int
    abort: bool
    started: float
    armed: bool  # started while armed: interlocks see the stand as armed, and it ends in ARMED


@dataclass(frozen=True)
class _Program:
    masks: tuple[int, ...]
    waits_s: tuple[float, ...]


_ABORTING_ONLY = "aborting: only abort is accepted"
# Once the abort sequence has ended, while the device has not confirmed the isolation valves and the
# igniter closed, its last step is written again this often (and the stand stays ABORTING).
_CONFIRM_RETRY_S = 1.0


def _refused(reason: str) -> Verdict:
    return Verdict(accepted=False, reason=reason)


class StandCore:
    def __init__(self, settings: Settings) -> None:
        """Raises ValueError when a sequence would be refused by the interlocks when it runs, or when the
        interlocks do not keep every isolation valve and the igniter closed while not armed."""
        self._valves = ValveMap(settings)
        self._interlocks = Interlocks(settings, self._valves)
        self._interlocks.validate_sequences()
        self._interlocks.validate_guards()
        self._danger = self._valves.mask_of(("isolation", "igniter"))
        self._abort_name = settings.abort_sequence_name
        self._sequences = settings.sequences
        self._programs = {
            name: _Program(
                masks=tuple(self._valves.parse(step.valves) for step in sequence.steps),
                waits_s=tuple(step.wait_ms / 1000 for step in sequence.steps),
            )
            for name, sequence in settings.sequences.items()
        }
        self._state = SystemState.IDLE
        self._commanded = 0
        self._acknowledged = 0
        self._unconfirmed: list[int] = []  # writes in order, not yet acknowledged (or superseded)
        self._sequence: SequenceProgress | None = None
        self._due: float | None = None
        self._confirming = False  # the abort sequence has ended; waiting for the device
        self._reason = "started"

    # --- state ------------------------------------------------------------------------------------

    @property
    def state(self) -> SystemState:
        return self._state

    @property
    def armed(self) -> bool:
        """ARMED, or RUNNING a sequence started while armed."""
        running_armed = self._sequence is not None and self._sequence.armed
        return self._state is SystemState.ARMED or (self._state is SystemState.RUNNING and running_armed)

    @property
    def commanded(self) -> int:
        """The last mask written (or being written)."""
        return self._commanded

    @property
    def acknowledged(self) -> int:
        """The last mask the device acknowledged."""
        return self._acknowledged

    @property
    def possibly_open(self) -> int:
        """Valves that may be open: commanded, acknowledged, or opened by a write not yet confirmed."""
        mask = self._commanded | self._acknowledged
        for written in self._unconfirmed:
            mask |= written
        return mask

    @property
    def sequence(self) -> SequenceProgress | None:
        return self._sequence

    @property
    def reason(self) -> str:
        """The reason of the last state change."""
        return self._reason

    def next_due(self) -> float | None:
        """When `tick` must next be called (a time already past: at once); None: not until a command."""
        return self._due

    # --- commands ---------------------------------------------------------------------------------

    def arm(self, who: str) -> Verdict:
        busy = self._busy()
        if busy is not None:
            return _refused(busy)
        if self._state is SystemState.ARMED:
            return _refused("already armed")
        return Verdict(True, "armed", transitions=(self._transition(SystemState.ARMED, f"armed by {who}"),))

    def disarm(self, who: str) -> Verdict:
        busy = self._busy()
        if busy is not None:
            return _refused(busy)
        if self._state is SystemState.IDLE:
            return _refused("not armed")
        risky = self.possibly_open & self._danger
        if risky:
            names = ", ".join(self._valves.open_names(risky))
            return _refused(
                f"cannot disarm while {names} may be open (commanded, acknowledged or not yet confirmed "
                f"closed by the device): close {names} first, or abort"
            )
        transition = self._transition(SystemState.IDLE, f"disarmed by {who}")
        return Verdict(True, "disarmed", transitions=(transition,))

    def set_valves(self, mask: int, who: str) -> Verdict:
        """A manual valve pattern."""
        busy = self._busy()
        if busy is not None:
            return _refused(busy)
        try:
            pattern = self._valves.format(mask)
        except ValueError as exc:
            return _refused(str(exc))
        refusal = self._interlocks.check(mask, armed=self.armed)
        if refusal is not None:
            return _refused(str(refusal))
        return Verdict(True, f"valves {pattern} set by {who}", writes=(self._write(mask, "manual"),))

    def start_sequence(self, name: str, who: str, now: float) -> Verdict:
        if self._state is SystemState.ABORTING:
            return _refused(_ABORTING_ONLY)
        if name not in self._sequences:
            known = ", ".join(n for n in self._sequences if n != self._abort_name)
            return _refused(f"unknown sequence {name!r} (sequences: {known})")
        if name == self._abort_name:
            return _refused(f"{name} is the abort sequence: use abort")
        busy = self._busy()
        if busy is not None:
            return _refused(busy)
        if self._sequences[name].requires_armed and not self.armed:
            return _refused(f"sequence {name} requires the stand to be armed: arm first")
        armed = self.armed
        transitions = [self._transition(SystemState.RUNNING, f"sequence {name} started by {who}")]
        self._begin(name, now, armed=armed)
        writes: list[ValveWrite] = []
        self._run_due(now, writes, transitions)
        if any(t.new is SystemState.ABORTING for t in transitions):
            return Verdict(False, self._reason, tuple(writes), tuple(transitions))
        return Verdict(True, f"sequence {name} started", tuple(writes), tuple(transitions))

    def cancel(self, who: str) -> Verdict:
        """Stop the running sequence where it is (its valves stay as they are)."""
        if self._state is SystemState.ABORTING:
            return _refused(_ABORTING_ONLY)
        sequence = self._sequence
        if self._state is not SystemState.RUNNING or sequence is None:
            return _refused("no sequence is running")
        self._sequence, self._due = None, None
        back = SystemState.ARMED if sequence.armed else SystemState.IDLE
        reason = f"sequence {sequence.name} cancelled by {who} after step {sequence.step}/{sequence.steps}"
        transition = self._transition(back, reason)
        return Verdict(True, f"sequence {sequence.name} cancelled", transitions=(transition,))

    def abort(self, reason: str, who: str, now: float) -> Verdict:
        """Always accepted: start the abort sequence now, whatever runs. Changes nothing while aborting."""
        if self._state is SystemState.ABORTING:
            return Verdict(True, f"already aborting ({self._reason})")
        transitions = [self._enter_abort(f"abort by {who}: {reason}", now)]
        writes: list[ValveWrite] = []
        self._run_due(now, writes, transitions)
        return Verdict(True, f"aborting: {reason}", tuple(writes), tuple(transitions))

    def tick(self, now: float) -> Verdict:
        """Write the sequence steps that are due and end a finished sequence."""
        writes: list[ValveWrite] = []
        transitions: list[Transition] = []
        self._run_due(now, writes, transitions)
        return Verdict(True, "", tuple(writes), tuple(transitions))

    # --- the device's answers ---------------------------------------------------------------------

    def on_ack(self, mask: int) -> None:
        """The device acknowledged a write: its valves are now `mask`. Call once per acknowledgement."""
        self._acknowledged = mask
        if mask in self._unconfirmed:  # acknowledgements come in order: the earlier writes are done
            del self._unconfirmed[: self._unconfirmed.index(mask) + 1]
        if self._confirming and self._sequence is not None and not self.possibly_open & self._danger:
            self._due = self._sequence.started  # end the abort at the next tick

    def on_write_failed(self, reason: str, now: float) -> Verdict:
        """A write was not acknowledged in time, or refused: aborts while armed or running."""
        if self._state in (SystemState.ARMED, SystemState.RUNNING):
            return self.abort(f"valve write failed: {reason}", "actuation", now)
        return _refused(f"valve write failed: {reason}")

    # --- internals --------------------------------------------------------------------------------

    def _busy(self) -> str | None:
        """Why a command other than abort is refused right now, if it is."""
        if self._state is SystemState.ABORTING:
            return _ABORTING_ONLY
        if self._state is SystemState.RUNNING and self._sequence is not None:
            return f"sequence {self._sequence.name} is running: cancel or abort first"
        return None

    def _transition(self, new: SystemState, reason: str) -> Transition:
        transition = Transition(self._state, new, reason)
        self._state, self._reason = new, reason
        return transition

    def _write(self, mask: int, cause: str) -> ValveWrite:
        self._commanded = mask
        if not self._unconfirmed or self._unconfirmed[-1] != mask:
            self._unconfirmed.append(mask)
        return ValveWrite(mask, cause)

    def _begin(self, name: str, now: float, *, armed: bool) -> None:
        steps = len(self._programs[name].masks)
        self._sequence = SequenceProgress(name, 0, steps, name == self._abort_name, now, armed)
        self._due = now
        self._confirming = False

    def _enter_abort(self, reason: str, now: float) -> Transition:
        transition = self._transition(SystemState.ABORTING, reason)
        self._begin(self._abort_name, now, armed=False)
        return transition

    def _run_due(self, now: float, writes: list[ValveWrite], transitions: list[Transition]) -> None:
        while self._sequence is not None and self._due is not None and self._due <= now:
            self._step(self._sequence, now, writes, transitions)

    def _step(
        self, sequence: SequenceProgress, now: float, writes: list[ValveWrite], transitions: list[Transition]
    ) -> None:
        """Write the next step of `sequence`, or end it once its last step's wait has passed."""
        program = self._programs[sequence.name]
        if sequence.step < sequence.steps:
            mask, number = program.masks[sequence.step], f"{sequence.step + 1}/{sequence.steps}"
            if not sequence.abort:
                refusal = self._interlocks.check(mask, armed=sequence.armed)
                if refusal is not None:
                    why = f"sequence {sequence.name} step {number} {refusal}"
                    transitions.append(self._enter_abort(why, now))
                    return
            kind = "abort" if sequence.abort else "sequence"
            self._sequence = replace(sequence, step=sequence.step + 1)
            writes.append(self._write(mask, f"{kind} {sequence.name} step {number}"))
            self._due = now + program.waits_s[sequence.step]
            return
        if sequence.abort and self.possibly_open & self._danger:
            if self._confirming:
                names = ", ".join(self._valves.open_names(self.possibly_open & self._danger))
                cause = (
                    f"abort {sequence.name} ended: last step again until the device confirms {names} closed"
                )
                writes.append(self._write(program.masks[-1], cause))
            self._due, self._confirming = now + _CONFIRM_RETRY_S, True
            return
        self._sequence, self._due, self._confirming = None, None, False
        back = SystemState.ARMED if sequence.armed else SystemState.IDLE
        kind = "abort sequence" if sequence.abort else "sequence"
        transitions.append(self._transition(back, f"{kind} {sequence.name} finished"))
