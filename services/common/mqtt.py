"""The one MQTT client every service uses: paho-mqtt 2.x, MQTT v5, threaded network loop.

What it adds to paho: a retained status message per service (online on every connect, offline by
Last Will or on `stop()`), subscriptions that survive reconnects, handlers isolated from the network
thread's fate, and counters for what was published, dropped and received.

Client ids are unguessable (`rcs-<service>-<128 random bits>`) and appear in no message: the broker
disconnects a client when another connects with the same id, so an id anyone could work out (from
the host and pid in the status, or from a reply topic) would let any client throw a service off the
broker and fire its Last Will. Replies go to `rcs/reply/<reply_id>`, a second random name.

Threading: paho runs one network thread per client (`loop_start`). Subscription handlers and
connection listeners run on that thread, so they must be quick (decode, hand off to a queue or an
executor) and must never call `stop()`. `publish` and `subscribe` may be called from any thread.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paho.mqtt.client import (
    MQTT_ERR_NO_CONN,
    MQTT_ERR_SUCCESS,
    Client,
    ConnectFlags,
    DisconnectFlags,
    MQTTMessage,
    error_string,
)
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from services.common import topics
from services.common.codec import pack
from services.common.logs import Throttled
from services.common.settings import MqttSettings

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 5.0
STOP_PUBLISH_TIMEOUT_S = 2.0
ID_RANDOM_BYTES = 16  # 128 bits: not guessable, not enumerable


def unguessable_id(prefix: str) -> str:
    """`<prefix>-<128 random bits, URL-safe base64>`: valid as a client id and as a topic level."""
    return f"{prefix}-{secrets.token_urlsafe(ID_RANDOM_BYTES)}"


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    properties: Properties | None


@dataclass(frozen=True)
class MqttStats:
    published: int = 0  # accepted by publish() (sent, or queued for the next connection)
    dropped: int = 0  # refused by publish(): queue full, QoS 0 while disconnected, or stopped
    received: int = 0  # messages dispatched to handlers
    reconnects: int = 0  # successful connects after the first one
    handler_errors: int = 0  # exceptions raised by handlers
    refused: int = 0  # QoS > 0 publishes the broker refused (PUBACK failure, e.g. 0x87 not authorized)


def _not_the_reconnect_race(record: logging.LogRecord) -> bool:
    """paho's network loop logs "Client is not connected" at ERROR on every pass while it reconnects;
    our own connection messages already say so once."""
    return not record.getMessage().startswith("Client is not connected")


@dataclass(frozen=True)
class _Subscription:
    qos: int
    handlers: tuple[Callable[[Message], None], ...]


def _check_filter(topic_filter: str, qos: int) -> None:
    """Reject what the broker would (checked up front: a bad filter must not reach _on_connect)."""
    levels = topic_filter.split("/")
    if not topic_filter or "\0" in topic_filter or len(topic_filter.encode()) > 65535:
        raise ValueError(f"invalid topic filter {topic_filter!r}")
    if any(("#" in level and (level != "#" or i != len(levels) - 1)) for i, level in enumerate(levels)):
        raise ValueError(f"'#' must be the whole last level of a topic filter: {topic_filter!r}")
    if any("+" in level and level != "+" for level in levels):
        raise ValueError(f"'+' must be a whole level of a topic filter: {topic_filter!r}")
    if qos not in (0, 1, 2):
        raise ValueError(f"invalid QoS {qos}")


class MqttClient:
    """A service's connection to the broker; create, `subscribe`, `start`, and `stop` at exit.

    `announce=False`: no retained status and no Last Will (one-shot tools such as an `rcs-ctl`
    command, which must not overwrite the status of the same login's long-running client).
    """

    def __init__(
        self, settings: MqttSettings, service: str, *, client_id: str | None = None, announce: bool = True
    ) -> None:
        self.service = service
        self.client_id = client_id or unguessable_id(f"rcs-{service}")
        self.reply_id = unguessable_id(service)  # never the client id: reply topics are public
        self._settings = settings
        self._announce = announce
        self._status_topic = topics.status(service)
        self._status: dict[str, Any] = {
            "service": service,
            "state": "online",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
        }
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)  # notified on (dis)connect and on SUBACK
        self._counts = dataclasses.asdict(MqttStats())
        self._subscriptions: dict[str, _Subscription] = {}
        self._listeners: list[Callable[[bool], None]] = []
        self._connected = False
        self._unacked: set[int] = set()  # SUBSCRIBE packet ids of this connection awaiting SUBACK
        self._ever_connected = False
        self._stopped = False
        self._throttled = Throttled(log)

        self._client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if settings.username is not None:
            password = settings.password.get_secret_value() if settings.password is not None else None
            self._client.username_pw_set(settings.username, password)
        if settings.uses_tls:
            # Certificate and host name checked (against tls_ca_file, else the system's CAs).
            ca = str(settings.tls_ca_file) if settings.tls_ca_file is not None else None
            self._client.tls_set(ca_certs=ca)
        self._client.max_queued_messages_set(settings.max_queued_messages)
        # paho annotates the delays as int but computes with them as numbers; sub-second is fine.
        self._client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)  # type: ignore[arg-type]
        paho_log = logging.getLogger(f"{__name__}.paho")
        paho_log.addFilter(_not_the_reconnect_race)
        self._client.enable_logger(paho_log)
        if announce:
            self._client.on_pre_connect = self._on_pre_connect
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_publish = self._on_publish
        self._client.on_socket_open = self._on_socket_open

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background and keep reconnecting (0.2 s .. 5 s backoff); never blocks."""
        self._client.connect_async(
            self._settings.host, self._settings.port, keepalive=self._settings.keepalive_s, clean_start=True
        )
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        """True once connected with every subscription made so far acknowledged by the broker.

        Call it again after `subscribe` to know that messages published from now on will arrive.
        """
        with self._ready:
            return self._ready.wait_for(lambda: self._connected and not self._unacked, timeout)

    @property
    def login(self) -> str:
        """The MQTT user this client logs in as ("anonymous" without a login: read-only)."""
        return self._settings.username or "anonymous"

    @property
    def connected(self) -> bool:
        """Connected to the broker (CONNACK received), subscriptions possibly still in flight."""
        return self._connected

    def stop(self) -> None:
        """Publish the retained offline status (reason "stopped"), disconnect, join the network thread."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        if self.connected and self._announce:
            info = self._client.publish(self._status_topic, self._offline("stopped"), qos=1, retain=True)
            try:
                info.wait_for_publish(STOP_PUBLISH_TIMEOUT_S)
            except (RuntimeError, ValueError) as exc:
                log.warning("offline status not delivered: %s", exc)
        # paho's network thread may still run one loop after the socket closes and logs that at
        # ERROR level; during a deliberate stop that is noise, not news.
        self._client.disable_logger()
        self._client.disconnect()
        self._client.loop_stop()

    # -- publishing ------------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> bool:
        """Send, or queue (QoS > 0) for the next connection; False when the message is dropped.

        Never blocks. Drops: the outgoing queue is full (`max_queued_messages`, QoS > 0 messages not
        yet acknowledged count against it), QoS 0 while disconnected, or the client is stopped.
        """
        if self._stopped:
            self._count("dropped")  # after stop(), by design: a stopping service's last words
            return False
        if qos == 0 and not self.connected:
            return self._dropped(topic, "not connected")
        rc = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties).rc
        # A QoS > 0 message refused with NO_CONN is kept in paho's queue and sent after reconnecting.
        if rc == MQTT_ERR_SUCCESS or (rc == MQTT_ERR_NO_CONN and qos > 0):
            self._count("published")
            return True
        return self._dropped(topic, error_string(rc))

    def _dropped(self, topic: str, reason: str) -> bool:
        """Counted, and said (once per reason and interval) with the topic it was for."""
        self._count("dropped")
        self._throttled.warning(f"dropped:{reason}", "dropped a publish to %s: %s", topic, reason)
        return False

    def set_status(self, **fields: Any) -> None:
        """Merge `fields` into the retained status and republish it (now, or on the next connect)."""
        with self._lock:
            self._status.update(fields)
        if self.connected and self._announce:
            self._publish_status()

    # -- subscriptions ---------------------------------------------------------------------------

    def subscribe(self, topic_filter: str, handler: Callable[[Message], None], *, qos: int = 0) -> None:
        """Call `handler` for every message matching `topic_filter`, across reconnects.

        Handlers run on paho's network thread: keep them quick. An exception in a handler is logged
        (throttled) and counted; it never stops the client. Raises ValueError for an invalid filter.
        """
        _check_filter(topic_filter, qos)
        with self._lock:
            previous = self._subscriptions.get(topic_filter)
            if previous is None:
                self._subscriptions[topic_filter] = _Subscription(qos, (handler,))
                self._client.message_callback_add(
                    topic_filter, functools.partial(self._dispatch, topic_filter)
                )
            else:
                self._subscriptions[topic_filter] = _Subscription(
                    max(qos, previous.qos), (*previous.handlers, handler)
                )
            # Without a socket paho sends nothing: _on_connect subscribes then. Under the lock so that
            # the SUBACK (handled in _on_subscribe, which takes the lock) finds its id recorded.
            rc, mid = self._client.subscribe(topic_filter, qos=self._subscriptions[topic_filter].qos)
            if rc == MQTT_ERR_SUCCESS and mid is not None:
                self._unacked.add(mid)

    def unsubscribe(self, topic_filter: str) -> None:
        """Forget every handler of `topic_filter` and unsubscribe from it."""
        with self._lock:
            if self._subscriptions.pop(topic_filter, None) is None:
                return
        self._client.message_callback_remove(topic_filter)
        self._client.unsubscribe(topic_filter)

    def add_connection_listener(self, listener: Callable[[bool], None]) -> None:
        """`listener(True)` after each connect (subscriptions re-sent), `listener(False)` on each loss."""
        with self._lock:
            self._listeners.append(listener)

    @property
    def stats(self) -> MqttStats:
        with self._lock:
            return MqttStats(**self._counts)

    # -- internals (network thread) --------------------------------------------------------------

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def _offline(self, reason: str) -> bytes:
        return pack({"service": self.service, "state": "offline", "reason": reason, "ts": time.time()})

    def _publish_status(self) -> None:
        with self._lock:
            status = {**self._status, "ts": time.time()}
        self.publish(self._status_topic, pack(status), qos=1, retain=True)

    def _on_pre_connect(self, client: Client, userdata: Any) -> None:
        # Refreshed before every attempt so the Will's ts is the time of the connection it guards.
        if self._announce:
            client.will_set(self._status_topic, self._offline("connection lost"), qos=1, retain=True)

    @staticmethod
    def _on_socket_open(client: Client, userdata: Any, sock: Any) -> None:
        """No Nagle: an acknowledgement followed by a publish would otherwise wait up to 40 ms for the
        broker's delayed ACK (the broker side has `set_tcp_nodelay true`)."""
        if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._throttled.warning(
                "connect",
                "broker %s:%d refused the connection: %s",
                self._settings.host,
                self._settings.port,
                reason,
            )
            return
        with self._ready:
            if self._ever_connected:
                self._counts["reconnects"] += 1
            self._ever_connected = True
            self._connected = True
            self._unacked.clear()
            if self._subscriptions:
                _, mid = client.subscribe([(f, s.qos) for f, s in self._subscriptions.items()])
                if mid is not None:
                    self._unacked.add(mid)
            self._ready.notify_all()
            listeners = list(self._listeners)
        log.info(
            "connected to %s:%d as %s",
            self._settings.host,
            self._settings.port,
            self._settings.username or "anonymous",
        )
        if self._announce:
            self._publish_status()
        for listener in listeners:
            self._call_listener(listener, True)

    def _on_disconnect(
        self,
        client: Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._ready:
            was_connected = self._connected
            self._connected = False
            self._unacked.clear()
            self._ready.notify_all()
            listeners = list(self._listeners)
        if not was_connected:
            return
        if not self._stopped:
            log.warning(
                "disconnected from %s:%d: %s (reconnecting)", self._settings.host, self._settings.port, reason
            )
        for listener in listeners:
            self._call_listener(listener, False)

    def _on_subscribe(
        self,
        client: Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [str(reason) for reason in reasons if reason.is_failure]
        if refused:
            self._throttled.warning("suback", "broker refused a subscription: %s", ", ".join(refused))
        with self._ready:
            self._unacked.discard(mid)
            self._ready.notify_all()

    def _on_publish(
        self, client: Client, userdata: Any, mid: int, reason: ReasonCode, properties: Properties | None
    ) -> None:
        if reason.is_failure:  # the broker's ACL said no: a silent loss unless said here
            self._count("refused")
            self._throttled.warning(
                "puback", "broker refused a publish: %s (check this service's MQTT login and the ACL)", reason
            )

    def _call_listener(self, listener: Callable[[bool], None], connected: bool) -> None:
        try:
            listener(connected)
        except Exception:
            self._count("handler_errors")
            self._throttled.warning("listener", "connection listener %r failed", listener, exc_info=True)

    def _dispatch(self, topic_filter: str, client: Client, userdata: Any, msg: MQTTMessage) -> None:
        subscription = self._subscriptions.get(topic_filter)
        if subscription is None:
            return
        self._count("received")
        # paho's payloads are bytes (bytes() of bytes is the same object, no copy).
        message = Message(msg.topic, bytes(msg.payload), bool(msg.retain), msg.properties)
        for handler in subscription.handlers:
            try:
                handler(message)
            except Exception:
                self._count("handler_errors")
                self._throttled.warning(
                    f"handler:{topic_filter}",
                    "handler for %s failed on %s",
                    topic_filter,
                    msg.topic,
                    exc_info=True,
                )
