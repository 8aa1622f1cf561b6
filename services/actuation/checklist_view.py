"""What the checklist is judged on, gathered: the retained messages it needs (statuses, the STM32 link
state, the telemetry meta's tare), kept as they arrive, and the logger's status asked when the
checklist is (its free disk). The control thread adds the latest telemetry values and the valves
that may be open (`Authority.checklist_snapshot`); checklist.py judges.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from services.actuation.checklist import Snapshot
from services.common import topics
from services.common.codec import WireFormatError, unpack_map
from services.common.mqtt import Message, MqttClient
from services.common.rpc import RpcClient, RpcError, RpcTimeout
from services.common.settings import LoggerRecording, ServicesOnline, Settings

LOGGER_TIMEOUT_S = 1.0
LOGGER_FRESH_S = 1.0  # a logger answer this recent is reused: one request at a time, whoever asks


class ChecklistView:
    def __init__(self, settings: Settings, mqtt: MqttClient, rpc: RpcClient) -> None:
        self._rpc = rpc
        self._lock = threading.Lock()
        self._logger_lock = threading.Lock()
        self._logger: tuple[float, dict[str, Any] | str] | None = None  # (monotonic, answer)
        self._latest: dict[str, dict[str, Any]] = {}
        self._ask_logger = any(isinstance(item, LoggerRecording) for item in settings.checklist)
        services = {
            s for item in settings.checklist if isinstance(item, ServicesOnline) for s in item.services
        }
        if self._ask_logger:
            services.add("logger")
        watched = [topics.status(s) for s in sorted(services)] + [topics.STATE_STM32, topics.TELEMETRY_META]
        for topic in watched:
            mqtt.subscribe(topic, self._keep, qos=1)

    def _keep(self, message: Message) -> None:
        with self._lock:
            try:
                self._latest[message.topic] = unpack_map(message.payload)
            except WireFormatError:  # an empty payload clears a retained message
                self._latest.pop(message.topic, None)

    def outside(self) -> Snapshot:
        """The part of the snapshot from the bus (worker threads: it may wait for the logger)."""
        logger = self._logger_status() if self._ask_logger else "not asked"
        with self._lock:
            latest = dict(self._latest)
        statuses = {
            topic.removeprefix("rcs/status/"): status
            for topic, status in latest.items()
            if topic.startswith("rcs/status/")
        }
        tare: dict[str, Any] = {}
        with contextlib.suppress(AttributeError):
            tare = dict(latest.get(topics.TELEMETRY_META, {}).get("tare") or {})
        return Snapshot(
            now=time.time(), statuses=statuses, stm32=latest.get(topics.STATE_STM32), logger=logger, tare=tare
        )

    def _logger_status(self) -> dict[str, Any] | str:
        """The logger's status (its free disk), or why there is none; asked at most once a second."""
        with self._logger_lock:
            if self._logger is not None and time.monotonic() - self._logger[0] < LOGGER_FRESH_S:
                return self._logger[1]
            answer: dict[str, Any] | str
            try:
                answer = self._rpc.call(topics.LOGGER_STATUS, {}, timeout=LOGGER_TIMEOUT_S)
            except (RpcError, RpcTimeout) as exc:
                answer = str(exc)
            self._logger = (time.monotonic(), answer)
            return answer
