"""Events on `rcs/events` that outlive a broker outage.

An event is not retained: whoever is not subscribed when it is published never sees it. paho keeps a
QoS 1 message published while disconnected and sends it as soon as it reconnects, but after a broker
restart the logger (the events file) and the gateway (`/api/events`) reconnect on their own backoff,
often after that: the event reaches nobody. So, from the moment the connection is lost, events are
held here (at most `capacity`, the oldest dropped and counted beyond) and published, in order and
with their original `ts`, once the connection is back and every audience service expected back says
online again (its status: published after its subscriptions, so they are in place), or `wait_s`
after reconnecting at the latest (an audience that does not come back). Expected back: its latest
status said online, or offline by its Last Will ("connection lost": a broker going down delivers
those to whoever it still serves); not one that stopped cleanly.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from services.common import topics
from services.common.codec import WireFormatError, unpack_map
from services.common.mqtt import Message, MqttClient

log = logging.getLogger(__name__)

AUDIENCE = ("logger", "gateway")
DEFAULT_CAPACITY = 1000
DEFAULT_WAIT_S = 30.0


class EventOutbox:
    """Publishes events on `rcs/events` through `mqtt`, holding them across outages (module docstring).

    Create before `mqtt.start()`: it subscribes to the audience's statuses."""

    def __init__(
        self,
        mqtt: MqttClient,
        *,
        audience: tuple[str, ...] = AUDIENCE,
        capacity: int = DEFAULT_CAPACITY,
        wait_s: float = DEFAULT_WAIT_S,
    ) -> None:
        self._mqtt = mqtt
        self._wait_s = wait_s
        self._lock = threading.Lock()
        self._held: deque[bytes] = deque(maxlen=capacity)
        self._holding = False  # from a connection loss until the held events are released
        self._expected: set[str] = set()  # audience services expected back online after a loss
        self._awaited: set[str] = set()  # ...that are not back yet
        self._timer: threading.Timer | None = None
        self.dropped = 0  # held events pushed out by newer ones (capacity)
        for service in audience:
            mqtt.subscribe(topics.status(service), self._on_status, qos=1)
        mqtt.add_connection_listener(self._on_broker)

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def publish(self, payload: bytes) -> None:
        """Publish a packed event (`audit.event_payload`) now, or hold it while the connection is down
        or not yet released."""
        with self._lock:
            if self._holding or not self._mqtt.connected:
                self._holding = True
                if len(self._held) == self._held.maxlen:
                    self.dropped += 1
                self._held.append(payload)
                return
        self._mqtt.publish(topics.events(self._mqtt.login), payload, qos=1)

    def close(self) -> None:
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    # -- paho's network thread ---------------------------------------------------------------------

    def _on_broker(self, connected: bool) -> None:
        with self._lock:
            if not connected:
                self._holding = True
                self._awaited = set(self._expected)
                return
            if not self._holding:
                return  # nothing was published while away
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self._wait_s, self._release, kwargs={"timed_out": True})
            self._timer.daemon = True
            self._timer.start()
        self._release_if_ready()

    def _on_status(self, message: Message) -> None:
        service = message.topic.rsplit("/", 1)[-1]
        try:
            status = unpack_map(message.payload) if message.payload else {}
        except WireFormatError:
            status = {}
        online = status.get("state") == "online"
        with self._lock:
            if online:
                self._expected.add(service)
                self._awaited.discard(service)
            elif status.get("reason") != "connection lost":  # stopped (or cleared): not coming back
                self._expected.discard(service)
                self._awaited.discard(service)
        self._release_if_ready()

    def _release_if_ready(self) -> None:
        with self._lock:
            ready = self._holding and not self._awaited and self._mqtt.connected
        if ready:
            self._release(timed_out=False)

    def _release(self, *, timed_out: bool) -> None:
        with self._lock:
            if not self._mqtt.connected:
                return  # lost again meanwhile: the next connection releases them
            held, self._held = list(self._held), deque(maxlen=self._held.maxlen)
            missing, self._awaited = sorted(self._awaited), set()
            self._holding = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            # published under the lock: an event published meanwhile must not overtake them
            for payload in held:
                self._mqtt.publish(topics.events(self._mqtt.login), payload, qos=1)
        if timed_out and missing:
            log.warning(
                "published %d held event(s) without %s back online after %.0f s",
                len(held),
                ", ".join(missing),
                self._wait_s,
            )
        elif held:
            log.info("published %d event(s) held while the broker was away", len(held))
