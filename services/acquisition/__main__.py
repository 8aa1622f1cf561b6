"""rcs-acquisition: STM32 serial link -> calibrated, numbered samples -> ring buffer -> MQTT, and
actuation's valve commands -> STM32 -> acknowledgements. This module wires the parts to I/O.

Threads: the serial link's reader (decodes; the sample path numbers, calibrates and appends to the
ring: samples.py), the publisher (ring -> one telemetry message per batch: publisher.py), paho's
network thread, the request handlers' pool (ring -> history replies: history.py), the valve-command
writer (valves.py) and the device watch (is the device still talking? keeps `rcs/state/stm32`
current: device_state.py). The ring buffer is the only data the sample path shares; the valve path
keeps its own state behind its own lock.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime

from services.acquisition.binary_protocol import RawBlock
from services.acquisition.device_state import DeviceState, source
from services.acquisition.history import HistorySource
from services.acquisition.meta import telemetry_meta
from services.acquisition.publisher import TelemetryPublisher
from services.acquisition.ring_buffer import RingBuffer
from services.acquisition.samples import SamplePath
from services.acquisition.serial_link import LinkInfo, SerialLink
from services.acquisition.tare import TareBook
from services.acquisition.text_protocol import EngineeringBlock, TextAck
from services.acquisition.valves import ValveControl
from services.common import topics
from services.common.codec import pack
from services.common.event_outbox import EventOutbox
from services.common.lifecycle import run_service
from services.common.mqtt import MqttClient
from services.common.rpc import RpcServer
from services.common.settings import Settings
from services.common.stm32_wire import StatusFrame, ValveAckFrame

SERVICE = "acquisition"
log = logging.getLogger("rcs.acquisition")


def new_session_id() -> str:
    """Sortable and unique: UTC start time plus a random suffix."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class Acquisition:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.session = new_session_id()
        self.ring = RingBuffer(settings.acquisition.ring_capacity, len(settings.channels))
        self.samples = SamplePath(settings, self.ring)

        self.mqtt = MqttClient(settings.mqtt, SERVICE)
        self.device = DeviceState(
            self.mqtt, settings.stm32.silent_after_s, lambda: self.samples.numbering.lost_samples
        )
        self.rpc = RpcServer(self.mqtt)
        history = HistorySource(self.ring, self.session, settings.channel_names)
        self.rpc.serve(topics.ACQ_BUFFER_STATUS, history.buffer_status)
        self.rpc.serve(topics.ACQ_HISTORY, history.history)
        self.rpc.serve(topics.ACQ_HISTORY_REDUCED, history.history_reduced)
        self.tare = TareBook(
            settings, self.ring, self.samples.offsets, self._publish_meta, lambda: self.samples.appended_at
        )
        self.tare.load()
        self.rpc.serve(topics.ACQ_TARE, self.tare.tare)
        self.mqtt.add_connection_listener(self._on_broker)
        self.publisher = TelemetryPublisher(
            self.ring,
            self.mqtt.publish,
            session=self.session,
            channels=settings.channel_names,
            rate_hz=lambda: self.samples.rate.hz,
            batch_ms=settings.acquisition.batch_ms,
        )
        self.link = SerialLink(
            settings,
            on_block=self._on_block,
            on_status=self._on_status,
            on_ack=self._on_ack,
            on_connection=self._on_connection,
        )
        link = self.link
        self.events = EventOutbox(self.mqtt)
        self.valves = ValveControl(
            len(settings.valves),
            self.mqtt.publish,
            set_valves=link.set_valves,
            go_safe=link.go_safe,
            publish_event=self.events.publish,
        )
        self.mqtt.subscribe(topics.STM32_VALVES, self.valves.on_valves_message, qos=1)
        self.mqtt.subscribe(topics.STM32_GO_SAFE, self.valves.on_go_safe_message, qos=1)
        self.mqtt.subscribe(topics.status("actuation"), self.valves.on_actuation_status, qos=1)
        self.mqtt.add_connection_listener(self.valves.on_broker)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        log.info(
            "session %s: ring buffer of %d samples x %d channels (%.0f MB)",
            self.session,
            self.ring.capacity,
            self.ring.n_channels,
            self.ring.nbytes / 1e6,
        )
        self.valves.start()
        self.mqtt.start()
        self.publisher.start()
        self.link.start()
        self.device.start()

    def stop(self) -> None:
        self.valves.stop()  # may command GO_SAFE: before the link stops
        self.device.stop()
        self.link.stop()
        self.publisher.stop()
        self.rpc.close()
        self.events.close()
        self.mqtt.stop()

    # --- serial link thread ------------------------------------------------------------------

    def _on_block(self, block: RawBlock | EngineeringBlock) -> None:
        self.device.heard()
        if self.samples.append(block):
            self.publisher.notify()

    def _on_status(self, status: StatusFrame) -> None:
        self.device.heard()
        self.valves.on_device_valves(status.valves)
        if self.device.on_status(status):
            self._publish_meta()

    def _on_ack(self, ack: ValveAckFrame | TextAck) -> None:
        self.device.heard()
        log.info("device acknowledgement: %s", ack)
        self.valves.on_ack(ack)
        if isinstance(ack, ValveAckFrame):
            self.device.on_valve_ack(ack)

    def _on_connection(self, info: LinkInfo | None) -> None:
        self.valves.on_connection(None if info is None else info.protocol)
        self.device.on_connection(info)
        self._publish_meta()

    # --- MQTT --------------------------------------------------------------------------------

    def _on_broker(self, connected: bool) -> None:
        if connected:  # retained messages may be gone if the broker restarted
            self._publish_meta()
            self.device.publish()

    def _publish_meta(self) -> None:
        rate_hz, link = self.samples.rate.hz, self.device.link_info
        meta = telemetry_meta(self.settings, self.session, rate_hz, source(link), self.tare.meta())
        self.mqtt.publish(topics.TELEMETRY_META, pack(meta), qos=1, retain=True)

    def metrics(self) -> dict[str, float]:
        link, pub, mqtt, valves = self.link.stats, self.publisher.stats, self.mqtt.stats, self.valves.stats
        numbering = self.samples.numbering
        return {
            "samples_total": numbering.next_seq,
            "batches_published_total": pub.batches_published,
            "batches_dropped_total": pub.batches_dropped,
            "samples_overrun_total": pub.samples_overrun,
            "crc_errors_total": link.crc_errors,
            "bad_frames_total": link.bad_frames,
            "bad_lines_total": link.bad_lines,
            "counter_gaps_total": link.counter_gaps,
            "lost_samples_total": numbering.lost_samples,
            "reconnects_total": link.reconnects,
            "device_resets_total": numbering.device_resets,
            "block_errors_total": self.samples.block_errors,
            "mqtt_dropped_total": mqtt.dropped,
            "valve_commands_total": valves.commands,
            "valve_commands_expired_total": valves.expired,
            "valve_commands_malformed_total": valves.malformed,
            "valve_commands_refused_total": valves.refused,
            "valve_commands_not_connected_total": valves.not_connected,
            "valve_commands_written_total": valves.written,
            "valve_commands_unanswered_total": valves.unanswered,
            "valve_acks_total": valves.acks,
            "valve_acks_unmatched_total": valves.unmatched,
            "go_safe_own_total": valves.own_go_safe,
            "events_held": self.events.held,
            "events_dropped_total": self.events.dropped,
            "stm32_connected": float(self.device.connected),
            "ring_fill": self.ring.size / self.ring.capacity,
            "rate_hz": self.samples.rate.hz,
            "tared_channels": float(len(self.tare.entries)),
        }


def main() -> None:
    run_service(SERVICE, Acquisition, lambda settings: settings.acquisition.metrics_port)


if __name__ == "__main__":
    main()
