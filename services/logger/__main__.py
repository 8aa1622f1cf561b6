"""rcs-logger: every telemetry sample to Parquet exactly once, and every event to JSON Lines.

This module wires the parts to MQTT. Threads: paho's (decodes and hands over; never writes), the
recorder (services/logger/recorder.py: the only one touching the open segment, the coverage and the
event log), the converter (open segment -> Parquet, off the recorder's path: conversion.py), the
repairer (asks acquisition's ring buffer for what is missing: repair.py) and the request handlers
(save now, status), which post to the recorder. Test runs (rcs/state/run) are recorded apart, on
the run recorder's thread (runs.py), which never delays the continuous recording.

What is wrong is in the retained status: `disk`/`disk_error` while writing fails (disk.py),
`behind_s` while the oldest telemetry not yet recorded is older than `logger.behind_after_s`
(lag.py).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from services.common import audit, topics
from services.common.codec import unpack_map
from services.common.lifecycle import run_service
from services.common.logs import DropMalformed, Throttled
from services.common.mqtt import Message, MqttClient
from services.common.rpc import RpcClient, RpcServer
from services.common.settings import Settings
from services.common.telemetry import decode_batch
from services.logger.recorder import Recorder
from services.logger.runs import RunRecorder
from services.logger.stats import LoggerStats

SERVICE = "logger"
log = logging.getLogger("rcs.logger")


class Logger:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stats = LoggerStats()
        self._problems = Throttled(log)
        self._decode = DropMalformed(self.stats, "malformed_total", self._problems)
        self.mqtt = MqttClient(settings.mqtt, SERVICE)
        self.rpc_client = RpcClient(self.mqtt)
        self.rpc_server = RpcServer(self.mqtt)
        self.recorder = Recorder(
            settings,
            self.stats,
            self.rpc_client,
            publish_event=self._publish_event,
            set_status=self.mqtt.set_status,
        )
        self.repairer = self.recorder.repairer
        self.runs = RunRecorder(settings, self.rpc_client, publish_event=self._publish_event)
        self.mqtt.subscribe(topics.TELEMETRY, self._on_telemetry)
        self.mqtt.subscribe(topics.EVENTS, self._on_event, qos=1)
        self.mqtt.subscribe(topics.STATE_RUN, self._on_run_state, qos=1)
        self.mqtt.subscribe(topics.TELEMETRY_META, self._on_meta, qos=1)
        self.rpc_server.serve(topics.LOGGER_SAVE, lambda _request: self.recorder.save_now())
        self.rpc_server.serve(topics.LOGGER_STATUS, lambda _request: self.recorder.status())
        self.rpc_server.serve(topics.LOGGER_RUNS, self.runs.list_runs)
        self.rpc_server.serve(topics.LOGGER_RUN, self.runs.get_run)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.recorder.start()
        self.runs.start()
        self.repairer.start()
        self.mqtt.start()

    def stop(self) -> None:
        """The parts that ask acquisition for samples (repairer, runs) stop while the broker can still
        answer them: one stopped after it would wait out each request's timeout instead."""
        self.recorder.stop_waiting_for_disk()
        self.rpc_server.close()
        self.repairer.stop()
        self.runs.stop()
        self.mqtt.stop()
        self.recorder.stop()
        self.rpc_client.close()

    # --- paho's thread: decode and hand over -------------------------------------------------

    def _on_telemetry(self, message: Message) -> None:
        if not self.recorder.ready:
            return  # data_dir not loaded yet: the first batch after it is asks for the repair
        batch = self._decode(decode_batch, message.payload, "malformed", "telemetry")
        if batch is None:
            return
        self.recorder.take_batch(batch)
        self.runs.take_batch(batch)

    def _on_event(self, message: Message) -> None:
        event = self._decode(unpack_map, message.payload, "malformed-event", "event")
        if event is None:
            return
        attributed, forged = audit.received_event(message.topic, event, self._problems)
        if forged:
            self.stats.forged_events_total += 1
        self.recorder.take_event(attributed)
        self.runs.take_event(attributed)

    def _on_run_state(self, message: Message) -> None:
        if not message.payload:
            return  # the retained state cleared
        state = self._decode(unpack_map, message.payload, "malformed-run-state", "run state")
        if state is not None:
            self.runs.take_state(state)

    def _on_meta(self, message: Message) -> None:
        if not message.payload:
            return
        meta = self._decode(unpack_map, message.payload, "malformed-meta", "telemetry meta")
        if meta is not None:
            self.runs.take_meta(meta)

    def _publish_event(self, kind: str, **fields: Any) -> None:
        self.mqtt.publish(topics.events(SERVICE), audit.event_payload(SERVICE, kind, fields), qos=1)

    def metrics(self) -> dict[str, float]:
        return {
            **asdict(self.stats),
            "disk_ok": float(self.recorder.disk.error is None),
            "behind": float(self.recorder.lag.behind),
            "repair_pending_samples": float(self.repairer.pending_samples),
            **self.runs.metrics(),
        }


def main() -> None:
    run_service(SERVICE, Logger, lambda settings: settings.logger.metrics_port)


if __name__ == "__main__":
    main()
