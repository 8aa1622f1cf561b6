"""The gateway's one MQTT connection (login `gateway`), bridged to asyncio.

paho's network thread decodes (telemetry batches, state/status/event maps) and keeps the latest of
each; listeners are then called on the event loop through `loop.call_soon_threadsafe`, once per
message (a telemetry batch is one call, never one per sample). Requests to the services go through
`RpcClient`, awaited with `asyncio.wrap_future`. Abort requests take a second connection of their
own (no status, no Last Will), so nothing queued on the first one can delay them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from services.common import audit, topics
from services.common.codec import unpack_map
from services.common.heartbeat import send_heartbeat
from services.common.logs import DropMalformed, Throttled
from services.common.metrics import counters
from services.common.mqtt import Message, MqttClient
from services.common.rpc import RpcClient
from services.common.settings import Settings
from services.common.telemetry import TelemetryBatch, decode_batch

SERVICE = "gateway"
EVENTS_KEPT = 500
CONNECT_WAIT_S = 5.0
ABORT_FIRST_S = 1.0  # the longest an abort in flight holds up handling clients' messages
log = logging.getLogger("rcs.gateway.bus")

TelemetryListener = Callable[[TelemetryBatch, bytes], None]
MessageListener = Callable[[str, dict[str, Any]], None]
Sample = tuple[tuple[str, ...], float, npt.NDArray[np.float32]]


@dataclass
class BusStats:
    telemetry_batches: int = 0
    messages: int = 0  # state/status/event/meta maps decoded
    malformed: int = 0  # payloads that did not decode (logged throttled)
    forged_events: int = 0  # events whose `service` is not the login that published them
    listener_errors: int = 0  # exceptions raised by listeners (logged throttled)


class Bus:
    """Subscribes telemetry, meta, `rcs/state/+`, `rcs/status/+` and `rcs/events/+`; sends requests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.mqtt = MqttClient(settings.mqtt, SERVICE)
        self.rpc = RpcClient(self.mqtt)
        self.abort_mqtt = MqttClient(
            settings.mqtt, SERVICE, client_id=f"{self.mqtt.client_id}-abort", announce=False
        )
        self.abort_rpc = RpcClient(self.abort_mqtt)
        self.stats = BusStats()
        self.websocket_connections = 0  # maintained by the WebSocket side
        self.aborts_in_flight = 0  # abort requests sent, not yet answered (event loop only)
        self._abort_answered = asyncio.Event()
        self._abort_answered.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._latest: dict[str, dict[str, Any]] = {}
        self._sample: Sample | None = None
        self._telemetry_at: float | None = None  # monotonic arrival of the newest batch
        self._events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self._telemetry_listeners: list[TelemetryListener] = []
        self._message_listeners: list[MessageListener] = []
        self._throttled = Throttled(log)
        self._decode = DropMalformed(self.stats, "malformed", self._throttled)
        self.mqtt.subscribe(topics.TELEMETRY, self._on_telemetry, qos=0)
        for topic_filter in (topics.TELEMETRY_META, "rcs/state/+", "rcs/status/+", topics.EVENTS):
            self.mqtt.subscribe(topic_filter, self._on_message, qos=1)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind to the running loop and connect; waits a little for the broker, never fails on it."""
        self._loop = asyncio.get_running_loop()
        self.abort_mqtt.start()
        self.mqtt.start()
        if not await asyncio.to_thread(self.mqtt.wait_connected, CONNECT_WAIT_S):
            log.warning("broker not reachable yet; serving anyway and reconnecting in the background")

    async def stop(self) -> None:
        """Fail pending requests, publish the offline status and disconnect."""
        self.rpc.close()
        self.abort_rpc.close()
        await asyncio.to_thread(self.mqtt.stop)
        await asyncio.to_thread(self.abort_mqtt.stop)
        self._loop = None

    @property
    def connected(self) -> bool:
        return self.mqtt.connected

    # -- requests and publishing -----------------------------------------------------------------

    async def call(
        self, topic: str, body: dict[str, Any], *, timeout: float | None = None, sent: float | None = None
    ) -> dict[str, Any]:
        """The service's result; raises RpcError (refused, or not sent) or RpcTimeout (no answer).
        `sent`: when the command was issued, if before now (RpcClient.request)."""
        wait = self.settings.gateway.command_timeout_s if timeout is None else timeout
        return await asyncio.wrap_future(self.rpc.request(topic, body, timeout=wait, sent=sent))

    async def abort(self, body: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """An abort request to actuation, on the abort connection; raises like `call`. Published
        before this coroutine first suspends; counted in `aborts_in_flight` until it is answered."""
        wait = self.settings.gateway.command_timeout_s if timeout is None else timeout
        reply = self.abort_rpc.request(topics.actuation("abort"), body, timeout=wait)
        self.aborts_in_flight += 1
        self._abort_answered.clear()
        try:
            return await asyncio.wrap_future(reply)
        finally:
            self.aborts_in_flight -= 1
            if not self.aborts_in_flight:
                self._abort_answered.set()

    async def abort_answered(self) -> None:
        """Returns once no abort request is in flight, or after ABORT_FIRST_S at most: what readers of
        clients' messages await first, so that an abort has the gateway (and its share of the CPU
        and of the GIL, which the abort connection's network thread needs) to itself."""
        if self.aborts_in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._abort_answered.wait(), ABORT_FIRST_S)

    @property
    def abort_connected(self) -> bool:
        return self.abort_mqtt.connected

    def heartbeat(self, who: str) -> None:
        """One operator heartbeat for actuation's deadman (QoS 0: a lost one is replaced by the next)."""
        send_heartbeat(self.mqtt, who)

    # -- what the bus has seen -------------------------------------------------------------------

    def latest(self, topic: str) -> dict[str, Any] | None:
        """The newest decoded message on `topic` (states, statuses, meta); None if none yet."""
        with self._lock:
            return self._latest.get(topic)

    def latest_by_prefix(self, prefix: str) -> dict[str, dict[str, Any]]:
        """Every latest message whose topic starts with `prefix`, e.g. `rcs/status/`."""
        with self._lock:
            return {topic: m for topic, m in self._latest.items() if topic.startswith(prefix)}

    def latest_sample(self) -> Sample | None:
        """Channels, UNIX time and values of the newest telemetry sample."""
        return self._sample

    def telemetry_age_s(self) -> float | None:
        """Seconds since the newest telemetry batch arrived; None before the first."""
        received = self._telemetry_at
        return None if received is None else time.monotonic() - received

    def events(self, limit: int) -> list[dict[str, Any]]:
        """The most recent events on `rcs/events` (kept in memory since start), newest first."""
        with self._lock:
            kept = list(self._events)
        return kept[: -limit - 1 : -1] if limit > 0 else []

    def metrics(self) -> dict[str, float]:
        return {
            **counters(self.stats, "bus"),
            **counters(self.mqtt.stats, "mqtt"),
            **counters(self.rpc.stats, "rpc"),
            **counters(self.abort_rpc.stats, "abort_rpc"),
            "mqtt_connected": float(self.mqtt.connected),
            "rpc_pending": float(self.rpc.pending),
            "websocket_connections": float(self.websocket_connections),
        }

    # -- listeners (called on the event loop) ----------------------------------------------------

    def add_telemetry_listener(self, listener: TelemetryListener) -> None:
        self._telemetry_listeners.append(listener)

    def add_message_listener(self, listener: MessageListener) -> None:
        self._message_listeners.append(listener)

    # -- paho's network thread -------------------------------------------------------------------

    def _on_telemetry(self, message: Message) -> None:
        batch = self._decode(decode_batch, message.payload, "telemetry", f"telemetry on {message.topic}")
        if batch is None:
            return
        self.stats.telemetry_batches += 1
        self._telemetry_at = time.monotonic()
        self._sample = (batch.channels, float(batch.t[-1]), batch.data[-1].copy())
        self._to_loop(self._deliver_telemetry, batch, message.payload)

    def _on_message(self, message: Message) -> None:
        if not message.payload:  # a retained message being cleared
            with self._lock:
                self._latest.pop(message.topic, None)
            return
        decoded = self._decode(
            unpack_map, message.payload, f"map:{message.topic}", f"message on {message.topic}"
        )
        if decoded is None:
            return
        self.stats.messages += 1
        if topics.is_event(message.topic):
            decoded, forged = audit.received_event(message.topic, decoded, self._throttled)
            if forged:
                self.stats.forged_events += 1
        with self._lock:
            if topics.is_event(message.topic):
                self._events.append(decoded)
            else:
                self._latest[message.topic] = decoded
        self._to_loop(self._deliver_message, message.topic, decoded)

    def _to_loop(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed while stopping
            loop.call_soon_threadsafe(callback, *args)

    # -- the event loop --------------------------------------------------------------------------

    def _deliver_telemetry(self, batch: TelemetryBatch, payload: bytes) -> None:
        for listener in self._telemetry_listeners:
            try:
                listener(batch, payload)
            except Exception:
                self._listener_failed(listener)

    def _deliver_message(self, topic: str, message: dict[str, Any]) -> None:
        for listener in self._message_listeners:
            try:
                listener(topic, message)
            except Exception:
                self._listener_failed(listener)

    def _listener_failed(self, listener: object) -> None:
        self.stats.listener_errors += 1
        self._throttled.warning(f"listener:{listener!r}", "bus listener %r failed", listener, exc_info=True)
