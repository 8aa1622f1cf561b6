"""Deadman: operator heartbeats, fresh telemetry and acquisition online, while armed or running."""

from __future__ import annotations

import pytest

from services.actuation.core import SystemState
from services.actuation.deadman import Deadman
from services.common.settings import load_settings

STAND = load_settings()  # operator_timeout_s 2.0, telemetry_stale_ms 500


def healthy(now: float = 100.0) -> Deadman:
    deadman = Deadman(STAND)
    deadman.acquisition_status(True, now)
    deadman.operator_heartbeat(now)
    deadman.telemetry(now)
    return deadman


def test_all_well_is_silent() -> None:
    deadman = healthy()
    deadman.telemetry(101.5)
    for state in SystemState:
        assert deadman.check(101.9, state) is None
    assert deadman.arm_blocker(101.9) is None


def test_nothing_heard_yet_blocks_arming() -> None:
    deadman = Deadman(STAND)
    assert deadman.arm_blocker(0.0) == "no operator heartbeat received"
    deadman.operator_heartbeat(0.0)
    assert deadman.arm_blocker(0.0) == "no telemetry received"
    deadman.telemetry(0.0)
    assert deadman.arm_blocker(0.0) == "acquisition offline (no status received)"
    deadman.acquisition_status(True, 0.0)
    assert deadman.arm_blocker(0.0) is None


@pytest.mark.parametrize("state", [SystemState.ARMED, SystemState.RUNNING])
def test_silence_trips_while_armed_or_running(state: SystemState) -> None:
    deadman = healthy()
    deadman.telemetry(102.0)
    assert deadman.check(102.3, state) == "no operator heartbeat for 2.3 s"
    deadman.operator_heartbeat(102.3)
    assert deadman.check(102.6, state) == "telemetry stale for 600 ms"
    deadman.telemetry(102.6)
    deadman.acquisition_status(False, 102.6)
    deadman.acquisition_status(False, 102.7)  # the retained status again: still offline since 102.6
    assert deadman.check(102.8, state) == "acquisition offline for 0.2 s"
    deadman.acquisition_status(True, 102.8)
    assert deadman.check(102.8, state) is None


def test_idle_and_aborting_never_trip() -> None:
    deadman = Deadman(STAND)
    assert deadman.check(1000.0, SystemState.IDLE) is None
    assert deadman.check(1000.0, SystemState.ABORTING) is None


def test_the_limits_are_inclusive_and_arming_uses_the_same_conditions() -> None:
    deadman = healthy(0.0)
    deadman.telemetry(1.5)
    assert deadman.check(2.0, SystemState.ARMED) is None  # exactly 2.0 s: not yet
    assert deadman.arm_blocker(2.0) is None
    assert (
        deadman.check(2.01, SystemState.ARMED)
        == deadman.arm_blocker(2.01)
        == "no operator heartbeat for 2.0 s"
    )
