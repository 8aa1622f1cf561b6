"""The hot-fire procedure end to end: real Mosquitto, the STM32 and Arduino emulators behind ptys,
rcs-acquisition and rcs-actuation as processes, an operator commanding over MQTT request/response.

The shipped `hotfire` runs with shorter countdown, burn, purge and vent (a copy of stand.yaml with only
those waits changed), so each run takes seconds. The emulated engine lights when both run valves open
with the igniter on (services/emulators/stm32/physics.py): its chamber pressure P5 is what the ignition
step waits for. What the device did is read from the emulator; every wait is a liveness bound.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common import topics
from services.common.rpc import RpcError
from services.common.settings import DEFAULT_CONFIG, MqttSettings, Settings
from tests.conftest import wait_until
from tests.test_actuation_e2e import Stand, armed_console, running_stand
from tests.test_ctl import _ctl

TIMEOUT = 30.0
SHORTER_WAITS_MS = {0: 3000, 5: 1500, 8: 800, 10: 400}  # countdown, burn, purge, vent (step index)


@pytest.fixture
def hotfire_stand(  # armed, an operator console sending heartbeats
    settings: Settings, mqtt_as: Callable[[str], MqttSettings], tmp_path: Path
) -> Iterator[Stand]:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for index, wait_ms in SHORTER_WAITS_MS.items():
        config["sequences"]["hotfire"]["steps"][index]["wait_ms"] = wait_ms
    short = tmp_path / "stand.yaml"
    short.write_text(yaml.safe_dump(config))
    with running_stand(settings, mqtt_as, tmp_path, RCS_CONFIG=str(short)) as stand:
        console, _ = armed_console(stand)
        try:
            yield stand
        finally:
            console.stop()


def progress(stand: Stand) -> dict[str, Any]:
    return dict(stand.seen.state(topics.STATE_SYSTEM).get("sequence") or {})


def in_phase(stand: Stand, phase: str) -> None:
    wait_until(lambda: progress(stand).get("phase") == phase, TIMEOUT, f"the {phase} phase")


def test_the_hotfire_ignites_burns_shuts_down_and_ends_idle_with_everything_closed(
    hotfire_stand: Stand,
) -> None:
    stand = hotfire_stand
    assert stand.call("sequence", name="hotfire")["started"] is True
    # hold and resume (in the countdown: before T-0)
    assert stand.call("hold", reason="pad check")["held"] is True
    wait_until(lambda: progress(stand).get("held") is not None, TIMEOUT, "the hold to be published")
    assert "pad check" in progress(stand)["held"] and progress(stand)["phase"] == "countdown"
    assert stand.call("resume")["resumed"] is True
    wait_until(lambda: progress(stand).get("held") is None, TIMEOUT, "the resume to be published")
    # manual commands are refused while it runs
    with pytest.raises(RpcError, match="procedure hotfire is running: hold or abort first"):
        stand.call("valve", name="RELIEF1", open=True)
    with pytest.raises(RpcError, match="procedure hotfire is running: hold or abort first"):
        stand.call("motor", motor_id=1, angle=10)

    in_phase(stand, "mainstage")  # the chamber pressure rose: it lit
    burn = stand.mask("010010110")  # both propellants flowing, the igniter off
    wait_until(lambda: burn in stand.writes.seen(), TIMEOUT, "the main stage's valves at the device")
    with pytest.raises(RpcError, match="past T-0"):
        stand.call("hold", reason="too late")
    wait_until(lambda: stand.system_state() == "idle", TIMEOUT, "the procedure to end")
    system = stand.seen.state(topics.STATE_SYSTEM)
    assert system["reason"] == "procedure hotfire finished" and system["armed"] is False
    # idle once the isolation valves and igniter are closed; the vents' closing may land just after
    wait_until(lambda: stand.stm32.valves == 0, TIMEOUT, "every valve closed at the device")
    seen = stand.writes.seen()
    assert stand.mask("001100110") in seen, "the purge ran"
    assert not [e for e in stand.seen.events_of("state") if e["new"] == "aborting"]
    # the history a run's report draws: every step's phase and T-0, every valve change
    wait_until(
        lambda: [e["sequence"] for e in stand.seen.events_of("step")][-1:] == [None],
        TIMEOUT,
        "the step event saying the procedure ended",
    )
    steps = [e for e in stand.seen.events_of("step") if e["sequence"] == "hotfire"]
    phases = ["countdown", "feed", "ignition", "mainstage", "shutdown", "purge", "vent", "safing"]
    assert list(dict.fromkeys(e["phase"] for e in steps)) == phases
    numbers = [e["step"] for e in steps]
    assert all(a < b for a, b in itertools.pairwise(numbers)) and numbers[-1] == steps[-1]["steps"]
    t0 = [e["t0"] for e in steps if e["t0"] is not None]  # UNIX, from actuation's monotonic clock
    assert t0 and max(t0) - min(t0) < 0.01
    ignition = steps[[e["phase"] for e in steps].index("ignition")]
    assert ignition["t0"] == pytest.approx(ignition["at"], abs=0.01), "T-0 is when the ignition began"

    def bits() -> list[str]:
        return [e["bits"] for e in stand.seen.events_of("valves")]

    # the procedure ends idle once the isolation valves and igniter are closed: the vents' closing
    # may be acknowledged after that
    wait_until(lambda: bits()[-1:] == ["000000000"], TIMEOUT, "the last valves event: all closed")
    assert "010010110" in bits()
    assert all(a != b for a, b in itertools.pairwise(bits())), "one event per change"


def test_a_chamber_over_pressure_mid_burn_aborts(
    hotfire_stand: Stand, mqtt_as: Callable[[str], MqttSettings]
) -> None:
    stand = hotfire_stand
    stand.call("sequence", name="hotfire")
    in_phase(stand, "mainstage")
    stand.stm32.override("P5", 30.0)  # red-line: above 25 bar
    wait_until(lambda: stand.system_state() == "aborting", TIMEOUT, "the red-line to abort")
    assert "P5" in stand.seen.state(topics.STATE_SYSTEM)["reason"]
    stand.stm32.override("P5", None)
    wait_until(lambda: stand.system_state() == "idle", TIMEOUT, "the abort to end")
    assert stand.stm32.valves & stand.mask("010010001") == 0
    assert any(e["sequence"] == "emergency" and e["abort"] for e in stand.seen.events_of("step"))
    wait_until(
        lambda: bool(stand.seen.state(topics.STATE_ALARMS).get("alarms")), TIMEOUT, "the red-line's alarm"
    )
    (alarm,) = [a for a in stand.seen.state(topics.STATE_ALARMS)["alarms"] if a["kind"] == "redline"]
    assert alarm["channel"] == "P5"
    listed, _ = _ctl(mqtt_as("operator"), "alarms").communicate(timeout=TIMEOUT)
    assert b"redline P5 above 25" in listed
    acked = _ctl(mqtt_as("operator"), "ack", str(alarm["id"]))  # the operator's command line
    output, _ = acked.communicate(timeout=TIMEOUT)
    assert acked.returncode == 0, output.decode()
    wait_until(
        lambda: all(a["id"] != alarm["id"] for a in stand.seen.state(topics.STATE_ALARMS)["alarms"]),
        TIMEOUT,
        "the acknowledged, cleared alarm to go",
    )


def test_no_ignition_aborts(hotfire_stand: Stand) -> None:
    stand = hotfire_stand
    stand.stm32.override("P5", 0.5)  # the chamber never pressurises: no ignition
    stand.call("sequence", name="hotfire")
    wait_until(lambda: stand.system_state() == "aborting", TIMEOUT, "the missing ignition to abort")
    assert "P5 above 8" in stand.seen.state(topics.STATE_SYSTEM)["reason"]
    wait_until(lambda: stand.system_state() == "idle", TIMEOUT, "the abort to end")
    assert stand.stm32.valves & stand.mask("010010001") == 0
