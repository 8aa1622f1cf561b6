"""The valve output path end to end: a command published as `actuation` -> real Mosquitto (project ACL)
-> rcs-acquisition (its own process, as `acquisition`) -> pty -> the STM32 emulator, and the device's
answer back on rcs/stm32/valve_ack; acquisition closing the valves on its own.

What the device received is read from the emulator itself: a tap records every byte its firmware is
handed, so the test sees the exact frames and lines on the wire. No timing assertions: every wait is
a liveness bound, and "never reached the device" is checked after a later command's answer, which
the device sends only after reading everything before it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import msgpack
import pytest

from services.common import topics
from services.common.codec import pack
from services.common.mqtt import Message, MqttClient
from services.common.settings import MqttSettings, Settings
from services.common.stm32_wire import (
    Deframer,
    Frame,
    FrameError,
    GoSafeFrame,
    HeartbeatFrame,
    SetValvesFrame,
    encode_set_valves,
    parse_frame,
)
from services.devstack.broker import Broker
from services.emulators.stm32 import Stm32Emulator
from services.logger.events import read_events
from tests.conftest import wait_until
from tests.processes import Acquisition, Logger
from tests.test_gateway_rest import OPERATOR, Served, gateway_settings

TIMEOUT = 20.0
GOX1, FUEL1, PURGE1 = 0b000000010, 0b000010000, 0b000000100


class DeviceTap:
    """Every byte the emulated STM32 receives from the host, recorded as its firmware gets it."""

    def __init__(self, emulator: Stm32Emulator) -> None:
        self._lock = threading.Lock()
        self._data = bytearray()
        emulator.add_receive_tap(self._record)

    def _record(self, data: bytes, _now: float) -> None:
        with self._lock:
            self._data += data

    def data(self) -> bytes:
        with self._lock:
            return bytes(self._data)

    def frames(self) -> list[Frame]:
        frames: list[Frame] = []
        for body in Deframer().feed(self.data()):
            try:
                frames.append(parse_frame(body))
            except FrameError:
                continue
        return frames

    def valve_lines(self) -> list[bytes]:
        return [line for line in self.data().split(b"\n") if line.startswith(b"Valves:")]


@dataclass
class Inbox:
    """Decoded messages of one subscription, for the test thread."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, message: Message) -> None:
        if not message.payload:
            return
        decoded = msgpack.unpackb(message.payload, raw=False)
        with self.lock:
            self.messages.append(decoded)

    def all(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.messages)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [m for m in self.all() if predicate(m)]
            return bool(found)

        wait_until(seen, TIMEOUT, what)
        return found[0]


@dataclass
class Stand:
    emulator: Stm32Emulator
    tap: DeviceTap
    acquisition: Acquisition
    actuation: MqttClient  # logged in as `actuation`, the only user allowed to command valves
    acks: Inbox
    events: Inbox
    stm32_state: Inbox

    def command(self, cmd_no: int, mask: int, *, deadline_in: float = 5.0, cause: str = "test") -> None:
        message = {"cmd_no": cmd_no, "mask": mask, "deadline": time.time() + deadline_in, "cause": cause}
        assert self.actuation.publish(topics.STM32_VALVES, pack(message), qos=1)

    def go_safe(self, cmd_no: int, reason: str = "test") -> None:
        message = {"cmd_no": cmd_no, "deadline": time.time() + 5.0, "reason": reason}
        assert self.actuation.publish(topics.STM32_GO_SAFE, pack(message), qos=1)

    def ack(self, cmd_no: int) -> dict[str, Any]:
        return self.acks.wait_for(lambda m: m.get("cmd_no") == cmd_no, f"the answer to command {cmd_no}")

    def log(self) -> str:
        return self.acquisition.log.read_text()


StandFactory = Callable[..., Stand]


@pytest.fixture
def stand(settings: Settings, broker: Broker, tmp_path: Path) -> Iterator[StandFactory]:
    """`stand("binary" | "text", broker=...)`: emulator + rcs-acquisition + clients, ready for commands."""
    started: list[Stand] = []
    stack = ExitStack()

    def make(protocol: Literal["binary", "text"], *, on: Broker = broker) -> Stand:
        link = tmp_path / f"stm32-{len(started)}"
        observer = MqttClient(on.settings("operator"), "test-valve-observer")
        acks, events, stm32_state, status = Inbox(), Inbox(), Inbox(), Inbox()
        observer.subscribe(topics.status("acquisition"), status, qos=1)
        observer.subscribe(topics.STM32_VALVE_ACK, acks, qos=1)
        observer.subscribe(topics.EVENTS, events, qos=1)
        observer.subscribe(topics.STATE_STM32, stm32_state, qos=1)
        actuation = MqttClient(on.settings("actuation"), "test-actuation")  # not rcs/status/actuation
        for client in (observer, actuation):
            stack.callback(client.stop)
            client.start()
            assert client.wait_connected(TIMEOUT)
        emulator = Stm32Emulator(settings, protocol=protocol, link_path=link)
        tap = DeviceTap(emulator)
        emulator.start()
        stack.callback(emulator.stop)
        acquisition = stack.enter_context(Acquisition(on.settings("acquisition"), link, tmp_path))
        stand = Stand(emulator, tap, acquisition, actuation, acks, events, stm32_state)
        started.append(stand)
        # Online is sent after its SUBSCRIBE on the same connection: its command subscription is in
        # place (its STM32 state may come before, from another thread).
        pid = acquisition.process.pid
        status.wait_for(lambda m: m["state"] == "online" and m["pid"] == pid, "acquisition online")
        stm32_state.wait_for(
            lambda m: m["connected"] and m["port"] == str(link) and m["protocol"] == protocol,
            f"acquisition to connect to the {protocol} emulator",
        )
        if protocol == "binary":  # the device refuses valve writes until heartbeats arrive
            wait_until(
                lambda: any(isinstance(f, HeartbeatFrame) for f in tap.frames()), TIMEOUT, "a heartbeat"
            )
        return stand

    try:
        with stack:
            yield make
    finally:
        for stand in started:
            print(f"--- acquisition log ---\n{stand.log()}")  # shown by pytest when the test failed


def test_a_command_from_actuation_reaches_the_device_and_is_acknowledged(stand: StandFactory) -> None:
    s = stand("binary")
    s.command(42, GOX1 | FUEL1, cause="test: open GOX1 and FUEL1")
    ack = s.ack(42)
    assert (ack["ok"], ack["result"], ack["valves"]) == (True, "applied", GOX1 | FUEL1), ack
    assert isinstance(ack["text"], str) and isinstance(ack["ts"], float)
    assert s.emulator.valves == GOX1 | FUEL1
    assert encode_set_valves(42, GOX1 | FUEL1) in s.tap.data()  # the exact bytes of docs/stm32-protocol.md
    assert [f for f in s.tap.frames() if isinstance(f, SetValvesFrame)] == [SetValvesFrame(42, GOX1 | FUEL1)]

    s.go_safe(43, reason="test: close everything")
    ack = s.ack(43)
    assert (ack["ok"], ack["result"], ack["valves"]) == (True, "go_safe_applied", 0), ack
    assert s.emulator.valves == 0
    assert GoSafeFrame(43) in s.tap.frames()


def test_an_expired_command_never_reaches_the_device(stand: StandFactory) -> None:
    s = stand("binary")
    s.command(50, GOX1, deadline_in=-1.0)
    ack = s.ack(50)
    assert (ack["ok"], ack["result"], ack["valves"]) == (False, "expired", None), ack
    assert s.emulator.valves == 0

    s.command(51, PURGE1)  # answered by the device only after it read everything sent before
    assert s.ack(51)["result"] == "applied"
    assert s.emulator.valves == PURGE1
    assert [f.cmd_no for f in s.tap.frames() if isinstance(f, SetValvesFrame)] == [51]
    assert "past its deadline" in s.log()


def test_malformed_commands_are_counted_logged_once_and_never_executed(stand: StandFactory) -> None:
    s = stand("binary")
    deadline = time.time() + 5
    malformed: list[tuple[str, bytes]] = [
        (topics.STM32_VALVES, b"\xc1 not msgpack"),
        (topics.STM32_VALVES, pack({"cmd_no": 60, "mask": GOX1})),  # no deadline, no cause
        (topics.STM32_VALVES, msgpack.packb([60, GOX1])),
        (topics.STM32_VALVES, pack({"cmd_no": "60", "mask": GOX1, "deadline": deadline, "cause": "x"})),
        (topics.STM32_VALVES, pack({"cmd_no": 61, "mask": True, "deadline": deadline, "cause": "x"})),
        (topics.STM32_VALVES, pack({"cmd_no": 62, "mask": -1, "deadline": deadline, "cause": "x"})),
        (topics.STM32_VALVES, pack({"cmd_no": 63, "mask": GOX1, "deadline": math.nan, "cause": "x"})),
        (topics.STM32_VALVES, pack({"cmd_no": 70_000, "mask": GOX1, "deadline": deadline, "cause": "x"})),
        (topics.STM32_GO_SAFE, pack({"cmd_no": 64, "deadline": deadline})),  # no reason
        (topics.STM32_GO_SAFE, b""),
    ]
    for topic, payload in malformed:
        assert s.actuation.publish(topic, payload, qos=1)
    s.command(65, 1 << 12)  # a valve the stand does not have: refused with an answer, not sent
    ack = s.ack(65)
    assert (ack["ok"], ack["result"]) == (False, "refused_bad_mask"), ack

    s.command(66, GOX1)
    assert s.ack(66)["result"] == "applied"
    assert s.acquisition.alive()
    assert sorted(a["cmd_no"] for a in s.acks.all()) == [65, 66]  # nothing answered the malformed ones
    assert [f.cmd_no for f in s.tap.frames() if isinstance(f, SetValvesFrame | GoSafeFrame)] == [66]
    log = s.log()
    assert log.count(f"ignored a malformed command on {topics.STM32_VALVES}") == 1
    assert log.count(f"ignored a malformed command on {topics.STM32_GO_SAFE}") == 1


def test_a_retained_command_is_never_executed(
    stand: StandFactory, mqtt_as: Callable[[str], MqttSettings]
) -> None:
    """A command left retained on the broker would be replayed at every subscription: ignored."""
    actuation = MqttClient(mqtt_as("actuation"), "test-actuation-retainer")
    actuation.start()
    try:
        assert actuation.wait_connected(TIMEOUT)
        stale = {"cmd_no": 70, "mask": GOX1, "deadline": time.time() + 60, "cause": "retained by mistake"}
        assert actuation.publish(topics.STM32_VALVES, pack(stale), qos=1, retain=True)
        s = stand("binary")
        s.command(71, PURGE1)
        assert s.ack(71)["result"] == "applied"
        assert [f.cmd_no for f in s.tap.frames() if isinstance(f, SetValvesFrame)] == [71]
        assert all(a["cmd_no"] != 70 for a in s.acks.all())
        assert "ignored a retained command" in s.log()
    finally:
        actuation.publish(topics.STM32_VALVES, b"", qos=1, retain=True)  # clears the retained message
        actuation.stop()


def test_text_protocol_answers_are_matched_to_commands_in_order(stand: StandFactory) -> None:
    s = stand("text")
    s.command(7, GOX1)
    s.command(8, GOX1 | FUEL1)
    s.command(9, GOX1 | FUEL1)  # the same pattern twice: told apart by order
    for cmd_no, mask in ((7, GOX1), (8, GOX1 | FUEL1), (9, GOX1 | FUEL1)):
        ack = s.ack(cmd_no)
        assert (ack["ok"], ack["result"], ack["valves"]) == (True, "applied", mask), ack
    assert s.ack(8)["text"] == "ACK: Valves:010010000"
    assert s.tap.valve_lines()[-3:] == [b"Valves:010000000", b"Valves:010010000", b"Valves:010010000"]
    assert s.emulator.valves == GOX1 | FUEL1

    s.go_safe(10)
    ack = s.ack(10)
    assert (ack["ok"], ack["result"], ack["valves"]) == (True, "go_safe_applied", 0), ack
    assert s.tap.valve_lines()[-1] == b"Valves:000000000"
    assert s.emulator.valves == 0


def test_acquisition_closes_the_valves_when_actuation_goes_offline(
    stand: StandFactory, mqtt_as: Callable[[str], MqttSettings]
) -> None:
    s = stand("binary")
    s.command(80, FUEL1)
    assert s.ack(80)["result"] == "applied"
    assert s.emulator.valves == FUEL1

    offline = {"service": "actuation", "state": "offline", "reason": "connection lost", "ts": time.time()}
    try:  # actuation's Last Will, as the broker would publish it
        assert s.actuation.publish(topics.status("actuation"), pack(offline), qos=1, retain=True)
        wait_until(lambda: s.emulator.valves == 0, TIMEOUT, "the valves to close")
        event = s.events.wait_for(
            lambda m: m.get("service") == "acquisition" and m.get("kind") == "go_safe", "the go-safe event"
        )
        assert "actuation is offline" in event["reason"] and event["sent"] is True, event
        assert event["valves"] == FUEL1 and isinstance(event["ts"], float)
        ack = s.ack(event["cmd_no"])
        assert 0xFF00 <= ack["cmd_no"] <= 0xFFFF  # acquisition's own range
        assert (ack["ok"], ack["result"], ack["valves"]) == (True, "go_safe_applied", 0), ack
        assert GoSafeFrame(event["cmd_no"]) in s.tap.frames()
    finally:
        s.actuation.publish(topics.status("actuation"), b"", qos=1, retain=True)  # no stale offline


def test_acquisition_closes_the_valves_when_it_loses_the_broker_and_the_event_reaches_the_log(
    stand: StandFactory, restartable_broker: Broker, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with ExitStack() as stack:
        logger = stack.enter_context(Logger(restartable_broker.settings("logger"), tmp_path, data_dir))
        gateway = Served(gateway_settings(restartable_broker, data_dir))
        stack.callback(gateway.stop)
        probe = MqttClient(restartable_broker.settings("operator"), "test-probe")
        statuses = Inbox()
        probe.subscribe(topics.status("+"), statuses, qos=1)
        stack.callback(probe.stop)
        probe.start()
        s = stand("binary", on=restartable_broker)
        statuses.wait_for(lambda m: m["service"] == "logger" and m["state"] == "online", "the logger")
        statuses.wait_for(lambda m: m["service"] == "gateway" and m["state"] == "online", "the gateway")
        s.command(90, GOX1)
        assert s.ack(90)["result"] == "applied"
        assert s.emulator.valves == GOX1

        restartable_broker.stop()  # acquisition keeps the heartbeats going: only its own GO_SAFE closes them
        wait_until(lambda: s.emulator.valves == 0, TIMEOUT, "the valves to close")
        assert any(isinstance(f, GoSafeFrame) and f.cmd_no >= 0xFF00 for f in s.tap.frames())
        went_safe = time.time()
        # The logger comes back only after acquisition has reconnected (a restart, a slower backoff):
        # the event must still reach the events file, with the time it happened.
        logger.kill()
        restartable_broker.start()
        reconnected = statuses.wait_for(
            lambda m: m["service"] == "acquisition" and m["state"] == "online" and m["ts"] > went_safe,
            "acquisition to reconnect",
        )
        logger = stack.enter_context(Logger(restartable_broker.settings("logger"), tmp_path, data_dir))

        def go_safe_logged() -> list[dict[str, Any]]:
            return [
                event
                for path in data_dir.glob("events_*.jsonl")
                for event in read_events(path)
                if event.get("kind") == "go_safe"
            ]

        wait_until(lambda: bool(go_safe_logged()), TIMEOUT, "the go-safe event in the events file")
        (event,) = go_safe_logged()
        assert event["reason"] == "acquisition lost the MQTT broker" and event["sent"] is True, event
        assert event["cmd_no"] >= 0xFF00 and event["valves"] == GOX1, event
        assert event["ts"] < reconnected["ts"], "the time it happened, not the time it was published"
        # ...and the gateway's /api/events (its own reconnection raced acquisition's too)
        with httpx.Client(base_url=f"http://127.0.0.1:{gateway.port}", timeout=30) as client:
            headers = {"Authorization": f"Bearer {OPERATOR}"}
            shown = client.get("/api/events", headers=headers).json()["events"]
        assert [e for e in shown if e.get("kind") == "go_safe"] == [event], shown
        assert "acquisition lost the MQTT broker" in s.log()


def test_a_burst_of_commands_is_executed_in_order_and_each_answered_once(stand: StandFactory) -> None:
    s = stand("binary")
    masks = [GOX1, FUEL1, PURGE1, 0, GOX1 | PURGE1] * 4
    for cmd_no, mask in enumerate(masks, start=100):
        s.command(cmd_no, mask)
    for cmd_no, mask in enumerate(masks, start=100):
        assert s.ack(cmd_no)["valves"] == mask
    sent = [f for f in s.tap.frames() if isinstance(f, SetValvesFrame)]
    assert sent == [SetValvesFrame(n, m) for n, m in enumerate(masks, start=100)]
    assert len(s.acks.all()) == len(masks)
    assert s.emulator.valves == masks[-1]
