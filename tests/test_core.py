"""The command authority's decisions: every refusal, the shipped sequences, abort, and its invariants.

The stateful test drives StandCore with random commands (manual, sequences and the hot-fire procedure,
hold, resume, abort, channel values, motor outcomes, alarms and their acknowledgement, test runs), time, and a
device that acknowledges, loses or refuses writes (in order, like the serial link), and checks the
safety invariants after every step.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from services.actuation.alarms import AlarmBook, AlarmState
from services.actuation.core import StandCore, SystemState, ValveWrite, Verdict
from services.actuation.interlocks import Interlocks
from services.actuation.runs import RunBook
from services.actuation.valve_map import ValveMap
from services.common.settings import Redline, Settings, load_settings

STAND = load_settings()
VALVES = ValveMap(STAND)
INTERLOCKS = Interlocks(STAND, VALVES)
DANGER = VALVES.mask_of(["isolation", "igniter"])
ABORT = STAND.sequences[STAND.abort_sequence_name]
ABORT_MASKS = [VALVES.parse(str(step.valves)) for step in ABORT.steps]
ABORT_DURATION = sum(step.wait_ms for step in ABORT.steps) / 1000
IDLE, ARMED, RUNNING, ABORTING = (
    SystemState.IDLE,
    SystemState.ARMED,
    SystemState.RUNNING,
    SystemState.ABORTING,
)
ARMED_ONLY = ["o2feed", "fuelfeed", "preburning", "burningstart", "burning"]
CLEANINGS = ["o2cleaning", "fuelcleaning"]


def mask(pattern: str) -> int:
    return VALVES.parse(pattern)


def run(core: StandCore, until: float, *, ack: bool = True) -> list[tuple[float, ValveWrite]]:
    """Tick `core` exactly when due up to `until`, the device acknowledging every write at once."""
    written: list[tuple[float, ValveWrite]] = []
    while (due := core.next_due()) is not None and due <= until:
        for write in core.tick(due).writes:
            written.append((due, write))
            if ack:
                core.on_ack(write.mask)
    return written


def armed_core() -> StandCore:
    core = StandCore(STAND)
    assert core.arm("op").accepted
    return core


# --- plain tests ----------------------------------------------------------------------------------


def test_starts_idle_with_everything_closed() -> None:
    core = StandCore(STAND)
    assert (core.state, core.armed, core.commanded, core.acknowledged) == (IDLE, False, 0, 0)
    assert core.sequence is None and core.next_due() is None and core.reason == "started"


def test_arming_and_disarming() -> None:
    core = StandCore(STAND)
    verdict = core.arm("alice")
    assert verdict.accepted and (core.state, core.armed, core.reason) == (ARMED, True, "armed by alice")
    assert [(t.old, t.new, t.reason) for t in verdict.transitions] == [(IDLE, ARMED, "armed by alice")]
    assert core.arm("alice") == Verdict(False, "already armed")
    verdict = core.disarm("bob")
    assert verdict.accepted and (core.state, core.armed, core.reason) == (IDLE, False, "disarmed by bob")
    assert core.disarm("bob") == Verdict(False, "not armed")


def test_disarm_is_refused_while_an_isolation_valve_or_the_igniter_may_be_open() -> None:
    core = armed_core()
    assert core.set_valves(mask("010000001"), "op").writes == (ValveWrite(mask("010000001"), "manual"),)
    refused = core.disarm("op")
    assert refused == Verdict(
        False,
        "cannot disarm while GOX1, IGNITION may be open (commanded, acknowledged or not yet confirmed closed "
        "by the device): close GOX1, IGNITION first, or abort",
    )
    core.on_ack(mask("010000001"))
    assert core.set_valves(0, "op").accepted
    # closed as commanded, but the device has not confirmed it yet
    assert "cannot disarm while GOX1, IGNITION may be open" in core.disarm("op").reason
    core.on_ack(0)
    assert core.disarm("op").accepted and core.state is IDLE


def test_an_earlier_write_still_on_its_way_blocks_disarming() -> None:
    core = armed_core()
    core.set_valves(mask("000010000"), "op")
    core.set_valves(0, "op")
    assert not core.disarm("op").accepted  # FUEL1's write may still be applied after the close
    core.on_ack(mask("000010000"))
    assert not core.disarm("op").accepted
    core.on_ack(0)
    assert core.disarm("op").accepted


def test_an_acknowledgement_settles_only_the_writes_up_to_it() -> None:
    core = armed_core()
    for pattern in ("000000000", "010000000", "000000000"):
        core.set_valves(mask(pattern), "op")
    core.on_ack(0)  # the first write's: GOX1's and the last close are still on their way
    assert core.possibly_open == mask("010000000") and not core.disarm("op").accepted
    core.on_ack(mask("010000000"))
    core.on_ack(0)
    assert core.possibly_open == 0 and core.disarm("op").accepted


def test_manual_valves_pass_the_interlocks() -> None:
    core = StandCore(STAND)
    verdict = core.set_valves(mask("010000000"), "op")
    assert verdict == Verdict(
        False,
        "refused by interlock isolation-needs-armed: the isolation valves (GOX1, FUEL1) may only open while "
        "the stand is armed; this also keeps them from ever being open together unless armed",
    )
    assert core.set_valves(mask("000000001"), "op").reason.startswith(
        "refused by interlock igniter-needs-armed"
    )
    assert core.commanded == 0
    verdict = core.set_valves(mask("101101110"), "op")
    assert verdict.accepted and verdict.reason == "valves 101101110 set by op"
    assert verdict.writes == (ValveWrite(mask("101101110"), "manual"),) and core.commanded == mask(
        "101101110"
    )
    assert core.set_valves(512, "op") == Verdict(False, "valve mask 512 is out of range for 9 valves")
    core.arm("op")
    assert core.set_valves(mask("010010001"), "op").accepted


def test_sequence_refusals() -> None:
    core = StandCore(STAND)
    assert core.start_sequence("nope", "op", 0.0) == Verdict(
        False,
        "unknown sequence 'nope' (sequences: o2feed, fuelfeed, o2cleaning, fuelcleaning, preburning, "
        "burningstart, burning, hotfire)",
    )
    assert core.start_sequence("emergency", "op", 0.0) == Verdict(
        False, "emergency is the abort sequence: use abort"
    )
    assert core.cancel("op") == Verdict(False, "no sequence is running")
    assert core.start_sequence("o2cleaning", "op", 0.0).accepted
    running = Verdict(False, "sequence o2cleaning is running: cancel or abort first")
    assert core.start_sequence("fuelcleaning", "op", 0.1) == running
    assert core.set_valves(0, "op") == running
    assert core.arm("op") == running
    assert core.disarm("op") == running


@pytest.mark.parametrize("name", ARMED_ONLY)
def test_sequences_that_open_isolation_valves_or_the_igniter_need_arming(name: str) -> None:
    core = StandCore(STAND)
    assert core.start_sequence(name, "op", 0.0) == Verdict(
        False, f"sequence {name} requires the stand to be armed: arm first"
    )
    assert core.state is IDLE and core.commanded == 0
    core.arm("op")
    started = core.start_sequence(name, "op", 10.0)
    steps = STAND.sequences[name].steps
    assert started.accepted and started.transitions[0].new is RUNNING
    assert started.writes[0] == ValveWrite(mask(str(steps[0].valves)), f"sequence {name} step 1/{len(steps)}")


@pytest.mark.parametrize("name", [*ARMED_ONLY, *CLEANINGS])
def test_shipped_sequences_write_their_steps_on_time_and_return(name: str) -> None:
    steps = STAND.sequences[name].steps
    for armed in (True, False) if name in CLEANINGS else (True,):
        core = armed_core() if armed else StandCore(STAND)
        started = core.start_sequence(name, "op", 100.0)
        written = [(100.0, write) for write in started.writes] + run(core, 200.0)
        expected_times = [100.0 + sum(step.wait_ms for step in steps[:i]) / 1000 for i in range(len(steps))]
        assert [t for t, _ in written] == pytest.approx(expected_times)
        assert [write for _, write in written] == [
            ValveWrite(mask(str(step.valves)), f"sequence {name} step {i}/{len(steps)}")
            for i, step in enumerate(steps, start=1)
        ]
        assert core.state is (ARMED if armed else IDLE) and core.sequence is None and core.next_due() is None
        assert core.reason == f"sequence {name} finished"


def test_a_sequence_started_armed_is_armed_while_it_runs() -> None:
    core = armed_core()
    core.start_sequence("o2cleaning", "op", 0.0)
    progress = core.sequence
    assert progress is not None and (progress.name, progress.step, progress.steps) == ("o2cleaning", 1, 4)
    assert progress.armed and core.armed and core.state is RUNNING and progress.started == 0.0
    assert core.next_due() == pytest.approx(0.2)
    idle = StandCore(STAND)
    idle.start_sequence("o2cleaning", "op", 0.0)
    assert idle.sequence is not None and not idle.sequence.armed and not idle.armed


def test_a_late_tick_writes_the_step_late_and_keeps_the_wait_after_it() -> None:
    core = armed_core()
    core.start_sequence("o2cleaning", "op", 0.0)
    assert core.tick(0.1).writes == ()  # not due yet
    assert core.tick(0.25).writes == (ValveWrite(mask("001000100"), "sequence o2cleaning step 2/4"),)
    assert core.next_due() == pytest.approx(5.25)


def test_cancel_stops_where_it_is() -> None:
    core = armed_core()
    core.start_sequence("burning", "op", 0.0)
    verdict = core.cancel("bob")
    assert verdict.accepted and verdict.writes == ()
    assert [(t.old, t.new) for t in verdict.transitions] == [(RUNNING, ARMED)]
    assert core.reason == "sequence burning cancelled by bob after step 1/3"
    assert core.commanded == mask("010010101") and core.next_due() is None and core.tick(5.0).writes == ()
    idle = StandCore(STAND)
    idle.start_sequence("fuelcleaning", "op", 0.0)
    run(idle, 0.2)
    assert idle.cancel("bob").transitions[0].new is IDLE and idle.commanded == mask("000100010")


def test_the_abort_sequence_closes_isolation_igniter_and_run_valves_first_then_vents_then_purges() -> None:
    core = armed_core()
    core.start_sequence("burning", "op", 0.0)
    run(core, 1.6)
    assert core.acknowledged == mask("010010110")  # the burn, igniter off
    verdict = core.abort("chamber over-pressure", "redline", 2.0)
    assert verdict.accepted and verdict.reason == "aborting: chamber over-pressure"
    assert [(t.old, t.new, t.reason) for t in verdict.transitions] == [
        (ARMED, ABORTING, "abort by redline: chamber over-pressure")
    ]
    first = verdict.writes[0]
    assert first == ValveWrite(0, "abort emergency step 1/7")
    burning = VALVES.mask_of(["GOX1", "FUEL1", "IGNITION", "GOX2", "FUEL2"])
    assert first.mask & burning == 0 and core.commanded == 0  # all five shut by the first write
    written = [(2.0, first), *run(core, 100.0)]
    assert [(round(t - 2.0, 6), VALVES.format(w.mask)) for t, w in written] == [
        (0.0, "000000000"),  # isolation valves, igniter and run valves closed at once
        (0.1, "100001000"),  # vent through both reliefs
        (1.6, "000000000"),
        (1.8, "000000110"),  # open the run lines downstream of the closed isolation valves
        (1.9, "001100110"),  # N2 purge through them
        (6.9, "000000110"),
        (7.4, "000000000"),
    ]
    assert all(w.mask & DANGER == 0 for _, w in written)
    assert core.state is IDLE and core.reason == "abort sequence emergency finished" and core.sequence is None


def test_abort_preempts_a_running_sequence_at_once() -> None:
    core = armed_core()
    core.start_sequence("burning", "op", 0.0)
    verdict = core.abort("operator", "alice", 0.1)
    assert verdict.writes == (ValveWrite(0, "abort emergency step 1/7"),)
    assert [(t.old, t.new) for t in verdict.transitions] == [(RUNNING, ABORTING)]
    assert core.sequence is not None and core.sequence.abort and core.sequence.name == "emergency"
    later = core.tick(0.5)  # when burning's second step would have been due
    assert later.writes == (ValveWrite(mask("100001000"), "abort emergency step 2/7"),)
    assert all(w.cause.startswith("abort emergency") for _, w in run(core, 100.0))


def test_abort_is_always_accepted_and_changes_nothing_while_aborting() -> None:
    core = StandCore(STAND)
    assert core.abort("test from idle", "op", 0.0).transitions[0].old is IDLE
    snapshot = (core.state, core.commanded, core.sequence, core.reason, core.next_due())
    again = core.abort("second", "op", 0.05)
    assert again == Verdict(True, "already aborting (abort by op: test from idle)")
    aborting = Verdict(False, "aborting: only abort is accepted")
    assert core.arm("op") == aborting
    assert core.disarm("op") == aborting
    assert core.set_valves(0, "op") == aborting
    assert core.start_sequence("o2cleaning", "op", 0.05) == aborting
    assert core.start_sequence("nope", "op", 0.05) == aborting
    assert core.cancel("op") == aborting
    assert core.on_write_failed("ack timeout", 0.05) == Verdict(False, "valve write failed: ack timeout")
    assert (core.state, core.commanded, core.sequence, core.reason, core.next_due()) == snapshot
    run(core, 100.0)
    assert core.state is IDLE


def test_a_failed_write_aborts_while_armed_or_running_and_is_only_reported_otherwise() -> None:
    assert StandCore(STAND).on_write_failed("no ack in 250 ms", 0.0) == Verdict(
        False, "valve write failed: no ack in 250 ms"
    )
    for core in (armed_core(), StandCore(STAND)):
        if core.state is IDLE:
            core.start_sequence("o2cleaning", "op", 0.0)
        verdict = core.on_write_failed("no ack in 250 ms", 0.3)
        assert verdict.accepted and core.state is ABORTING
        assert core.reason == "abort by actuation: valve write failed: no ack in 250 ms"
        assert verdict.writes == (ValveWrite(0, "abort emergency step 1/7"),)


def test_the_abort_ends_only_once_the_device_confirms_isolation_and_igniter_closed() -> None:
    core = armed_core()
    core.set_valves(mask("010000000"), "op")
    core.on_ack(mask("010000000"))
    core.abort("test", "op", 0.0)
    written = run(core, end := ABORT_DURATION + 2.5, ack=False)  # the device is silent
    assert core.state is ABORTING and core.possibly_open & DANGER == mask("010000000")
    resent = [(t, w) for t, w in written if "ended" in w.cause]
    assert [round(t, 6) for t, _ in resent] == [round(ABORT_DURATION + 1, 6), round(ABORT_DURATION + 2, 6)]
    assert resent[0][1] == ValveWrite(
        0, "abort emergency ended: last step again until the device confirms GOX1 closed"
    )
    core.on_ack(0)  # the device answers
    due = core.next_due()
    assert due is not None and due <= end
    verdict = core.tick(end)
    assert [(t.old, t.new) for t in verdict.transitions] == [(ABORTING, IDLE)] and core.acknowledged == 0


def test_a_step_refused_by_an_interlock_aborts() -> None:
    """Never happens once the sequences are validated: proven here by swapping in stricter rules."""
    stricter = Settings.model_validate(
        {"interlocks": [*(rule.model_dump() for rule in STAND.interlocks), purge_rule := rule_for("purge")]}
    )
    core = StandCore(STAND)
    core._interlocks = Interlocks(stricter, VALVES)  # the rules changed under a validated core
    assert core.start_sequence("o2cleaning", "op", 0.0).accepted
    verdict = core.tick(0.2)
    assert [(t.old, t.new) for t in verdict.transitions] == [(RUNNING, ABORTING)]
    assert verdict.writes == (ValveWrite(0, "abort emergency step 1/7"),)
    assert core.reason == (
        f"sequence o2cleaning step 2/4 refused by interlock {purge_rule['name']}: {purge_rule['reason']}"
    )
    core = StandCore(STAND)
    core._interlocks = Interlocks(
        Settings.model_validate(
            {"interlocks": [*(r.model_dump() for r in STAND.interlocks), rule_for("run")]}
        ),
        VALVES,
    )
    verdict = core.start_sequence("o2cleaning", "op", 0.0)
    assert not verdict.accepted and verdict.reason.startswith(
        "sequence o2cleaning step 1/4 refused by interlock"
    )
    assert [(t.old, t.new) for t in verdict.transitions] == [(IDLE, RUNNING), (RUNNING, ABORTING)]
    assert verdict.writes == (ValveWrite(0, "abort emergency step 1/7"),)


def rule_for(role: str) -> dict[str, Any]:
    return {"name": f"{role}-needs-armed", "reason": f"{role} valves only when armed", "valves": [role]}


def test_a_config_with_an_unsafe_sequence_or_unguarded_valves_is_refused() -> None:
    with pytest.raises(ValueError, match="sequence 'fuelfeed' may run unarmed"):
        StandCore(Settings.model_validate({"sequences": {"fuelfeed": {"requires_armed": False}}}))
    with pytest.raises(ValueError, match="no interlock keeps IGNITION closed"):
        StandCore(Settings.model_validate({"interlocks": [STAND.interlocks[1].model_dump()]}))


# --- stateful -------------------------------------------------------------------------------------

# Mostly patterns that matter (closed, isolation valves, igniter, a burn, purge and vent), then any.
MASKS = st.one_of(
    st.sampled_from(
        [0, 0, *(mask(p) for p in ("010000000", "000010000", "000000001", "010010111", "101101110"))]
    ),
    st.integers(-1, 1 << VALVES.count),
)
UNACKNOWLEDGED = (AlarmState.ACTIVE_UNACKNOWLEDGED, AlarmState.CLEARED_UNACKNOWLEDGED)
NAMES = st.sampled_from([*STAND.sequences, "hotfire", "hotfire", "nope"])
# Channel values around the hot fire's conditions (go/no-go, feed, ignition), met or not.
VALUES = st.fixed_dictionaries(
    {
        "P1": st.sampled_from([5.0, 40.0]),
        "P3": st.sampled_from([5.0, 28.0]),
        "P5": st.sampled_from([0.5, 12.0, 30.0]),
        "P7": st.sampled_from([20.0, 45.0]),
        "P8": st.sampled_from([10.0, 30.0]),
    }
)


class StandMachine(RuleBasedStateMachine):
    """A service driving the core on time, and a device that answers writes in order."""

    def __init__(self) -> None:
        super().__init__()
        self.core = StandCore(STAND)
        self.now = 0.0
        self.queue: list[int] = []  # written, not yet processed by the device
        self.outputs = 0  # the device's valves
        self.abort_end: float | None = None
        self.moves: list[int] = []  # motor moves started, not yet reported done
        self.alarms = AlarmBook()
        self.runs = RunBook(STAND)  # test runs: started by hand or by a `test: true` procedure

    # the service's view ---------------------------------------------------------------------------

    def snapshot(self) -> tuple[Any, ...]:
        core = self.core
        return (core.state, core.commanded, core.sequence, core.reason, core.next_due(), core.possibly_open)

    def command(self, call: Any, *, is_abort: bool = False, is_tick: bool = False) -> Verdict:
        """Run a command, check what it may do, and hand its writes to the device.

        While aborting, nothing but time (`tick`) changes anything; abort is accepted, the rest refused.
        """
        before_state, before_armed, before = self.core.state, self.core.armed, self.snapshot()
        verdict: Verdict = call()
        if before_state is ABORTING and not is_tick:
            assert verdict.writes == () and verdict.transitions == ()
            assert verdict.accepted == is_abort and self.snapshot() == before
        self.absorb(verdict, before_state, before_armed)
        self.runs.follow(self.core.sequence, self.core.state, self.now, self.now)  # as the control thread
        return verdict

    def absorb(self, verdict: Verdict, before_state: SystemState, before_armed: bool) -> None:
        state = before_state
        for transition in verdict.transitions:
            assert transition.old is state
            if state is ABORTING:  # never before the abort sequence has run to its end
                assert self.abort_end is not None and self.now >= self.abort_end - 1e-6
            state = transition.new
            if state is ABORTING:
                self.abort_end = self.now + ABORT_DURATION
        assert state is self.core.state
        self.moves.extend(request.token for request in verdict.moves)
        for write in verdict.writes:
            if write.cause.startswith("abort"):
                assert write.mask & DANGER == 0, write
            else:
                assert before_state is not ABORTING, write
                assert INTERLOCKS.check(write.mask, armed=before_armed) is None, write
            self.queue.append(write.mask)
        if verdict.writes:
            assert self.core.commanded == verdict.writes[-1].mask

    # commands -------------------------------------------------------------------------------------

    @rule()
    def arm(self) -> None:
        before = self.core.state
        verdict = self.command(lambda: self.core.arm("op"))
        assert verdict.accepted == (before is IDLE)

    @rule()
    def disarm(self) -> None:
        self.command(lambda: self.core.disarm("op"))

    @rule(mask=MASKS)
    def set_valves(self, mask: int) -> None:
        progress = self.core.sequence
        verdict = self.command(lambda: self.core.set_valves(mask, "op"))
        if progress is not None and progress.held is None:
            assert not verdict.accepted, "a manual command while a sequence runs"
        if progress is not None and progress.procedure and self.core.state is RUNNING:
            assert verdict.reason in ("", f"procedure {progress.name} is running: hold or abort first") or (
                progress.held is not None
            )

    @rule(name=NAMES)
    def start_sequence(self, name: str) -> None:
        self.command(lambda: self.core.start_sequence(name, "op", self.now))

    @rule()
    def cancel(self) -> None:
        self.command(lambda: self.core.cancel("op"))

    @rule()
    def abort(self) -> None:
        before = self.core.state
        verdict = self.command(lambda: self.core.abort("test", "op", self.now), is_abort=True)
        assert verdict.accepted and self.core.state is ABORTING
        if before is not ABORTING:
            assert verdict.writes[0] == ValveWrite(
                ABORT_MASKS[0], f"abort emergency step 1/{len(ABORT_MASKS)}"
            )

    @rule(ms=st.one_of(st.sampled_from([0, 100, 200, 500, 3000, 8000]), st.integers(0, 8000)))
    def advance(self, ms: int) -> None:
        """Time passes; the service ticks exactly when due."""
        target = self.now + ms / 1000
        for _ in range(1000):
            due = self.core.next_due()
            if due is None or due > target:
                break
            self.now = max(self.now, due)
            self.command(lambda: self.core.tick(self.now), is_tick=True)
        else:
            raise AssertionError("tick never settles")
        self.now = target

    # the device -----------------------------------------------------------------------------------

    @precondition(lambda self: self.queue)
    @rule(outcome=st.sampled_from(["acknowledged", "acknowledged", "ack lost", "write lost"]))
    def device_processes_a_write(self, outcome: str) -> None:
        """The oldest pending write: applied and acknowledged, applied with its ack lost, or lost."""
        written = self.queue.pop(0)
        if outcome != "write lost":
            self.outputs = written
        if outcome == "acknowledged":
            self.core.on_ack(written)
        else:
            self.failed("no acknowledgement within 250 ms")

    @rule()
    def device_goes_safe(self) -> None:
        """Watchdog or go-safe: every valve closes, the pending writes are refused."""
        refused, self.queue, self.outputs = self.queue, [], 0
        self.core.on_ack(0)
        for _ in refused:
            self.failed("refused: no heartbeat")

    def device_acknowledges_everything(self) -> None:
        while self.queue:
            self.outputs = self.queue.pop(0)
            self.core.on_ack(self.outputs)

    def failed(self, reason: str) -> None:
        before_state = self.core.state
        verdict = self.command(lambda: self.core.on_write_failed(reason, self.now))
        assert verdict.accepted == (before_state in (ARMED, RUNNING))

    @rule()
    def device_answers_everything_then_time_passes(self) -> None:
        """With a device that answers, an abort ends in IDLE at its sequence's end, or if that has passed
        unconfirmed, within one re-send of its last step (an earlier answer may have been ambiguous)."""
        aborting, start = self.core.state is ABORTING, self.now
        self.device_acknowledges_everything()
        for _ in range(1000):
            due = self.core.next_due()
            if due is None:
                break
            self.now = max(self.now, due)
            verdict = self.command(lambda: self.core.tick(self.now), is_tick=True)
            self.device_acknowledges_everything()
            if aborting and any(t.new is IDLE for t in verdict.transitions):
                assert self.abort_end is not None
                assert self.now <= max(self.abort_end, start) + 1.0 + 1e-6
        held = self.core.sequence is not None and self.core.sequence.held is not None
        assert held or (self.core.state in (IDLE, ARMED) and self.core.sequence is None)

    # procedures: holds, channel values, motor moves ------------------------------------------------

    @rule()
    def hold(self) -> None:
        self.command(lambda: self.core.hold("test", "op", self.now))

    @rule()
    def resume(self) -> None:
        self.command(lambda: self.core.resume("op", self.now))

    @rule(values=VALUES)
    def telemetry(self, values: dict[str, float]) -> None:
        self.command(lambda: self.core.on_values(values, self.now), is_tick=True)

    @rule(ignites=st.booleans())
    def plant_follows_the_valves(self, ignites: bool) -> None:
        """Values as the stand gives them for the device's valves: lines fill, the chamber lights (or not)."""
        opened = set(VALVES.open_names(self.outputs))
        chamber = (12.0 if ignites else 3.0) if {"GOX2", "FUEL2"} <= opened else 0.3
        values = {"P7": 45.0, "P8": 30.0, "P5": chamber}
        values |= {"P1": 40.0 if "GOX1" in opened else 0.0, "P3": 28.0 if "FUEL1" in opened else 0.0}
        self.command(lambda: self.core.on_values(values, self.now), is_tick=True)

    @rule()
    def arm_and_start_the_hotfire(self) -> None:
        self.arm_if_idle()
        self.plant_follows_the_valves(ignites=True)
        self.command(lambda: self.core.start_sequence("hotfire", "op", self.now))

    def arm_if_idle(self) -> None:
        if self.core.state is IDLE:
            self.command(lambda: self.core.arm("op"))

    @precondition(lambda self: self.core.sequence is not None and self.core.sequence.name == "hotfire")
    @rule(ignites=st.sampled_from([True, True, True, False]), steps=st.integers(1, 10))
    def the_hotfire_goes_on(self, ignites: bool, steps: int) -> None:
        """The device answers, the stand responds, and time passes to the procedure's next deadline."""
        for _ in range(steps):
            self.device_acknowledges_everything()
            self.plant_follows_the_valves(ignites)
            due = self.core.next_due()
            if due is not None:
                self.now = max(self.now, due)
                self.command(lambda: self.core.tick(self.now), is_tick=True)

    @precondition(lambda self: self.moves)
    @rule(ok=st.booleans())
    def motor_done(self, ok: bool) -> None:
        token = self.moves.pop(0)
        self.command(lambda: self.core.on_motor_done(token, ok, "test", self.now), is_tick=True)

    # alarms (they never command anything: the core's invariants hold whatever they do) --------------

    @rule(limit=st.sampled_from(STAND.warning_limits), raised=st.booleans())
    def alarm(self, limit: Redline, raised: bool) -> None:
        if raised:
            self.alarms.raise_limit("warning", limit, 20.0, self.now)
        else:
            self.alarms.clear_limit("warning", limit, self.now)

    @rule(alarm_id=st.integers(1, 8))
    def acknowledge(self, alarm_id: int) -> None:
        before = {a.id: a.state for a in self.alarms.alarms}
        refusal = self.alarms.acknowledge(alarm_id, "op", self.now)
        assert (refusal is None) == (before.get(alarm_id) in UNACKNOWLEDGED)

    @invariant()
    def alarms_are_consistent(self) -> None:
        keys = [a.key for a in self.alarms.alarms]
        assert len(keys) == len(set(keys)), "one alarm per limit"
        for alarm in self.alarms.alarms:
            assert (alarm.acknowledged_by is not None) == (alarm.state is AlarmState.ACTIVE_ACKNOWLEDGED)
            assert (alarm.cleared_ts is not None) == (alarm.state is AlarmState.CLEARED_UNACKNOWLEDGED)

    # test runs (bookkeeping: they never command anything) ------------------------------------------

    @rule(name=st.sampled_from(["leak check", "cold flow"]))
    def run_start(self, name: str) -> None:
        active = self.runs.active
        refusal = self.runs.start(name, "", "op", self.now)
        assert (refusal is None) == (active is None)

    def test_procedure_running(self) -> bool:
        progress = self.core.sequence
        return progress is not None and not progress.abort and STAND.sequences[progress.name].test

    @rule()
    def run_stop(self) -> None:
        """Refused while a test procedure runs: its run ends by itself after it (or its abort)."""
        active, procedure = self.runs.active, self.test_procedure_running()
        refusal = self.runs.stop(None, "op", self.now)
        assert (refusal is None) == (active is not None and not procedure), refusal
        if refusal is None:
            assert self.runs.active is None and self.runs.last is active

    @invariant()
    def a_test_procedure_runs_inside_a_run_that_remembers_an_abort(self) -> None:
        active, last = self.runs.active, self.runs.last
        if self.test_procedure_running():
            assert active is not None, "a test procedure runs outside a test run"
        if self.core.state is ABORTING and active is not None:
            assert active.aborted, "an abort during a run is part of its result"
        if last is not None:
            assert last.result is not None and (last.result == "aborted") == last.aborted

    # invariants -----------------------------------------------------------------------------------

    @invariant()
    def states_are_consistent(self) -> None:
        core, progress = self.core, self.core.sequence
        assert (progress is None) == (core.state in (IDLE, ARMED))
        assert core.state is not RUNNING or (progress is not None and not progress.abort)
        assert core.state is not ABORTING or (progress is not None and progress.abort)
        armed = core.state is ARMED or (core.state is RUNNING and progress is not None and progress.armed)
        assert core.armed == armed

    @invariant()
    def idle_is_safe(self) -> None:
        if self.core.state is IDLE:
            assert self.core.commanded & DANGER == 0
            assert self.core.acknowledged & DANGER == 0
            assert self.outputs & DANGER == 0, "the device holds a dangerous valve open while idle"
            assert all(m & DANGER == 0 for m in self.queue), "a dangerous write is still on its way"

    @invariant()
    def an_abort_ends_on_time_unless_the_device_has_not_confirmed(self) -> None:
        if self.core.state is ABORTING and self.abort_end is not None and self.now > self.abort_end + 1e-6:
            due = self.core.next_due()
            waiting = bool(self.core.possibly_open & DANGER)
            assert waiting or (due is not None and due <= self.now)


StandMachine.TestCase.settings = settings(
    max_examples=500, stateful_step_count=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_stand_core_state_machine = StandMachine.TestCase
