"""The broker's logins and topic ACL (mosquitto/acl), checked with real clients on a real Mosquitto.

This module's broker runs the project's ACL alone (the session broker adds test-only grants). The
broker drops an unauthorised publish; an MQTT v5 QoS 1 publisher gets PUBACK reason 0x87. Every
check of "never arrives" waits for that PUBACK (the broker has then dealt with the message), then
has an authorised client publish a marker on the same topic: the marker arriving alone proves the
unauthorised message was not delivered, without waiting for a timeout.
"""

from __future__ import annotations

import base64
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from paho.mqtt.client import Client, ConnectFlags, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from services.acquisition.history import HistorySource
from services.acquisition.ring_buffer import RingBuffer
from services.common import topics
from services.common.mqtt import MqttClient
from services.common.rpc import RpcClient, RpcServer, RpcTimeout
from services.devstack.broker import BASE_ACL, Broker
from services.devstack.credentials import STACK_USER, USERS, hash_password
from tests.conftest import new_broker, wait_until

TIMEOUT = 10.0
NOT_AUTHORIZED = 0x87
ANONYMOUS = None
READER = "reader"  # the compose broker's read-only login (no anonymous access there)

# (user, topic) pairs the ACL must refuse
FORBIDDEN = [
    (ANONYMOUS, topics.STM32_VALVES),
    (ANONYMOUS, topics.STM32_GO_SAFE),
    (ANONYMOUS, topics.TELEMETRY),
    (ANONYMOUS, topics.events("operator")),
    (ANONYMOUS, topics.request(topics.ACQ_HISTORY, "operator")),
    (ANONYMOUS, topics.status("actuation")),
    (ANONYMOUS, topics.OPERATOR_HEARTBEAT),
    *[
        (user, topic)
        for user in ("operator", "gateway", "logger")
        for topic in (topics.STM32_VALVES, topics.STM32_GO_SAFE)
    ],
    *[(user, topics.TELEMETRY) for user in ("operator", "gateway", "logger", "actuation")],
    ("acquisition", topics.STM32_VALVES),  # acquisition executes valve commands; it never issues them
    *[(READER, topic) for topic in (topics.STM32_VALVES, topics.TELEMETRY)],
    ("operator", topics.STATE_VALVES),
    ("operator", topics.STM32_VALVE_ACK),
    ("operator", topics.status("actuation")),  # a faked offline status would close the valves
    ("gateway", topics.status("actuation")),
    ("acquisition", topics.status("actuation")),
    ("logger", topics.OPERATOR_HEARTBEAT),
    # audit identity: events and requests only in one's own name
    ("operator", topics.events("actuation")),
    ("gateway", topics.events("acquisition")),
    ("logger", topics.events("actuation")),
    ("operator", topics.request(topics.actuation("valves"), "gateway")),
    ("logger", topics.request(topics.actuation("valves"), "gateway")),
    # rcs-stack's supervisor reports, it never commands
    *[(STACK_USER, topic) for topic in (topics.STM32_VALVES, topics.TELEMETRY)],
    (STACK_USER, topics.request(topics.actuation("valves"), "operator")),
]
# (user, topic) pairs the ACL must allow
ALLOWED = [
    ("actuation", topics.STM32_VALVES),
    ("actuation", topics.STM32_GO_SAFE),
    ("actuation", topics.STATE_VALVES),
    ("actuation", topics.STATE_SYSTEM),
    ("actuation", topics.STATE_MOTORS),
    ("actuation", topics.status("actuation")),
    ("acquisition", topics.TELEMETRY),
    ("acquisition", topics.TELEMETRY_META),
    ("acquisition", topics.STATE_STM32),
    ("acquisition", topics.STM32_VALVE_ACK),
    ("operator", topics.OPERATOR_HEARTBEAT),
    ("gateway", topics.OPERATOR_HEARTBEAT),
    ("operator", topics.request(topics.ACQ_HISTORY, "operator")),
    *[(user, topics.events(user)) for user in USERS],
    *[(user, topics.status(user)) for user in USERS],
    *[(user, topics.request(topics.actuation("valves"), user)) for user in USERS],
    *[(user, topics.replies("rcs-someone-else")) for user in USERS],
    (STACK_USER, topics.events(STACK_USER)),
    (STACK_USER, topics.status(STACK_USER)),
]


class Paho:
    """A bare paho MQTT v5 client that exposes CONNACK and PUBACK reason codes."""

    def __init__(self, broker: Broker, user: str | None, *, password: str | None = None) -> None:
        self.client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-acl-{user}-{time.monotonic_ns()}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if user is not None:
            self.client.username_pw_set(user, broker.credentials[user] if password is None else password)
        self.connack: queue.Queue[ReasonCode] = queue.Queue()
        self.messages: queue.Queue[MQTTMessage] = queue.Queue()
        self._acks: dict[int, ReasonCode] = {}
        self._acked = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_connect(
        self, _c: Client, _u: Any, _f: ConnectFlags, reason: ReasonCode, _p: Properties | None
    ) -> None:
        self.connack.put(reason)
        if reason.is_failure:
            self.client.disconnect()  # no retrying with a wrong password

    def _on_publish(self, _c: Client, _u: Any, mid: int, reason: ReasonCode, _p: Properties | None) -> None:
        with self._acked:
            self._acks[mid] = reason
            self._acked.notify_all()

    def connected(self) -> bool:
        return not self.connack.get(timeout=TIMEOUT).is_failure

    def subscribe(self, topic: str) -> None:
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.subscribe(topic, qos=1)
        assert subscribed.wait(TIMEOUT), f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: bytes) -> int:
        """QoS 1 publish; returns the PUBACK reason code (0 = accepted)."""
        info = self.client.publish(topic, payload, qos=1)
        with self._acked:
            assert self._acked.wait_for(lambda: info.mid in self._acks, TIMEOUT), f"no PUBACK on {topic}"
            return self._acks.pop(info.mid).value

    def next_message(self) -> MQTTMessage:
        try:
            return self.messages.get(timeout=TIMEOUT)
        except queue.Empty:
            pytest.fail("no message arrived")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def project_broker() -> Iterator[Broker]:
    """A broker with exactly the project's ACL (mosquitto/acl) and generated passwords."""
    instance = new_broker(acl=BASE_ACL.read_text())
    instance.start()
    yield instance
    instance.close()


@pytest.fixture
def paho(project_broker: Broker) -> Iterator[Callable[..., Paho]]:
    made: list[Paho] = []

    def make(user: str | None, *, password: str | None = None, connect: bool = True) -> Paho:
        client = Paho(project_broker, user, password=password)
        made.append(client)
        if connect:
            assert client.connected(), f"{user or 'anonymous'} could not log in"
        return client

    yield make
    for client in made:
        client.close()


def writer_of(topic: str) -> str:
    """A user allowed to publish on `topic`, to send the marker."""
    return next(user for user, allowed in ALLOWED if allowed == topic)


@pytest.mark.parametrize(("user", "topic"), FORBIDDEN, ids=[f"{u or 'anonymous'}->{t}" for u, t in FORBIDDEN])
def test_a_forbidden_publish_is_refused_and_never_delivered(
    paho: Callable[..., Paho], user: str | None, topic: str
) -> None:
    reader = paho(ANONYMOUS)  # anonymous clients read everything under rcs/
    reader.subscribe(topic)
    assert paho(user).publish(topic, b"forbidden") == NOT_AUTHORIZED
    assert paho(writer_of(topic)).publish(topic, b"marker") == 0
    message = reader.next_message()
    assert message.payload == b"marker", f"{user or 'anonymous'} published on {topic}"


@pytest.mark.parametrize(("user", "topic"), ALLOWED, ids=[f"{u}->{t}" for u, t in ALLOWED])
def test_an_allowed_publish_is_delivered(paho: Callable[..., Paho], user: str, topic: str) -> None:
    reader = paho(ANONYMOUS)
    reader.subscribe(topic)
    assert paho(user).publish(topic, b"allowed") == 0
    assert reader.next_message().payload == b"allowed"


def test_anonymous_reads_telemetry_published_by_acquisition(paho: Callable[..., Paho]) -> None:
    watcher = paho(ANONYMOUS)
    watcher.subscribe("rcs/#")
    assert paho("acquisition").publish(topics.TELEMETRY, b"batch") == 0
    message = watcher.next_message()
    assert (message.topic, message.payload) == (topics.TELEMETRY, b"batch")


def test_reader_reads_telemetry_state_and_events_and_nothing_else(paho: Callable[..., Paho]) -> None:
    reader = paho(READER)
    reader.subscribe("rcs/#")
    request = topics.request(topics.ACQ_HISTORY, "operator")
    assert paho("operator").publish(request, b"request") == 0  # requests are not for reader
    assert paho("operator").publish(topics.replies("rcs-someone"), b"reply") == 0
    for user, topic in (
        ("acquisition", topics.TELEMETRY),
        ("actuation", topics.STATE_SYSTEM),
        ("logger", topics.events("logger")),
    ):
        assert paho(user).publish(topic, b"readable") == 0
        message = reader.next_message()
        assert (message.topic, message.payload) == (topic, b"readable")


def test_reader_may_not_publish_events_or_requests_in_its_own_name(paho: Callable[..., Paho]) -> None:
    """Every other named user may (per-user lines of the ACL, not a pattern that would include reader)."""
    reader = paho(READER)
    for topic in (
        topics.events(READER),
        topics.request(topics.actuation("abort"), READER),
        topics.request(topics.actuation("valves"), READER),
        topics.request(topics.ACQ_HISTORY, READER),
    ):
        assert reader.publish(topic, b"forbidden") == NOT_AUTHORIZED, topic


@pytest.mark.parametrize("password", ["wrong", ""])
def test_a_wrong_password_is_refused(paho: Callable[..., Paho], password: str) -> None:
    assert not paho("actuation", password=password, connect=False).connected()


def test_an_unknown_user_is_refused(paho: Callable[..., Paho]) -> None:
    assert not paho("root", password="root", connect=False).connected()


def test_rpc_round_trip_from_operator_to_acquisition_history(project_broker: Broker) -> None:
    """The request goes out on rcs/rpc/.../operator as operator, the reply comes back on rcs/reply/<id>;
    the handler sees the requester's login."""
    ring = RingBuffer(1000, 2)
    ring.append(0, np.arange(10, dtype=np.float64), np.ones((10, 2), dtype=np.float32))
    server_mqtt = MqttClient(project_broker.settings("acquisition"), "acquisition")
    server = RpcServer(server_mqtt)
    server.serve(topics.ACQ_HISTORY, HistorySource(ring, "session", ("A", "B")).history)
    clients: list[MqttClient] = [server_mqtt]
    try:
        server_mqtt.start()
        assert server_mqtt.wait_connected(TIMEOUT)
        for user in ("operator", ANONYMOUS):
            mqtt = MqttClient(project_broker.settings(user), f"test-rpc-{user or 'anonymous'}")
            clients.append(mqtt)
            rpc = RpcClient(mqtt)
            mqtt.start()
            assert mqtt.wait_connected(TIMEOUT)
            if user == "operator":
                reply = rpc.call(topics.ACQ_HISTORY, {"seq_from": 2, "seq_to": 5}, timeout=5)
                assert reply["n"] == 3
                assert np.frombuffer(reply["seq"], "<i8").tolist() == [2, 3, 4]
            else:  # anonymous may not even ask
                with pytest.raises(RpcTimeout):
                    rpc.call(topics.ACQ_HISTORY, {"seq_from": 2, "seq_to": 5}, timeout=1)
            rpc.close()
        assert server.stats.served == 1
    finally:
        server.close()
        for client in clients:
            client.stop()


def test_every_named_user_can_log_in(project_broker: Broker) -> None:
    for user in USERS:
        client = MqttClient(project_broker.settings(user), f"test-login-{user}")
        client.start()
        try:
            assert client.wait_connected(TIMEOUT), user
        finally:
            client.stop()


def test_status_of_a_service_belongs_to_its_user(paho: Callable[..., Paho]) -> None:
    """What acquisition relies on to close the valves: only `actuation` speaks for actuation."""
    reader = paho(ANONYMOUS)
    reader.subscribe(topics.status("actuation"))
    offline = msgpack.packb({"service": "actuation", "state": "offline", "reason": "spoof"})
    assert paho("operator").publish(topics.status("actuation"), offline) == NOT_AUTHORIZED
    assert paho("actuation").publish(topics.status("actuation"), b"") == 0  # clears nothing retained
    assert reader.next_message().payload == b""


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd not installed")
def test_password_hashes_are_those_of_mosquitto_passwd(tmp_path: Path) -> None:
    """Same algorithm, iterations and encoding as the broker's own tool (its salt reused)."""
    password_file = tmp_path / "passwd"
    password_file.touch(mode=0o600)
    subprocess.run(["mosquitto_passwd", "-b", str(password_file), "someone", "s3cret"], check=True)
    user, theirs = password_file.read_text().strip().split(":", 1)
    _, seven, iterations, salt, _digest = theirs.split("$")
    assert (user, seven) == ("someone", "7")
    assert hash_password("s3cret", salt=base64.b64decode(salt), iterations=int(iterations)) == theirs


def test_a_refused_publish_is_counted_by_our_client(project_broker: Broker) -> None:
    """QoS 1 lets the broker say no (PUBACK 0x87): the client counts it instead of losing it silently."""
    client = MqttClient(project_broker.settings("operator"), "operator")
    try:
        client.start()
        assert client.wait_connected(TIMEOUT)
        assert client.publish(topics.STM32_VALVES, msgpack.packb({"cmd_no": 1}), qos=1)
        wait_until(lambda: client.stats.refused > 0, TIMEOUT, "the refusal")
        assert client.stats.refused == 1
    finally:
        client.stop()


def test_a_request_without_the_requesters_login_is_refused(paho: Callable[..., Paho]) -> None:
    """Requests travel only on topics ending in the sender's login: the plain address has no writer."""
    for user in USERS:
        assert paho(user).publish(topics.actuation("arm"), b"{}") == NOT_AUTHORIZED, user


def test_only_actuation_may_ask_acquisition_to_tare(paho: Callable[..., Paho]) -> None:
    """Zeroing channels changes every published value: only actuation (idle only, audited) may ask
    acquisition; every other login, in its own name too, is refused and nothing is delivered."""
    reader = paho(ANONYMOUS)
    reader.subscribe("rcs/rpc/acquisition/#")
    for user in ("operator", "gateway", "logger", READER, STACK_USER):
        assert paho(user).publish(topics.request(topics.ACQ_TARE, user), b"forbidden") == NOT_AUTHORIZED, user
    assert paho("actuation").publish(topics.request(topics.ACQ_TARE, "actuation"), b"marker") == 0
    message = reader.next_message()
    assert (message.topic, message.payload) == (topics.request(topics.ACQ_TARE, "actuation"), b"marker")
    # acquisition's other requests stay open to the logins that use them
    for user in ("operator", "gateway", "logger"):
        for address in (topics.ACQ_BUFFER_STATUS, topics.ACQ_HISTORY, topics.ACQ_HISTORY_REDUCED):
            assert paho(user).publish(topics.request(address, user), b"{}") == 0, (user, address)
