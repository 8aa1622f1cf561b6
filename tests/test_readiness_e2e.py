"""Before the test, end to end: real Mosquitto (project ACL), the STM32 and Arduino emulators behind
ptys, rcs-acquisition and rcs-actuation as processes, an operator over MQTT request/response and
rcs-ctl.

- The tare changes the published values (the emulated GOX supply P7 reads ~45 bar; tared, ~0), is in
  the retained telemetry meta, persists across an acquisition restart, and is refused unless idle.
- The go/no-go checklist refuses arming with every failing item's reason, and allows it once
  satisfied; a procedure's start is refused the same way (a low GOX supply: the emulator's override).
"""

from __future__ import annotations

import json
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.common import topics
from services.common.heartbeat import Heartbeats
from services.common.mqtt import Message
from services.common.rpc import RpcError
from services.common.settings import MqttSettings, Settings
from services.common.telemetry import decode_batch
from tests.conftest import wait_until
from tests.processes import Acquisition
from tests.test_actuation_e2e import Stand, running_stand
from tests.test_ctl import _ctl

TIMEOUT = 20.0
# what this stand can satisfy, plus a recent tare of THRUST and the GOX supply within its range
CHECKLIST: list[dict[str, Any]] = [
    {"id": "stm32", "kind": "stm32_connected", "protocol": "binary"},
    {"id": "valves-closed", "kind": "valves_closed"},
    {"id": "gox-supply", "kind": "channel_range", "channel": "P7", "min": 35.0, "max": 55.0},
    {"id": "tare", "kind": "tare_recent", "channels": ["THRUST"], "max_age_s": 600},
]


class Means:
    """The mean of each channel over the latest telemetry batch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, float] = {}

    def on_batch(self, message: Message) -> None:
        batch = decode_batch(message.payload)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column (ISP without flow)
            means = np.nanmean(batch.data, axis=0)
        with self._lock:
            self._latest = dict(zip(batch.channels, means.tolist(), strict=True))

    def clear(self) -> None:
        with self._lock:
            self._latest = {}

    def __getitem__(self, channel: str) -> float:
        with self._lock:
            return self._latest.get(channel, float("nan"))


@pytest.fixture
def stand(settings: Settings, mqtt_as: Callable[[str], MqttSettings], tmp_path: Path) -> Iterator[Stand]:
    with running_stand(settings, mqtt_as, tmp_path, RCS_CHECKLIST=json.dumps(CHECKLIST)) as running:
        running.operator.subscribe(topics.TELEMETRY_META, running.seen.on_message, qos=1)
        yield running


def meta_tare(stand: Stand) -> dict[str, Any]:
    return dict(stand.seen.state(topics.TELEMETRY_META).get("tare") or {})


def test_tare_zeroes_the_published_values_persists_and_survives_a_restart(
    stand: Stand, mqtt_as: Callable[[str], MqttSettings], tmp_path: Path
) -> None:
    means = Means()
    stand.operator.subscribe(topics.TELEMETRY, means.on_batch)
    wait_until(lambda: abs(means["P7"] - 45.0) < 2.0, TIMEOUT, "the GOX supply at ~45 bar, untared")

    result = stand.call("tare", channels=["P7", "THRUST"], seconds=0.5)
    assert result["channels"] == ["P7", "THRUST"] and result["samples"] > 100
    assert abs(result["tare"]["P7"]["offset"] - 45.0) < 2.0
    assert result["tare"]["P7"]["by"] == "operator" and result["tare"]["P7"]["unit"] == "bar"
    wait_until(lambda: abs(means["P7"]) < 1.0, TIMEOUT, "the published P7 to read ~0 once tared")
    wait_until(lambda: "P7" in meta_tare(stand), TIMEOUT, "the tare in the telemetry meta")
    assert meta_tare(stand)["P7"]["offset"] == result["tare"]["P7"]["offset"]
    stored = json.loads((tmp_path / "tare.json").read_text())
    assert stored["channels"]["P7"]["offset"] == result["tare"]["P7"]["offset"]
    audit = [e for e in stand.seen.events_of("command") if e.get("command") == "tare"]
    assert audit and audit[-1]["accepted"] is True and audit[-1]["login"] == "operator"

    # a second tare of a tared channel zeroes the untared values again (not the tared ones)
    again = stand.call("tare", channels=["P7"], seconds=0.5)
    assert abs(again["tare"]["P7"]["offset"] - result["tare"]["P7"]["offset"]) < 1.0

    # acquisition restarted: the tare is read back, applied and published again
    assert stand.acquisition is not None and stand.acquisition.stop() == 0
    stand.seen.latest.pop(topics.TELEMETRY_META, None)
    means.clear()
    with Acquisition(mqtt_as("acquisition"), tmp_path / "stm32", tmp_path):
        wait_until(lambda: "P7" in meta_tare(stand), TIMEOUT, "the persisted tare in the new meta")
        assert meta_tare(stand)["P7"]["offset"] == again["tare"]["P7"]["offset"]
        wait_until(lambda: abs(means["P7"]) < 1.0, TIMEOUT, "the new session's P7 tared")
        cleared = stand.call("tare", channels=["P7"], clear=True)
        assert "P7" not in cleared["tare"] and "THRUST" in cleared["tare"]
        wait_until(lambda: abs(means["P7"] - 45.0) < 2.0, TIMEOUT, "P7 untared again")


def test_bad_tare_requests_are_refused_with_the_reason(stand: Stand) -> None:
    with pytest.raises(RpcError, match="derived on the host"):
        stand.call("tare", channels=["ISP"])
    with pytest.raises(RpcError, match="unknown channels"):
        stand.call("tare", channels=["NOPE"])
    with pytest.raises(RpcError, match="'seconds' must be within"):
        stand.call("tare", channels=["THRUST"], seconds=500)

    def audited() -> list[dict[str, Any]]:
        return [e for e in stand.seen.events_of("command") if e.get("command") == "tare"]

    wait_until(lambda: len(audited()) == 3, TIMEOUT, "each refusal audited")
    assert all(e["accepted"] is False and e["reason"].startswith("tare: ") for e in audited())


def test_the_checklist_refuses_arming_with_every_reason_then_allows_it(
    stand: Stand, mqtt_as: Callable[[str], MqttSettings]
) -> None:
    checklist = stand.call("checklist")
    by_id = {item["id"]: item for item in checklist["items"]}
    assert checklist["ok"] is False
    assert [item["id"] for item in checklist["items"]] == [c["id"] for c in CHECKLIST]
    assert by_id["stm32"]["ok"] and by_id["valves-closed"]["ok"]
    wait_until(lambda: stand.call("checklist")["items"][2]["ok"], TIMEOUT, "the GOX supply reading")
    assert by_id["tare"] == {
        "id": "tare",
        "label": "tare",
        "kind": "tare_recent",
        "ok": False,
        "reason": "THRUST not tared (at most 10 min old): tare them",
        "tare": ["THRUST"],
    }

    low_supply = "gox-supply: P7 2[0-9.]* outside 35 … 55"
    stand.stm32.override("P7", 20.0)  # the GOX bottle low: a second failing item
    wait_until(lambda: not stand.call("checklist")["items"][2]["ok"], TIMEOUT, "the low GOX supply")
    console = _heartbeats(stand)
    try:
        with pytest.raises(RpcError) as refused:
            stand.call("arm")
        not_tared = re.escape("tare: THRUST not tared (at most 10 min old): tare them")
        assert re.fullmatch(f"cannot arm: checklist: {low_supply}; {not_tared}", str(refused.value)), refused
        ctl = _ctl(mqtt_as("operator"), "checklist")  # the operator's command line shows the same
        output, _ = ctl.communicate(timeout=30)
        assert ctl.returncode == 1, output
        assert b"THRUST not tared" in output and b"outside 35" in output

        stand.stm32.override("P7", None)
        wait_until(lambda: stand.call("checklist")["items"][2]["ok"], TIMEOUT, "the GOX supply back")
        tare = _ctl(mqtt_as("operator"), "tare", "THRUST", "--seconds", "0.5")
        output, _ = tare.communicate(timeout=30)
        assert tare.returncode == 0, output
        assert stand.call("checklist")["ok"] is True
        assert stand.call("arm")["state"] == "armed"

        # armed: no tare (it would zero a loaded thrust), and a procedure is gated by the checklist
        with pytest.raises(RpcError, match="tare only while idle: the stand is armed"):
            stand.call("tare", channels=["THRUST"])
        stand.stm32.override("P7", 20.0)
        wait_until(lambda: not stand.call("checklist")["items"][2]["ok"], TIMEOUT, "the low GOX supply")
        with pytest.raises(RpcError, match=f"^cannot start hotfire: checklist: {low_supply}$"):
            stand.call("sequence", name="hotfire")
        assert stand.system_state() == "armed" and stand.stm32.valves == 0
        stand.call("disarm")
    finally:
        console.stop()


def _heartbeats(stand: Stand) -> Heartbeats:
    """An operator console sending heartbeats, seen by actuation (arming is then refused by the
    checklist, not for want of heartbeats)."""
    sender = Heartbeats(stand.operator, "test-operator")
    sender.start()

    def heard() -> bool:
        try:
            stand.call("arm")
        except RpcError as exc:
            return "no operator heartbeat" not in str(exc)
        raise AssertionError("armed although the checklist fails")

    try:
        wait_until(heard, TIMEOUT, "actuation to see a heartbeat")
    except BaseException:
        sender.stop()
        raise
    return sender
