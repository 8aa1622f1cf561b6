"""Actuation end to end: real Mosquitto (project ACL), the STM32 and Arduino emulators behind real
ptys, rcs-acquisition and rcs-actuation as their own processes, an operator client commanding them.

What reached the STM32 is read from the emulator's receive tap; what the stand did is read from the
retained state topics and the audit events. Every wait is a liveness bound, not a timing assertion.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest

from services.common import topics
from services.common.codec import pack, publish_properties, unpack_map
from services.common.heartbeat import Heartbeats
from services.common.mqtt import Message, MqttClient
from services.common.rpc import RpcClient, RpcError
from services.common.settings import MqttSettings, Settings
from services.common.stm32_wire import Deframer, FrameError, SetValvesFrame, parse_frame
from services.emulators.arduino import ArduinoEmulator
from services.emulators.stm32 import Stm32Emulator
from tests.conftest import wait_until
from tests.processes import Acquisition, emulated_devices

TIMEOUT = 20.0
RELIEFS = 0b000100001  # RELIEF1 and RELIEF2: the abort's venting step


class Observer:
    """The operator's view: latest retained states and every event."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latest: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []

    def on_message(self, message: Message) -> None:
        decoded = unpack_map(message.payload)
        with self._lock:
            if topics.is_event(message.topic):
                self.events.append(decoded)
            else:
                self.latest[message.topic] = decoded

    def state(self, topic: str) -> dict[str, Any]:
        with self._lock:
            return dict(self.latest.get(topic, {}))

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e.get("kind") == kind]


class DeviceWrites:
    """The SET_VALVES masks the STM32 received, in order."""

    def __init__(self, emulator: Stm32Emulator) -> None:
        self._deframer = Deframer()
        self._lock = threading.Lock()
        self.masks: list[int] = []
        emulator.add_receive_tap(self._record)

    def _record(self, data: bytes, _now: float) -> None:
        for body in self._deframer.feed(data):
            try:
                frame = parse_frame(body)
            except FrameError:
                continue
            if isinstance(frame, SetValvesFrame):
                with self._lock:
                    self.masks.append(frame.valves)

    def seen(self) -> list[int]:
        with self._lock:
            return list(self.masks)


def armed_console(stand: Stand) -> tuple[Heartbeats, dict[str, Any]]:
    """An open operator console, started, and the reply to the `arm` it allows: `arm` is retried only
    while actuation refuses it for having seen no heartbeat yet (the observable sign that it has)."""
    sender = Heartbeats(stand.operator, "test-operator")
    sender.start()
    reply: dict[str, Any] = {}

    def armed() -> bool:
        try:
            reply.update(stand.call("arm"))
        except RpcError as exc:
            if "no operator heartbeat received" not in str(exc):
                raise
            return False
        return True

    try:
        wait_until(armed, TIMEOUT, "actuation to see a heartbeat and arm")
    except BaseException:
        sender.stop()
        raise
    return sender, reply


@dataclass
class Stand:
    stm32: Stm32Emulator
    arduino: ArduinoEmulator
    writes: DeviceWrites
    operator: MqttClient
    rpc: RpcClient
    seen: Observer
    mask: Callable[[str], int]
    acquisition: Acquisition | None = None  # the process, for a test that restarts it

    def call(self, command: str, **body: Any) -> dict[str, Any]:
        return self.rpc.call(
            topics.actuation(command), {**body, "who": "test-operator", "origin": "pytest"}, timeout=10
        )

    def system_state(self) -> str:
        return str(self.seen.state(topics.STATE_SYSTEM).get("state"))


@contextmanager
def running_stand(
    settings: Settings, mqtt_as: Callable[[str], MqttSettings], tmp_path: Path, **actuation_env: str
) -> Iterator[Stand]:
    """The emulators, acquisition and actuation (with `actuation_env`), and an operator watching."""
    valve_index = {name: i for i, name in enumerate(settings.valve_names)}

    def mask(bits: str) -> int:
        return sum(
            1 << valve_index[name] for name, bit in zip(settings.valve_names, bits, strict=True) if bit == "1"
        )

    with ExitStack() as stack:
        stm32, arduino, acquisition = emulated_devices(stack, settings, mqtt_as, tmp_path, **actuation_env)
        writes = DeviceWrites(stm32)
        operator = MqttClient(mqtt_as("operator"), "operator")
        seen = Observer()
        watched = (
            topics.STATE_SYSTEM,
            topics.STATE_VALVES,
            topics.STATE_MOTORS,
            topics.STATE_STM32,
            topics.STATE_ALARMS,
            topics.EVENTS,
        )
        for topic in watched:
            operator.subscribe(topic, seen.on_message, qos=1)
        stack.callback(operator.stop)
        operator.start()
        rpc = RpcClient(operator)
        stack.callback(rpc.close)
        assert operator.wait_connected(10)
        wait_until(
            lambda: seen.state(topics.STATE_SYSTEM).get("state") == "idle", TIMEOUT, "actuation to start"
        )
        wait_until(
            lambda: seen.state(topics.STATE_MOTORS).get("connected") is True, TIMEOUT, "the Arduino handshake"
        )
        wait_until(
            lambda: seen.state(topics.STATE_STM32).get("connected") is True,
            TIMEOUT,
            "acquisition's STM32 link",
        )
        yield Stand(stm32, arduino, writes, operator, rpc, seen, mask, acquisition)


@pytest.fixture
def stand(settings: Settings, mqtt_as: Callable[[str], MqttSettings], tmp_path: Path) -> Iterator[Stand]:
    with running_stand(settings, mqtt_as, tmp_path) as running:
        yield running


def test_valve_command_reaches_the_device_and_the_acknowledged_state_is_published(stand: Stand) -> None:
    run_valves = stand.mask("000000110")
    result = stand.call("valves", valves=[0, 0, 0, 0, 0, 0, 1, 1, 0])
    assert result["bits"] == "000000110"
    assert run_valves in stand.writes.seen()
    assert stand.stm32.valves == run_valves
    wait_until(
        lambda: stand.seen.state(topics.STATE_VALVES).get("bits") == "000000110", TIMEOUT, "valve state"
    )

    with pytest.raises(RpcError, match="igniter-needs-armed"):
        stand.call("valve", name="IGNITION", open=True)
    assert stand.stm32.valves == run_valves, "a refused command writes nothing"
    wait_until(lambda: len(stand.seen.events_of("command")) >= 2, TIMEOUT, "audit events")
    accepted, refused = stand.seen.events_of("command")[:2]
    # the login is what the broker proves; the body's who/origin are only a recorded claim
    assert (accepted["who"], accepted["login"], accepted["origin"], accepted["accepted"]) == (
        "operator",
        "operator",
        "mqtt",
        True,
    )
    assert accepted["claimed_who"] == "test-operator"
    assert refused["accepted"] is False and "igniter-needs-armed" in refused["reason"]


def test_audit_fields_are_bounded_whatever_the_sender_puts_in_them(stand: Stand) -> None:
    huge = "W" * 500_000
    body = {"valves": [0] * 9, "who": huge, "origin": huge, "note": [huge] * 3, "many": list(range(10_000))}
    assert stand.rpc.call(topics.actuation("valves"), body, timeout=10)["bits"] == "000000000"
    with pytest.raises(RpcError):
        stand.rpc.call(topics.actuation("valves"), {**body, "valves": huge}, timeout=10)
    stand.rpc.call(topics.actuation("abort"), {"who": huge, "reason": huge}, timeout=10)
    wait_until(lambda: len(stand.seen.events_of("command")) >= 2, TIMEOUT, "audit events")  # valves, abort
    wait_until(lambda: "abort" in str(stand.seen.state(topics.STATE_SYSTEM).get("reason")), TIMEOUT, "abort")
    for event in [*stand.seen.events_of("command"), *stand.seen.events_of("state")]:
        assert len(msgpack.packb(event)) < 20_000, {k: str(v)[:80] for k, v in event.items()}
    for event in stand.seen.events_of("command"):  # the body's `who` is a claim, kept clipped
        assert event["who"] == "operator" and event["claimed_who"].startswith("W" * 200)
    assert len(str(stand.seen.state(topics.STATE_SYSTEM)["reason"])) < 1000


def test_the_valve_state_follows_what_the_device_reports_by_itself(stand: Stand) -> None:
    def valves() -> dict[str, Any]:
        return stand.seen.state(topics.STATE_VALVES)

    wait_until(lambda: valves().get("cause") == "reported by the STM32", TIMEOUT, "the state at start")
    assert valves()["bits"] == "000000000" and len(valves()["names"]) == 9
    assert stand.call("valves", valves="000000110")["bits"] == "000000110"
    wait_until(lambda: valves().get("bits") == "000000110", TIMEOUT, "the acknowledged state")
    stand.stm32.stall(1.5)  # no heartbeats from the host meanwhile: the device closes every valve
    wait_until(lambda: valves().get("bits") == "000000000", TIMEOUT, "the device's own go-safe")
    assert valves()["cause"] == "reported by the STM32"


def test_redline_trip_aborts_and_the_abort_reaches_the_device(stand: Stand) -> None:
    console, _ = armed_console(stand)
    try:
        stand.call("sequence", name="o2feed")
        fed = stand.mask("010000100")  # o2feed's last step, 200 ms after its first
        wait_until(lambda: fed in stand.writes.seen(), TIMEOUT, "the GOX feed")
        written_before = len(stand.writes.seen())
        stand.stm32.override("P5", 30.0)  # chamber over-pressure, limit 25 bar
        wait_until(lambda: stand.system_state() == "aborting", TIMEOUT, "the red-line to abort")
        assert "P5" in stand.seen.state(topics.STATE_SYSTEM)["reason"]
        wait_until(
            lambda: RELIEFS in stand.writes.seen()[written_before:], TIMEOUT, "the abort's venting step"
        )
        after_trip = stand.writes.seen()[written_before:]
        assert after_trip[0] == 0, "the abort's first write closes everything"
        assert all(m & stand.mask("010010001") == 0 for m in after_trip), "isolation and igniter stay closed"
        wait_until(lambda: stand.seen.events_of("redline") != [], TIMEOUT, "the red-line event")
        assert stand.seen.events_of("redline")[0]["channel"] == "P5"
    finally:
        console.stop()


def test_an_abort_the_device_has_not_confirmed_is_reported_and_goes_on(stand: Stand) -> None:
    written_before = len(stand.writes.seen())
    stand.stm32.stall(4.0)  # reads nothing meanwhile, so acknowledges nothing (tests: 2 s deadline)
    with pytest.raises(RpcError, match="aborting, not yet confirmed"):
        stand.call("abort", reason="test: a silent device")
    assert stand.system_state() == "aborting"
    wait_until(lambda: RELIEFS in stand.writes.seen()[written_before:], TIMEOUT, "the abort to go on")
    assert stand.writes.seen()[written_before] == 0, "the abort's first write closes everything"


def test_operator_heartbeat_loss_aborts(stand: Stand) -> None:
    console, armed = armed_console(stand)
    assert armed["state"] == "armed"
    console.stop()
    wait_until(lambda: stand.system_state() == "aborting", TIMEOUT, "the deadman to abort")
    assert "heartbeat" in stand.seen.state(topics.STATE_SYSTEM)["reason"]
    wait_until(lambda: stand.seen.events_of("deadman") != [], TIMEOUT, "the deadman event")


def test_an_expired_command_never_runs(stand: Stand) -> None:
    replies: list[Message] = []
    reply_topic = f"rcs/reply/{stand.operator.reply_id}-late"
    stand.operator.subscribe(reply_topic, replies.append, qos=1)
    assert stand.operator.wait_connected(10)
    late = publish_properties(
        ResponseTopic=reply_topic, CorrelationData=os.urandom(16), MessageExpiryInterval=3
    )
    body = {"valves": "000000110", "deadline": time.time() - 1.0, "who": "late operator"}
    request_topic = topics.request(topics.actuation("valves"), stand.operator.login)
    assert stand.operator.publish(request_topic, pack(body), qos=1, properties=late)
    # a later, valid command is answered only after the late one was read: by then it must have done nothing
    stand.call("valves", valves="001000000")
    assert stand.mask("000000110") not in stand.writes.seen()
    assert stand.stm32.valves == stand.mask("001000000")
    assert replies == []


def test_motor_moves_complete_and_an_arduino_reset_is_recovered(stand: Stand) -> None:
    moved = stand.call("motor", motor_id=1, angle=90)
    assert moved["ok"] is True and moved["position_deg"] == pytest.approx(-1637.5)
    to_target = stand.call("motor", motor_id=2, target=-1000.0)
    assert to_target["position_deg"] == pytest.approx(-1000.0)
    with pytest.raises(RpcError, match=r"1727\.5"):
        stand.call("motor", motor_id=1, target=5000.0)

    stand.arduino.reset()
    wait_until(lambda: stand.seen.events_of("motor_reset") != [], TIMEOUT, "the reset to be noticed")
    (reset,) = stand.seen.events_of("motor_reset")

    def connected_again() -> bool:  # not the state from before the reset, which may still be the latest
        motors = stand.seen.state(topics.STATE_MOTORS)
        return motors.get("connected") is True and motors["ts"] > reset["ts"]

    wait_until(connected_again, TIMEOUT, "the handshake after the reset")
    after_reset = stand.call("motor", motor_id=2, angle=45)
    assert after_reset["position_deg"] == pytest.approx(-1727.5 + 45), "positions restart from the boot value"
