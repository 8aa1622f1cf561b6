"""EventOutbox against a real Mosquitto that is stopped and started again: events published while the
broker is away are held (bounded) and go out, in order, only once their audience is back."""

from __future__ import annotations

import queue

from services.common import topics
from services.common.codec import pack, unpack_map
from services.common.event_outbox import EventOutbox
from services.common.mqtt import Message, MqttClient
from services.devstack.broker import Broker
from tests.conftest import wait_until

TIMEOUT = 10.0


def test_held_while_away_bounded_and_published_in_order_once_the_audience_is_back(
    restartable_broker: Broker,
) -> None:
    def logger_client(inbox: queue.Queue[Message]) -> MqttClient:
        client = MqttClient(restartable_broker.settings("logger"), "logger")
        client.subscribe(topics.EVENTS, inbox.put, qos=1)
        client.start()
        assert client.wait_connected(TIMEOUT)
        return client

    first: queue.Queue[Message] = queue.Queue()
    logger = logger_client(first)
    publisher = MqttClient(restartable_broker.settings("acquisition"), "acquisition")
    outbox = EventOutbox(publisher, audience=("logger",), capacity=3)
    publisher.start()
    try:
        assert publisher.wait_connected(TIMEOUT)
        outbox.publish(pack({"kind": "live", "n": 0}))
        assert unpack_map(first.get(timeout=TIMEOUT).payload)["n"] == 0

        restartable_broker.stop()
        wait_until(lambda: not publisher.connected, TIMEOUT, "the publisher to notice")
        logger.stop()  # gone with the broker (no offline status: there is no broker to take it)
        for n in range(1, 6):
            outbox.publish(pack({"kind": "held", "n": n}))
        assert (outbox.held, outbox.dropped) == (3, 2)  # the oldest went first

        restartable_broker.start()
        assert publisher.wait_connected(TIMEOUT)
        assert outbox.held == 3, "published before the logger, which was online before, is back"
        second: queue.Queue[Message] = queue.Queue()
        logger = logger_client(second)
        received = [unpack_map(second.get(timeout=TIMEOUT).payload)["n"] for _ in range(3)]
        assert received == [3, 4, 5]
        assert outbox.held == 0
        outbox.publish(pack({"kind": "live", "n": 6}))  # and straight through again
        assert unpack_map(second.get(timeout=TIMEOUT).payload)["n"] == 6
    finally:
        outbox.close()
        publisher.stop()
        logger.stop()
