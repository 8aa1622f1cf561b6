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

Sequences (procedures) run step by step (`procedure.py`, docs/safety.md §4): a step's requirements are
checked when it starts, then its hold, its valves, its motor move (the service reports the outcome with
`on_motor_done`), then its wait: a fixed time, or a condition on the latest channel values
(`on_values`) with a timeout. A hold stops the sequence until `resume`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal

from services.actuation.interlocks import Interlocks
from services.actuation.procedure import Program, ProgramStep, compile_program, describe, unmet
from services.actuation.valve_map import ValveMap
from services.common.settings import MotorMove, Settings


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
class MotorRequest:
    """A sequence step's motor move: the service moves it and reports with `on_motor_done(token, …)`."""

    token: int
    move: MotorMove


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str = ""  # why refused (a person reads it), or a short note when accepted
    writes: tuple[ValveWrite, ...] = ()  # to send to the STM32, in order, now (even when refused)
    transitions: tuple[Transition, ...] = ()
    moves: tuple[MotorRequest, ...] = ()  # motor moves to start now


@dataclass(frozen=True)
class SequenceProgress:
    """A sequence in progress: `step` of its `steps` steps started so far."""

    name: str
    step: int
    steps: int
    abort: bool
    started: float
    armed: bool  # started while armed: interlocks see the stand as armed, and it ends in ARMED
    procedure: bool = False
    phase: str | None = None
    held: str | None = None  # why it is held (until an operator resumes), or None
    t0: float | None = None  # when T-0 was (monotonic), once it has been
    waiting_for: str = ""  # what the current step waits for, for people


_Stage = Literal["start", "motor", "wait"]


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
            name: compile_program(name, sequence, self._valves)
            for name, sequence in settings.sequences.items()
        }
        self._state = SystemState.IDLE
        self._commanded = 0
        self._acknowledged = 0
        self._unconfirmed: list[int] = []  # writes in order, not yet acknowledged (or superseded)
        self._sequence: SequenceProgress | None = None
        self._due: float | None = None
        self._confirming = False  # the abort sequence (a procedure) has ended; waiting for the device
        self._reason = "started"
        self._stage: _Stage = "start"  # of the current step: starting, waiting for its motor, waiting
        self._gate_passed = False  # the current step's `hold` was resumed
        self._remaining: float | None = None  # of the current wait, frozen while held
        self._values: dict[str, float] = {}
        self._motor_token = 0
        self._wait_deadline = 0.0  # of a `wait_until`
        self._steps: list[tuple[float | None, SequenceProgress | None]] = []  # see take_steps

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
    def phase(self) -> str | None:
        """The running sequence's phase (None when none runs or it names none)."""
        return self._sequence.phase if self._sequence is not None else None

    def timing(self, now: float) -> tuple[float | None, float | None]:
        """(T-time in s, negative before T-0 and estimated from the fixed waits; time to the next step
        in s, or to the current wait's timeout), each None when unknown."""
        sequence = self._sequence
        if sequence is None:
            return None, None
        left = self._remaining if sequence.held is not None else None
        if left is None and self._stage == "wait":
            left = max(0.0, self._wait_deadline - now)
        if sequence.t0 is not None:
            return now - sequence.t0, left
        t0_index = self._programs[sequence.name].t0_index
        if t0_index is None or sequence.step > t0_index:
            return None, left
        current = self._programs[sequence.name].steps[sequence.step - 1] if sequence.step else None
        own = left if current is not None and current.wait_until is None and left is not None else 0.0
        return -(own + self._programs[sequence.name].planned_s(sequence.step, t0_index)), left

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
        """A manual valve pattern (also while a sequence is held)."""
        busy = self.manual_refusal()
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
        moves: list[MotorRequest] = []
        self._run_due(now, writes, transitions, moves)
        if any(t.new is SystemState.ABORTING for t in transitions):
            return Verdict(False, self._reason, tuple(writes), tuple(transitions))
        return Verdict(True, f"sequence {name} started", tuple(writes), tuple(transitions), tuple(moves))

    def cancel(self, who: str) -> Verdict:
        """Stop the running sequence where it is (its valves stay as they are); never after T-0."""
        if self._state is SystemState.ABORTING:
            return _refused(_ABORTING_ONLY)
        sequence = self._sequence
        if self._state is not SystemState.RUNNING or sequence is None:
            return _refused("no sequence is running")
        if sequence.t0 is not None:
            return _refused(f"{_kind(sequence)} {sequence.name} is past T-0: abort to stop it")
        self._stop_sequence()
        back = SystemState.ARMED if sequence.armed else SystemState.IDLE
        reason = f"sequence {sequence.name} cancelled by {who} after step {sequence.step}/{sequence.steps}"
        transition = self._transition(back, reason)
        return Verdict(True, f"sequence {sequence.name} cancelled", transitions=(transition,))

    def hold(self, reason: str, who: str, now: float) -> Verdict:
        """Stop the running sequence before its next step until `resume` (not after T-0)."""
        if self._state is SystemState.ABORTING:
            return _refused(_ABORTING_ONLY)
        sequence = self._sequence
        if self._state is not SystemState.RUNNING or sequence is None:
            return _refused("no sequence is running")
        if sequence.held is not None:
            return _refused(f"{_kind(sequence)} {sequence.name} is already held: {sequence.held}")
        if sequence.t0 is not None:
            return _refused(f"{_kind(sequence)} {sequence.name} is past T-0: no hold, abort to stop it")
        if self._confirming:
            return _refused(f"{_kind(sequence)} {sequence.name} has ended: waiting for the device")
        self._hold(sequence, f"hold by {who}: {reason}", now)
        return Verdict(True, f"{_kind(sequence)} {sequence.name} held")

    def resume(self, who: str, now: float) -> Verdict:
        """Go on with a held sequence: its step where it stopped (a wait: the time that was left)."""
        if self._state is SystemState.ABORTING:
            return _refused(_ABORTING_ONLY)
        sequence = self._sequence
        if sequence is None or sequence.held is None:
            return _refused("no sequence is held")
        self._sequence = replace(sequence, held=None)
        if self._stage == "wait":
            self._wait_deadline = now + (self._remaining or 0.0)
        if self._stage != "motor":
            self._due = now
        self._remaining = None
        writes: list[ValveWrite] = []
        transitions: list[Transition] = []
        moves: list[MotorRequest] = []
        self._run_due(now, writes, transitions, moves)
        aborted = any(t.new is SystemState.ABORTING for t in transitions)
        note = self._reason if aborted else f"{_kind(sequence)} {sequence.name} resumed by {who}"
        return Verdict(not aborted, note, tuple(writes), tuple(transitions), tuple(moves))

    def abort(self, reason: str, who: str, now: float) -> Verdict:
        """Always accepted: start the abort sequence now, whatever runs. Changes nothing while aborting."""
        if self._state is SystemState.ABORTING:
            return Verdict(True, f"already aborting ({self._reason})")
        transitions = [self._enter_abort(f"abort by {who}: {reason}", now)]
        writes: list[ValveWrite] = []
        self._run_due(now, writes, transitions, [])
        return Verdict(True, f"aborting: {reason}", tuple(writes), tuple(transitions))

    def tick(self, now: float) -> Verdict:
        """Run the sequence steps that are due and end a finished sequence."""
        writes: list[ValveWrite] = []
        transitions: list[Transition] = []
        moves: list[MotorRequest] = []
        self._run_due(now, writes, transitions, moves)
        return Verdict(True, "", tuple(writes), tuple(transitions), tuple(moves))

    def on_values(self, values: Mapping[str, float], now: float) -> Verdict:
        """The latest value of each channel (a telemetry batch's mean): a step waiting on one may go on."""
        self._values.update(values)
        if self._stage == "wait" and self._sequence is not None and self._due is not None:
            self._due = min(self._due, now)  # judge the wait now
        return self.tick(now)

    def on_motor_done(self, token: int, ok: bool, reason: str, now: float) -> Verdict:
        """The outcome of a step's motor move (`MotorRequest.token`): its wait starts, or it aborts."""
        sequence = self._sequence
        if sequence is None or self._stage != "motor" or token != self._motor_token:
            return _refused("no motor move is awaited")
        if not ok:
            return self.abort(
                f"sequence {sequence.name} step {sequence.step}: motor move failed: {reason}",
                "actuation",
                now,
            )
        self._start_wait(self._programs[sequence.name].steps[sequence.step - 1], now)
        if sequence.held is not None:  # held meanwhile: the wait starts at resume (nothing due till then)
            self._remaining, self._due = max(0.0, self._wait_deadline - now), None
        return self.tick(now)

    # --- the device's answers ---------------------------------------------------------------------

    def on_ack(self, mask: int) -> None:
        """The device acknowledged a write: its valves are now `mask`. Call once per acknowledgement."""
        self._acknowledged = mask
        if mask in self._unconfirmed:  # acknowledgements come in order: the earlier writes are done
            del self._unconfirmed[: self._unconfirmed.index(mask) + 1]
        if self._confirming and self._sequence is not None and not self.possibly_open & self._danger:
            self._due = self._sequence.started  # end the abort (procedure) at the next tick

    def on_write_failed(self, reason: str, now: float) -> Verdict:
        """A write was not acknowledged in time, or refused: aborts while armed or running."""
        if self._state in (SystemState.ARMED, SystemState.RUNNING):
            return self.abort(f"valve write failed: {reason}", "actuation", now)
        return _refused(f"valve write failed: {reason}")

    # --- internals --------------------------------------------------------------------------------

    def manual_refusal(self) -> str | None:
        """Why a manual valve or motor command is refused right now (a held sequence allows them)."""
        sequence = self._sequence
        if self._state is SystemState.RUNNING and sequence is not None and sequence.held is not None:
            return None
        return self._busy()

    def _busy(self) -> str | None:
        """Why a command other than abort is refused right now, if it is."""
        if self._state is SystemState.ABORTING:
            return _ABORTING_ONLY
        if self._state is SystemState.RUNNING and self._sequence is not None:
            if self._sequence.procedure:
                return f"procedure {self._sequence.name} is running: hold or abort first"
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
        program = self._programs[name]
        self._sequence = SequenceProgress(
            name, 0, len(program.steps), program.abort, now, armed, procedure=program.procedure
        )
        self._due = now
        self._confirming = False
        self._stage, self._gate_passed, self._remaining = "start", False, None

    def take_steps(self) -> list[tuple[float | None, SequenceProgress | None]]:
        """Every step started since the last call, as (when, its progress), and every end of a sequence
        as (None, None): in order, each once, however many a decision took (a step without a wait and
        the next start together). The record of the phases a run went through."""
        steps, self._steps = self._steps, []
        return steps

    def _stop_sequence(self) -> None:
        if self._sequence is not None:
            self._steps.append((None, None))
        self._sequence, self._due, self._confirming = None, None, False
        self._stage, self._gate_passed, self._remaining = "start", False, None

    def _enter_abort(self, reason: str, now: float) -> Transition:
        transition = self._transition(SystemState.ABORTING, reason)
        self._begin(self._abort_name, now, armed=False)
        return transition

    def _hold(self, sequence: SequenceProgress, reason: str, now: float) -> None:
        """Stop before anything more of the current step; a wait keeps what was left of it."""
        if self._stage == "wait" and self._remaining is None:
            self._remaining = max(0.0, self._wait_deadline - now)
        self._sequence = replace(sequence, held=reason)
        if self._stage != "motor":  # a motor move's deadline still counts while held
            self._due = None

    def _run_due(
        self,
        now: float,
        writes: list[ValveWrite],
        transitions: list[Transition],
        moves: list[MotorRequest],
    ) -> None:
        while self._sequence is not None and self._due is not None and self._due <= now:
            sequence = self._sequence
            if self._stage == "motor":
                number = f"{sequence.step}/{sequence.steps}"
                why = f"sequence {sequence.name} step {number}: motor move not done in time"
                transitions.append(self._enter_abort(why, now))
                return
            if sequence.held is not None:
                return
            if self._stage == "wait" and not self._wait_over(sequence, now, transitions):
                return
            if self._stage == "start":
                self._step(sequence, now, writes, transitions, moves)

    def _wait_over(self, sequence: SequenceProgress, now: float, transitions: list[Transition]) -> bool:
        """Whether the current step's wait is over (then the next step starts); handles its timeout."""
        until = self._programs[sequence.name].steps[sequence.step - 1].wait_until
        if until is None:
            over = self._wait_deadline <= now
        else:
            over = until.met(self._values.get(until.channel, math.nan))
        if over:
            self._stage, self._due = "start", now
            return True
        if self._wait_deadline > now:  # judged again at the next values, or at the timeout
            self._due = self._wait_deadline
            return False
        assert until is not None
        where = f"sequence {sequence.name} step {sequence.step}/{sequence.steps}"
        why = f"{where}: {describe(until, self._values)} not reached within {until.timeout_ms} ms"
        if until.on_timeout == "abort":
            transitions.append(self._enter_abort(why, now))
        else:
            self._hold(sequence, why, now)
            self._remaining = until.timeout_ms / 1000  # resumed: a fresh timeout
        return False

    def _start_wait(self, step: ProgramStep, now: float) -> None:
        self._stage = "wait"
        if step.wait_until is not None:
            self._wait_deadline, self._due = now + step.wait_until.timeout_ms / 1000, now  # may be met now
        else:
            self._wait_deadline = self._due = now + step.wait_s
        if self._sequence is not None:
            self._sequence = replace(self._sequence, waiting_for=str(step.wait_until or ""))

    def _step(
        self,
        sequence: SequenceProgress,
        now: float,
        writes: list[ValveWrite],
        transitions: list[Transition],
        moves: list[MotorRequest],
    ) -> None:
        """Start the next step of `sequence`, or end it once its last step's wait has passed."""
        program = self._programs[sequence.name]
        if sequence.step >= sequence.steps:
            self._end(sequence, program, now, writes, transitions)
            return
        step, number = program.steps[sequence.step], f"{sequence.step + 1}/{sequence.steps}"
        where = f"sequence {sequence.name} step {number}"
        missing = unmet(step.require, self._values)
        if missing is not None:
            why = f"{where}: requirement {describe(missing, self._values)} not met"
            on_fail = next(r.on_fail for r in step.require if r is missing)
            if on_fail == "abort":
                transitions.append(self._enter_abort(why, now))
            else:
                self._hold(sequence, why, now)
            return
        if step.hold is not None and not self._gate_passed:
            self._gate_passed = True
            self._hold(sequence, f"{where}: {step.hold}", now)
            return
        if step.change is not None:
            mask = step.change.apply(self._commanded)
            if not sequence.abort:
                refusal = self._interlocks.check(mask, armed=sequence.armed)
                if refusal is not None:
                    transitions.append(self._enter_abort(f"{where} {refusal}", now))
                    return
            kind = "abort" if sequence.abort else "sequence"
            writes.append(self._write(mask, f"{kind} {sequence.name} step {number}"))
        self._gate_passed = False
        self._sequence = replace(
            sequence,
            step=sequence.step + 1,
            phase=step.phase,
            t0=now if step.t0 else sequence.t0,
            waiting_for="",
        )
        self._steps.append((now, self._sequence))
        if step.motor is not None:
            self._motor_token += 1
            moves.append(MotorRequest(self._motor_token, step.motor))
            self._stage, self._due = "motor", now + step.motor.timeout_ms / 1000
            self._sequence = replace(self._sequence, waiting_for=f"motor {step.motor.motor}")
            return
        self._start_wait(step, now)

    def _end(
        self,
        sequence: SequenceProgress,
        program: Program,
        now: float,
        writes: list[ValveWrite],
        transitions: list[Transition],
    ) -> None:
        """End a sequence; an abort sequence or a procedure only once the device confirms isolation valves
        and igniter closed (its last pattern written again every second until then)."""
        ends_idle = sequence.abort or program.procedure
        left_open = self._commanded & self._danger
        if ends_idle and not left_open and self.possibly_open & self._danger:
            if self._confirming:
                names = ", ".join(self._valves.open_names(self.possibly_open & self._danger))
                kind = "abort" if sequence.abort else "procedure"
                cause = (
                    f"{kind} {sequence.name} ended: last step again until the device confirms {names} closed"
                )
                writes.append(self._write(self._commanded, cause))
            self._due, self._confirming = now + _CONFIRM_RETRY_S, True
            self._sequence = replace(sequence, waiting_for="the device to confirm the valves closed")
            return
        self._stop_sequence()
        kind = "abort sequence" if sequence.abort else "procedure" if program.procedure else "sequence"
        reason = f"{kind} {sequence.name} finished"
        if ends_idle and not left_open:
            back = SystemState.IDLE
        else:
            back = SystemState.ARMED if sequence.armed else SystemState.IDLE
            if ends_idle:  # a procedure started with valves open that it never closed: stays armed
                names = ", ".join(self._valves.open_names(left_open))
                reason = f"{reason} with {names} open: stays armed"
        transitions.append(self._transition(back, reason))


def _kind(sequence: SequenceProgress) -> str:
    return "procedure" if sequence.procedure else "sequence"
