"""MqttClient against a real mosquitto: status and Last Will, reconnection, drops and queue bounds."""

from __future__ import annotations

import logging
import os
import queue
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from services.common import topics
from services.common.codec import unpack_map
from services.common.mqtt import Message, MqttClient
from services.common.settings import PROJECT_ROOT, MqttSettings
from services.devstack.broker import Broker, free_port
from tests.conftest import wait_until

TIMEOUT = 10.0


class Inbox:
    """Collects messages from a subscription, for the test thread to take."""

    def __init__(self) -> None:
        self.messages: queue.Queue[Message] = queue.Queue()

    def __call__(self, message: Message) -> None:
        self.messages.put(message)

    def next(self, predicate: Callable[[Message], bool] = lambda _: True) -> Message:
        while True:
            try:
                message = self.messages.get(timeout=TIMEOUT)
            except queue.Empty:
                pytest.fail("no matching message arrived")
            if predicate(message):
                return message


@pytest.fixture
def clients() -> Iterator[Callable[..., MqttClient]]:
    """Factory of started clients, all stopped at teardown."""
    started: list[MqttClient] = []

    def make(settings: MqttSettings, service: str, *, connect: bool = True) -> MqttClient:
        client = MqttClient(settings, service)
        started.append(client)
        client.start()
        if connect:
            assert client.wait_connected(TIMEOUT)
        return client

    yield make
    for client in started:
        client.stop()


def status_of(message: Message) -> dict[str, Any]:
    return unpack_map(message.payload)


_VICTIM = """
import sys, time
from services.common.mqtt import MqttClient
from services.common.settings import MqttSettings
client = MqttClient(MqttSettings(host=sys.argv[1], port=int(sys.argv[2])), sys.argv[3])
client.set_status(role="victim")
client.start()
assert client.wait_connected(10)
print("connected", flush=True)
time.sleep(60)
"""


def test_status_is_retained_online_then_last_will_when_the_process_dies(
    mqtt_settings: MqttSettings, clients: Callable[..., MqttClient]
) -> None:
    service = "test-victim"
    victim = subprocess.Popen(
        [sys.executable, "-c", _VICTIM, mqtt_settings.host, str(mqtt_settings.port), service],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert victim.stdout is not None
        assert victim.stdout.readline().strip() == "connected"
        observer = Inbox()
        clients(mqtt_settings, "test-observer").subscribe(topics.status(service), observer, qos=1)
        assert status_of(observer.next())["state"] == "online"  # live or retained: the broker has it

        late = Inbox()
        clients(mqtt_settings, "test-late-observer").subscribe(topics.status(service), late)
        online = late.next()
        assert online.retain
        status = status_of(online)
        assert status["state"] == "online"
        assert status["service"] == service
        assert status["pid"] == victim.pid
        assert status["role"] == "victim"
        assert {"host", "started", "ts"} <= status.keys()
    finally:
        victim.kill()
        victim.communicate()

    offline = status_of(observer.next())
    assert offline["state"] == "offline"
    assert offline["reason"] == "connection lost"

    later = Inbox()
    clients(mqtt_settings, "test-later-observer").subscribe(topics.status(service), later)
    retained = later.next()
    assert retained.retain
    assert status_of(retained)["reason"] == "connection lost"


def test_stop_publishes_offline_stopped_and_is_idempotent(
    mqtt_settings: MqttSettings, clients: Callable[..., MqttClient]
) -> None:
    client = MqttClient(mqtt_settings, "test-stopper")
    client.start()
    assert client.wait_connected(TIMEOUT)
    client.stop()
    client.stop()
    assert not client.connected

    inbox = Inbox()
    clients(mqtt_settings, "test-observer").subscribe(topics.status("test-stopper"), inbox)
    status = status_of(inbox.next())
    assert status["state"] == "offline"
    assert status["reason"] == "stopped"
    assert status["service"] == "test-stopper"


def test_set_status_merges_fields_into_the_retained_status(
    mqtt_settings: MqttSettings, clients: Callable[..., MqttClient]
) -> None:
    client = clients(mqtt_settings, "test-status-fields")
    inbox = Inbox()
    clients(mqtt_settings, "test-observer").subscribe(topics.status("test-status-fields"), inbox)
    client.set_status(protocol="binary")
    client.set_status(port="/dev/ttyACM0")
    status = status_of(inbox.next(lambda m: "port" in status_of(m)))
    assert status["protocol"] == "binary"
    assert status["state"] == "online"


def test_reconnects_resubscribes_and_flushes_queued_messages_after_a_broker_restart(
    restartable_broker: Broker, clients: Callable[..., MqttClient]
) -> None:
    settings = MqttSettings(host=restartable_broker.host, port=restartable_broker.port)
    subscriber = clients(settings, "test-subscriber")
    events: queue.Queue[bool] = queue.Queue()
    subscriber.add_connection_listener(events.put)
    inbox = Inbox()
    subscriber.subscribe("rcs/test/restart", inbox)

    restartable_broker.stop()
    assert events.get(timeout=TIMEOUT) is False
    assert not subscriber.connected
    # QoS 1 is queued for the next connection; QoS 0 is refused and counted.
    assert subscriber.publish("rcs/test/queued", b"kept", qos=1, retain=True)
    assert not subscriber.publish("rcs/test/restart", b"lost", qos=0)
    assert subscriber.stats.dropped == 1

    restartable_broker.start()
    assert events.get(timeout=TIMEOUT) is True
    assert subscriber.wait_connected(TIMEOUT)  # re-subscription acknowledged
    assert subscriber.stats.reconnects == 1

    publisher = clients(settings, "test-publisher")
    assert publisher.publish("rcs/test/restart", b"after restart", qos=1)
    assert inbox.next().payload == b"after restart"

    queued = Inbox()
    publisher.subscribe("rcs/test/queued", queued)
    assert queued.next().payload == b"kept"


def test_publish_without_a_broker_drops_qos0_and_bounds_the_queue(
    clients: Callable[..., MqttClient], caplog: pytest.LogCaptureFixture
) -> None:
    nowhere = MqttSettings(host="127.0.0.1", port=free_port(), max_queued_messages=3)
    client = clients(nowhere, "test-offline", connect=False)
    assert not client.wait_connected(0.1)

    with caplog.at_level(logging.WARNING, logger="services.common.mqtt"):
        assert not client.publish("rcs/test/x", b"0", qos=0)
        assert not client.publish("rcs/test/x", b"0", qos=0)
        assert [client.publish("rcs/test/x", b"1", qos=1) for _ in range(3)] == [True] * 3
        assert not client.publish("rcs/test/full", b"2", qos=1)

    stats = client.stats
    assert (stats.published, stats.dropped) == (3, 3)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dropped a publish")]
    assert said == [
        "dropped a publish to rcs/test/x: not connected",  # once per reason, with the topic
        "dropped a publish to rcs/test/full: Message queue full.",
    ]


def test_a_failing_handler_is_counted_and_does_not_stop_delivery(
    mqtt_settings: MqttSettings, clients: Callable[..., MqttClient]
) -> None:
    client = clients(mqtt_settings, f"test-handlers-{os.getpid()}")

    def explode(message: Message) -> None:
        raise ValueError(f"cannot handle {message.payload!r}")

    inbox = Inbox()
    client.subscribe("rcs/test/handlers", explode)
    client.subscribe("rcs/test/handlers", inbox)
    for payload in (b"a", b"b"):
        assert client.publish("rcs/test/handlers", payload)
    assert [inbox.next().payload, inbox.next().payload] == [b"a", b"b"]
    wait_until(lambda: client.stats.handler_errors == 2, what="two handler errors")
    assert client.stats.received == 2


def test_invalid_filter_is_rejected_at_subscribe(clients: Callable[..., MqttClient]) -> None:
    client = clients(MqttSettings(host="127.0.0.1", port=free_port()), "test-filter", connect=False)
    with pytest.raises(ValueError):
        client.subscribe("rcs/#/bad", lambda _: None)


def test_nagle_is_off_on_the_client_socket(mqtt_settings: MqttSettings) -> None:
    """An acknowledgement followed by a publish must not wait for the broker's delayed ACK."""
    client = MqttClient(mqtt_settings, "operator")
    try:
        client.start()
        assert client.wait_connected(10)
        sock = client._client.socket()  # paho's socket: the option is a property of it, not of our API
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        client.stop()
