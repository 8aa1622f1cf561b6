"""Sequences v2 in the core: the hot-fire procedure step by step, its conditions, holds, T-time, motor
steps, and the configuration checks that refuse a bad sequence with one line naming file, step, problem."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from services.actuation.core import StandCore, SystemState, ValveWrite, Verdict
from services.actuation.valve_map import ValveMap
from services.common.settings import DEFAULT_CONFIG, Settings, config_file, describe_problems, load_settings

STAND = load_settings()
VALVES = ValveMap(STAND)
DANGER = VALVES.mask_of(["isolation", "igniter"])
IDLE, ARMED, RUNNING, ABORTING = (
    SystemState.IDLE,
    SystemState.ARMED,
    SystemState.RUNNING,
    SystemState.ABORTING,
)
GO = {"P7": 45.0, "P8": 30.0, "P5": 0.3, "P1": 0.0, "P3": 0.0}
HOTFIRE = STAND.sequences["hotfire"]


class Bench:
    """The core with a device that acknowledges at once and a clock the test moves."""

    def __init__(self, settings: Settings = STAND) -> None:
        self.core = StandCore(settings)
        self.now = 0.0
        self.written: list[tuple[float, ValveWrite]] = []
        self.verdicts: list[Verdict] = []

    def take(self, verdict: Verdict) -> Verdict:
        self.verdicts.append(verdict)
        for write in verdict.writes:
            self.written.append((self.now, write))
            self.core.on_ack(write.mask)
        return verdict

    def values(self, **values: float) -> Verdict:
        return self.take(self.core.on_values(values, self.now))

    def advance(self, seconds: float) -> None:
        """Tick whenever due up to now + seconds."""
        end = self.now + seconds
        while (due := self.core.next_due()) is not None and due <= end:
            self.now = max(self.now, due)
            self.take(self.core.tick(self.now))
        self.now = end

    def opened(self) -> list[str]:
        return VALVES.open_names(self.core.commanded)

    def start(self) -> Verdict:
        self.take(self.core.arm("op"))
        self.values(**GO)
        return self.take(self.core.start_sequence("hotfire", "op", self.now))


def fire_until_mainstage(bench: Bench) -> None:
    assert bench.start().accepted
    assert bench.core.phase == "countdown" and bench.opened() == []
    bench.advance(7.0)
    assert bench.core.phase == "feed" and bench.opened() == ["GOX1", "FUEL1"]
    bench.values(P1=35.0)
    bench.values(P3=25.0)
    assert bench.core.phase == "ignition" and "IGNITION" in bench.opened()
    bench.advance(0.3)
    assert bench.opened() == ["GOX1", "FUEL1", "GOX2", "FUEL2", "IGNITION"]
    bench.values(P5=12.0)  # ignition
    assert bench.core.phase == "mainstage" and "IGNITION" not in bench.opened()


def test_the_hotfire_ignites_burns_shuts_down_in_order_and_ends_idle_all_closed() -> None:
    bench = Bench()
    fire_until_mainstage(bench)
    mainstage = bench.now
    bench.advance(10.0)
    burn_end = next(t for t, w in bench.written if "step 7/" in w.cause)
    assert burn_end - mainstage == pytest.approx(3.0)  # the configured burn duration
    shutdown = [VALVES.format(w.mask) for t, w in bench.written if t >= burn_end]
    assert shutdown == [
        "000010010",  # oxidiser off first: GOX2, GOX1
        "000000000",  # then fuel: FUEL2, FUEL1
        "001100110",  # N2 purge of both run lines, isolation closed
        "000000000",
        "100001000",  # vent
        "000000000",
    ]
    assert bench.core.state is IDLE and not bench.core.armed and bench.core.commanded & DANGER == 0
    assert bench.core.reason == "procedure hotfire finished"
    # every step once, in order, the last one (no wait: it ends the procedure at once) too, then the end
    steps = bench.core.take_steps()
    assert [p.step if p else None for _, p in steps] == [*range(1, len(HOTFIRE.steps) + 1), None]
    phases = [p.phase for _, p in steps if p is not None]
    assert list(dict.fromkeys(phases)) == list(STAND.phases)
    ignition = next(p for _, p in steps if p is not None and p.phase == "ignition")
    assert ignition.t0 == pytest.approx(mainstage - 0.3)  # T-0: the igniter, 0.3 s before the propellants
    assert next(at for at, p in steps if p is not None and p.phase == "mainstage") == pytest.approx(mainstage)
    assert bench.core.take_steps() == []


def test_no_ignition_aborts() -> None:
    bench = Bench()
    assert bench.start().accepted
    bench.advance(7.0)
    bench.values(P1=35.0, P3=25.0)
    bench.advance(0.3)
    bench.values(P5=3.0)  # cold flow only
    bench.advance(1.6)
    assert bench.core.state is ABORTING
    assert "P5 above 8 (is 3) not reached within 1500 ms" in bench.core.reason
    assert bench.written[-1][1].cause.startswith("abort emergency")


def test_a_failed_go_no_go_holds_and_resume_checks_again() -> None:
    bench = Bench()
    bench.take(bench.core.arm("op"))
    bench.values(**{**GO, "P7": 20.0})
    assert bench.take(bench.core.start_sequence("hotfire", "op", 0.0)).accepted
    progress = bench.core.sequence
    assert progress is not None and progress.step == 0 and bench.written == []
    assert progress.held == "sequence hotfire step 1/12: requirement P7 above 35 (is 20) not met"
    assert bench.take(bench.core.resume("op", 0.0)).accepted  # resumed, and held again at once
    assert bench.core.sequence is not None and bench.core.sequence.held is not None
    bench.values(P7=44.0)
    assert bench.take(bench.core.resume("op", 1.0)).accepted
    assert bench.core.sequence is not None and bench.core.sequence.step == 1


def test_hold_freezes_the_countdown_and_resume_continues_with_what_was_left() -> None:
    bench = Bench()
    bench.start()
    bench.advance(2.0)
    assert bench.core.timing(bench.now)[0] == pytest.approx(-5.0)
    held = bench.take(bench.core.hold("weather", "alice", bench.now))
    assert held == Verdict(True, "procedure hotfire held")
    assert bench.core.sequence is not None and bench.core.sequence.held == "hold by alice: weather"
    assert bench.core.next_due() is None
    bench.advance(60.0)
    t, to_next = bench.core.timing(bench.now)
    assert bench.core.phase == "countdown" and t == pytest.approx(-5.0) and to_next == pytest.approx(5.0)
    assert bench.take(bench.core.hold("again", "bob", bench.now)).reason.endswith(
        "already held: hold by alice: weather"
    )
    # held: manual commands pass (the interlocks of the armed procedure still apply)
    assert bench.take(bench.core.set_valves(VALVES.mask_of(["RELIEF1"]), "alice")).accepted
    assert bench.take(bench.core.resume("alice", bench.now)).accepted
    bench.advance(4.9)
    assert bench.core.phase == "countdown"
    bench.advance(0.2)
    assert bench.core.phase == "feed" and bench.opened() == ["RELIEF1", "GOX1", "FUEL1"]


def test_manual_commands_are_refused_while_the_procedure_runs_and_no_hold_or_cancel_after_t0() -> None:
    bench = Bench()
    fire_until_mainstage(bench)
    running = Verdict(False, "procedure hotfire is running: hold or abort first")
    assert bench.core.set_valves(0, "op") == running
    assert bench.core.manual_refusal() == running.reason
    assert bench.core.disarm("op") == running
    assert bench.core.hold("x", "op", bench.now) == Verdict(
        False, "procedure hotfire is past T-0: no hold, abort to stop it"
    )
    assert bench.core.cancel("op") == Verdict(False, "procedure hotfire is past T-0: abort to stop it")
    t, _ = bench.core.timing(bench.now)
    assert t is not None and t > 0
    assert bench.take(bench.core.abort("test", "op", bench.now)).writes[0] == ValveWrite(
        0, "abort emergency step 1/7"
    )


def with_sequence(steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"sequences": {"probe": {"requires_armed": True, **extra, "steps": steps}}}


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ([{"open": ["GOX3"]}], "step 1/1: unknown valves ['GOX3']"),
        ([{"valves": "0101"}], "step 1/1: pattern '0101' has 4 digits, expected 9"),
        ([{"open": ["GOX1"], "close": ["GOX1"]}], "step 1/1: opens and closes ['GOX1'] in the same step"),
        ([{"valves": "000000000", "open": ["GOX1"]}], "step 1/1: give either a whole pattern"),
        ([{"phase": "coasting"}], "step 1/1: unknown phase 'coasting'"),
        ([{"require": [{"channel": "P99", "above": 1}]}], "step 1/1: condition on unknown channel 'P99'"),
        (
            [{"motor": {"motor": "MOTOR9", "by_deg": 5, "timeout_ms": 1000}}],
            "step 1/1: unknown motor 'MOTOR9'",
        ),
        ([{"wait_ms": 5, "wait_until": {"channel": "P5", "above": 1, "timeout_ms": 5}}], "not both"),
        ([{"t0": True}, {"hold": "no"}], "step 2/2: no hold at or after T-0"),
    ],
)
def test_a_bad_sequence_is_refused_with_one_line_naming_file_sequence_step_and_problem(
    steps: list[dict[str, Any]], problem: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate(with_sequence(steps))
    lines = describe_problems(caught.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{config_file()}: sequences.probe ")
    assert problem in lines[0]


def test_a_missing_timeout_is_named_by_its_step() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate(with_sequence([{}, {"wait_until": {"channel": "P5", "above": 1}}]))
    assert describe_problems(caught.value) == (
        f"{config_file()}: sequences.probe step 2.wait_until.timeout_ms: Field required"
    )


def test_a_procedure_must_end_closed_and_armed_only() -> None:
    with pytest.raises(ValidationError, match="must end with every isolation valve and the igniter closed"):
        Settings.model_validate(with_sequence([{"open": ["GOX1"]}], procedure=True))
    with pytest.raises(ValidationError, match="a procedure must set requires_armed: true"):
        Settings.model_validate(
            with_sequence([{"valves": "000000000"}], procedure=True, requires_armed=False)
        )


def test_a_motor_step_waits_for_its_move_and_a_failed_move_aborts() -> None:
    move = {"motor": "MOTOR1", "target_deg": 100.0, "timeout_ms": 5000}
    settings = Settings.model_validate(
        with_sequence([{"motor": move, "wait_ms": 100}, {"valves": "000000010"}])
    )
    for ok in (True, False):
        bench = Bench(settings)
        bench.take(bench.core.arm("op"))
        started = bench.take(bench.core.start_sequence("probe", "op", 0.0))
        (request,) = started.moves
        assert request.move.motor == "MOTOR1" and request.move.target_deg == 100.0
        assert bench.core.manual_refusal() == "sequence probe is running: cancel or abort first"
        bench.advance(1.0)
        assert bench.written == []  # waits for the motor
        assert not bench.core.on_motor_done(request.token + 1, True, "", bench.now).accepted  # not its move
        bench.take(bench.core.on_motor_done(request.token, ok, "stalled", bench.now))
        bench.advance(1.0)
        if ok:
            assert bench.core.state is ARMED and bench.opened() == ["FUEL2"]
        else:
            assert bench.core.state is ABORTING and "motor move failed: stalled" in bench.core.reason
    bench = Bench(settings)
    bench.take(bench.core.arm("op"))
    bench.take(bench.core.start_sequence("probe", "op", 0.0))
    bench.advance(5.0)
    assert bench.core.state is ABORTING and "motor move not done in time" in bench.core.reason


def test_actuation_refuses_to_start_on_a_bad_sequence_with_one_line(tmp_path: Path) -> None:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["sequences"]["hotfire"]["steps"][2]["open"] = ["GOX3"]
    bad = tmp_path / "stand.yaml"
    bad.write_text(yaml.safe_dump(config))
    env = {**os.environ, "RCS_CONFIG": str(bad)}
    ran = subprocess.run(
        [sys.executable, "-m", "services.actuation"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 1 and ran.stdout == ""
    assert ran.stderr.splitlines() == [
        "actuation: refusing to start, invalid configuration:",
        f"{bad}: sequences.hotfire step 3/12: unknown valves ['GOX3'] (valves: {', '.join(VALVES.names)})",
    ]


def test_a_motor_move_that_ends_while_held_waits_for_resume_with_nothing_due() -> None:
    move = {"motor": "MOTOR1", "by_deg": 10.0, "timeout_ms": 5000}
    settings = Settings.model_validate(
        with_sequence([{"motor": move, "wait_ms": 200}, {"valves": "000000010"}])
    )
    bench = Bench(settings)
    bench.take(bench.core.arm("op"))
    (request,) = bench.take(bench.core.start_sequence("probe", "op", 0.0)).moves
    assert bench.take(bench.core.hold("check", "op", 0.5)).accepted
    assert bench.core.next_due() == 5.0  # the move's deadline still counts while held
    bench.take(bench.core.on_motor_done(request.token, True, "", 1.0))
    assert bench.core.next_due() is None  # nothing to do until resume (no busy loop on a past time)
    bench.now = 10.0
    assert bench.take(bench.core.resume("op", 10.0)).accepted
    assert bench.core.next_due() == pytest.approx(10.2)
    bench.advance(1.0)
    assert bench.core.state is ARMED and bench.opened() == ["FUEL2"]
