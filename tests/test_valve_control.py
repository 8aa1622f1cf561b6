"""ValveControl's decisions without a broker or a device: what it writes, what it answers, and when it
closes the valves on its own. The link is a recorder of writes; answers are fed as the link would
deliver them. (tests/test_valve_path.py runs the same path end to end.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest

from services.acquisition.text_protocol import TextAck
from services.acquisition.valve_wire import parse_go_safe, parse_valves
from services.acquisition.valves import OWN_CMD_FIRST, ValveControl
from services.common import topics
from services.common.codec import WireFormatError
from services.common.mqtt import Message
from services.common.stm32_wire import AckResult, ValveAckFrame
from tests.conftest import wait_until

N_VALVES = 9


@dataclass
class Recorder:
    """The link's writes and everything published, thread-safe."""

    connected: bool = True
    writes: list[tuple[str, int, int | None]] = field(default_factory=list)  # (kind, cmd_no, mask)
    published: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set_valves(self, cmd_no: int, mask: int) -> bool:
        with self.lock:
            self.writes.append(("valves", cmd_no, mask))
        return self.connected

    def go_safe(self, cmd_no: int) -> bool:
        with self.lock:
            self.writes.append(("go_safe", cmd_no, None))
        return self.connected

    def publish(self, topic: str, payload: bytes, **_: Any) -> bool:
        with self.lock:
            self.published.append((topic, msgpack.unpackb(payload)))
        return True

    def publish_event(self, payload: bytes) -> None:
        with self.lock:
            self.published.append((topics.events("acquisition"), msgpack.unpackb(payload)))

    def acks(self) -> list[dict[str, Any]]:
        with self.lock:
            return [m for t, m in self.published if t == topics.STM32_VALVE_ACK]

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [m for t, m in self.published if topics.is_event(t)]

    def wait_writes(self, n: int) -> list[tuple[str, int, int | None]]:
        wait_until(lambda: len(self.writes) >= n, what=f"{n} writes")
        with self.lock:
            return list(self.writes)


@pytest.fixture
def link() -> Recorder:
    return Recorder()


@pytest.fixture
def control(link: Recorder) -> Iterator[ValveControl]:
    control = ValveControl(
        N_VALVES,
        link.publish,
        set_valves=link.set_valves,
        go_safe=link.go_safe,
        publish_event=link.publish_event,
    )
    control.start()
    yield control
    link.connected = False  # no go-safe at stop unless a test asks for one
    control.on_connection(None)
    control.stop()


def valves(cmd_no: int, mask: int, *, deadline_in: float = 5.0) -> Message:
    body = {"cmd_no": cmd_no, "mask": mask, "deadline": time.time() + deadline_in, "cause": "test"}
    return Message(topics.STM32_VALVES, msgpack.packb(body), False, None)


def offline() -> Message:
    body = {"service": "actuation", "state": "offline", "reason": "connection lost"}
    return Message(topics.status("actuation"), msgpack.packb(body), True, None)


def test_parsers_accept_the_documented_fields_and_nothing_else() -> None:
    command = parse_valves(msgpack.packb({"cmd_no": 1, "mask": 3, "deadline": 1e9, "cause": "c"}))
    assert (command.cmd_no, command.mask, command.cause) == (1, 3, "c")
    assert parse_go_safe(msgpack.packb({"cmd_no": 2, "deadline": 1, "reason": "r"})).go_safe
    for bad in (
        {"cmd_no": 1, "mask": 3, "deadline": 1e9},
        {"cmd_no": True, "mask": 3, "deadline": 1e9, "cause": "c"},
        {"cmd_no": 1, "mask": 3.0, "deadline": 1e9, "cause": "c"},
        {"cmd_no": 1, "mask": 3, "deadline": float("inf"), "cause": "c"},
        {"cmd_no": 65536, "mask": 3, "deadline": 1e9, "cause": "c"},
        {"cmd_no": 1, "mask": 3, "deadline": "soon", "cause": "c"},
    ):
        with pytest.raises(WireFormatError):
            parse_valves(msgpack.packb(bad))


def test_text_answers_nack_then_ack_in_write_order(control: ValveControl, link: Recorder) -> None:
    control.on_connection("text")
    control.on_valves_message(valves(1, 0b10))
    control.on_valves_message(valves(2, 0b110))
    assert link.wait_writes(2) == [("valves", 1, 0b10), ("valves", 2, 0b110)]
    control.on_ack(TextAck(ok=False, text="expected Valves: and 9 digits 0/1"))
    control.on_ack(TextAck(ok=True, text="Valves:011000000"))
    wait_until(lambda: len(link.acks()) == 2, what="two answers")
    nack, ack = link.acks()
    assert (nack["cmd_no"], nack["ok"], nack["result"], nack["valves"]) == (1, False, "nack", None)
    assert (ack["cmd_no"], ack["ok"], ack["result"], ack["valves"]) == (2, True, "applied", 0b110)
    assert ack["text"] == "ACK: Valves:011000000"


def test_a_text_ack_skips_a_command_the_device_never_answered(control: ValveControl, link: Recorder) -> None:
    control.on_connection("text")
    control.on_valves_message(valves(1, 0b1))
    control.on_valves_message(valves(2, 0b10))
    link.wait_writes(2)
    control.on_ack(TextAck(ok=True, text="Valves:010000000"))  # the answer to 2: 1's was lost
    wait_until(lambda: len(link.acks()) == 1, what="an answer")
    assert link.acks()[0]["cmd_no"] == 2
    assert control.stats.unanswered == 1
    control.on_ack(TextAck(ok=True, text="Valves:100000000"))  # matches nothing outstanding any more
    assert control.stats.unmatched == 1
    assert len(link.acks()) == 1


def test_binary_answers_carry_the_device_result(control: ValveControl, link: Recorder) -> None:
    control.on_connection("binary")
    control.on_valves_message(valves(7, 0b11))
    link.wait_writes(1)
    control.on_ack(ValveAckFrame(7, 0, AckResult.REFUSED_NO_HEARTBEAT))
    control.on_ack(ValveAckFrame(8, 0b1, AckResult.APPLIED))  # no longer awaited: still published
    acks = link.acks()
    assert [(a["cmd_no"], a["ok"], a["result"], a["valves"]) for a in acks] == [
        (7, False, "refused_no_heartbeat", 0),
        (8, True, "applied", 0b1),
    ]


def test_not_connected_and_bad_mask_are_answered_without_the_device(
    control: ValveControl, link: Recorder
) -> None:
    control.on_connection("binary")
    control.on_valves_message(valves(1, 1 << N_VALVES))
    link.connected = False
    control.on_valves_message(valves(2, 0b1))
    wait_until(lambda: len(link.acks()) == 2, what="two answers")
    assert [(a["cmd_no"], a["result"]) for a in link.acks()] == [
        (1, "refused_bad_mask"),
        (2, "not_connected"),
    ]
    assert [w[1] for w in link.wait_writes(1)] == [2]  # the bad mask was never written


def test_make_safe_only_when_a_valve_may_be_open(control: ValveControl, link: Recorder) -> None:
    control.on_connection("binary")
    control.on_device_valves(0)
    control.on_actuation_status(offline())
    control.on_valves_message(valves(3, 0b100))  # a barrier: the writer has handled the check before it
    assert link.wait_writes(1) == [("valves", 3, 0b100)]
    control.on_ack(ValveAckFrame(3, 0b100, AckResult.APPLIED))

    control.on_broker(False)
    writes = link.wait_writes(2)
    assert writes[1] == ("go_safe", OWN_CMD_FIRST, None)
    wait_until(lambda: len(link.events()) == 1, what="the event")
    event = link.events()[0]
    assert (event["kind"], event["service"], event["cmd_no"], event["sent"], event["valves"]) == (
        "go_safe",
        "acquisition",
        OWN_CMD_FIRST,
        True,
        0b100,
    )
    control.on_ack(ValveAckFrame(OWN_CMD_FIRST, 0, AckResult.APPLIED))
    assert link.acks()[-1]["result"] == "go_safe_applied"


def test_make_safe_waits_for_the_commands_received_before(control: ValveControl, link: Recorder) -> None:
    """Actuation's last command opens a valve and its offline status follows: closed after all."""
    control.on_connection("binary")
    control.on_device_valves(0)
    control.on_valves_message(valves(4, 0b1))
    control.on_actuation_status(offline())
    assert link.wait_writes(2) == [("valves", 4, 0b1), ("go_safe", OWN_CMD_FIRST, None)]


def test_an_unknown_text_state_is_made_safe(control: ValveControl, link: Recorder) -> None:
    control.on_connection("text")  # the legacy firmware says nothing of its outputs until an ACK
    control.on_broker(False)
    assert link.wait_writes(1) == [("go_safe", OWN_CMD_FIRST, None)]


def test_nothing_to_do_without_a_link(control: ValveControl, link: Recorder) -> None:
    control.on_actuation_status(offline())
    control.on_connection("binary")
    control.on_device_valves(0)
    control.on_valves_message(valves(5, 0))  # barrier
    assert link.wait_writes(1) == [("valves", 5, 0)]
    assert link.events() == []
