"""rcs-acquisition: STM32 serial link -> calibrated, numbered samples -> ring buffer -> MQTT, and
actuation's valve commands -> STM32 -> acknowledgements (services/acquisition/valves.py).

Threads: the serial link's reader (decodes, numbers, calibrates, appends to the ring), the
publisher (ring -> one telemetry message per batch), paho's network thread, the request
handlers' pool (ring -> history replies), the valve-command writer and the device watch (is the
device still talking? keeps `rcs/state/stm32` current). The ring buffer is the only data the sample
path shares; the valve path keeps its own state behind its own lock.

A device that stops sending frames while its port stays open (a hung firmware, a stalled USB link)
is "silent" after `stm32.silent_after_s`: `rcs/state/stm32` then says `connected: false`,
`link: "silent"` and since when, until a frame arrives again.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from datetime import UTC, datetime
from typing import Any

from services.acquisition.binary_protocol import RawBlock
from services.acquisition.calibration import Calibration
from services.acquisition.history import HistorySource
from services.acquisition.numbering import SampleNumbering
from services.acquisition.publisher import TelemetryPublisher
from services.acquisition.rate import RateEstimator
from services.acquisition.ring_buffer import RingBuffer
from services.acquisition.serial_link import LinkInfo, SerialLink
from services.acquisition.text_protocol import EngineeringBlock, TextAck
from services.acquisition.valves import ValveControl
from services.common import topics
from services.common.codec import pack
from services.common.derived import Derivation
from services.common.event_outbox import EventOutbox
from services.common.lifecycle import run_service
from services.common.logs import Throttled
from services.common.mqtt import MqttClient
from services.common.rpc import RpcServer
from services.common.settings import Settings
from services.common.stm32_wire import StatusFrame, ValveAckFrame
from services.common.telemetry import VERSION as TELEMETRY_VERSION

SERVICE = "acquisition"
log = logging.getLogger("rcs.acquisition")

WATCH_PERIOD_S = 0.1  # how often the device watch looks (bounds how late silence is reported)
LOST_REPORT_INTERVAL_S = 1.0  # a changed lost_samples_total is republished at most this often


def new_session_id() -> str:
    """Sortable and unique: UTC start time plus a random suffix."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class Acquisition:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.session = new_session_id()
        self.ring = RingBuffer(settings.acquisition.ring_capacity, len(settings.channels))
        self.numbering = SampleNumbering()
        self.calibration = Calibration(settings)
        self.derivation = Derivation(settings)
        self.rate = RateEstimator(settings.acquisition.rate_hz)
        self.link_info: LinkInfo | None = None
        self.device_status: StatusFrame | None = None
        self.device_valves: int | None = None  # the newest the device said: STATUS or an acknowledgement
        self.block_errors = 0
        self._problems = Throttled(log)
        self._last_frame = 0.0  # monotonic time of the newest frame (any message) from the device
        self._silent_since: float | None = None  # UNIX time of the last frame while the device is silent
        self._state_lock = threading.Lock()  # one rcs/state/stm32 built and published at a time
        self._lost_published = 0
        self._connected_published: bool | None = None  # as the service status last said it
        self._state_published_at = 0.0  # monotonic
        self._stopping = threading.Event()
        self._watch = threading.Thread(target=self._watch_device, name="device-watch", daemon=True)

        self.mqtt = MqttClient(settings.mqtt, SERVICE)
        self.rpc = RpcServer(self.mqtt)
        history = HistorySource(self.ring, self.session, settings.channel_names)
        self.rpc.serve(topics.ACQ_BUFFER_STATUS, history.buffer_status)
        self.rpc.serve(topics.ACQ_HISTORY, history.history)
        self.rpc.serve(topics.ACQ_HISTORY_REDUCED, history.history_reduced)
        self.mqtt.add_connection_listener(self._on_broker)
        self.publisher = TelemetryPublisher(
            self.ring,
            self.mqtt.publish,
            session=self.session,
            channels=settings.channel_names,
            rate_hz=lambda: self.rate.hz,
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
        self._watch.start()

    def stop(self) -> None:
        self.valves.stop()  # may command GO_SAFE: before the link stops
        self._stopping.set()
        self._watch.join()
        self.link.stop()
        self.publisher.stop()
        self.rpc.close()
        self.events.close()
        self.mqtt.stop()

    # --- serial link thread ------------------------------------------------------------------

    def _on_block(self, block: RawBlock | EngineeringBlock) -> None:
        self._last_frame = time.monotonic()
        try:
            if isinstance(block, RawBlock):
                n = len(block.raw)
                numbered = self.numbering.device_block(
                    block.counter, block.t_us, n, block.rate_hz, time.time()
                )
                rows = self.derivation.compute(numbered.t, self.calibration.apply(block.raw))
                self.ring.append(numbered.first_seq, numbered.t, rows)
                self.rate.set_nominal(block.rate_hz)
            else:
                n = len(block.t)
                self.ring.append(self.numbering.host_block(n), block.t, block.values)
                self.rate.count(n, time.monotonic())
            self.publisher.notify()
        except ValueError as exc:  # a block that does not fit the configured channels
            self.block_errors += 1
            self._problems.warning("block", "dropped a sample block: %s", exc)

    def _on_status(self, status: StatusFrame) -> None:
        self._last_frame = time.monotonic()
        self.valves.on_device_valves(status.valves)
        previous, self.device_status = self.device_status, status
        if previous is None or (self.device_valves, previous.flags) != (status.valves, status.flags):
            self.device_valves = status.valves
            self._publish_stm32_state()
        if previous is None or previous.rate_hz != status.rate_hz:
            self._publish_meta()

    def _on_ack(self, ack: ValveAckFrame | TextAck) -> None:
        self._last_frame = time.monotonic()
        log.info("device acknowledgement: %s", ack)
        self.valves.on_ack(ack)
        if not isinstance(ack, ValveAckFrame) or self.device_status is None:
            return
        if ack.valves != self.device_valves:  # STATUS may not say so before the outputs change again
            self.device_valves = ack.valves
            self._publish_stm32_state()

    def _on_connection(self, info: LinkInfo | None) -> None:
        self.valves.on_connection(None if info is None else info.protocol)
        self._last_frame = time.monotonic()  # the connection was announced on a frame (or detection)
        with self._state_lock:
            self.link_info = info
            self._silent_since = None
        if info is None:
            self.device_status = self.device_valves = None
            log.warning("STM32 link lost; reconnecting")
        else:
            log.info("STM32 connected on %s (%s protocol, device %r)", info.port, info.protocol, info.device)
        self._publish_stm32_state()
        self._publish_meta()

    # --- the device watch ----------------------------------------------------------------------

    def _watch_device(self) -> None:
        period = min(WATCH_PERIOD_S, self.settings.stm32.silent_after_s / 2)
        while not self._stopping.wait(period):
            self._check_device()

    def _check_device(self) -> None:
        """Report the device silent (or talking again), and samples newly lost."""
        with self._state_lock:  # read after a new connection's _last_frame, or before its link_info
            quiet_s = time.monotonic() - self._last_frame
            silent = self.link_info is not None and quiet_s > self.settings.stm32.silent_after_s
            changed = silent != (self._silent_since is not None)
            if changed:
                self._silent_since = time.time() - quiet_s if silent else None
            lost_changed = self.numbering.lost_samples != self._lost_published
            due = time.monotonic() - self._state_published_at >= LOST_REPORT_INTERVAL_S
        if changed:
            if silent:
                log.warning("STM32 silent: no frame for %.1f s (the port is still open)", quiet_s)
            else:
                log.info("STM32 sends frames again")
        if changed or (lost_changed and due):
            self._publish_stm32_state()

    # --- MQTT --------------------------------------------------------------------------------

    def _on_broker(self, connected: bool) -> None:
        if connected:  # retained messages may be gone if the broker restarted
            self._publish_meta()
            self._publish_stm32_state()

    def _source(self) -> dict[str, Any]:
        info = self.link_info
        if info is None:
            return {"kind": "none", "protocol": None, "port": None, "device": None}
        kind = "emulator" if info.device.startswith("rcs-emulator") else "stm32"
        return {"kind": kind, "protocol": info.protocol, "port": info.port, "device": info.device}

    def _publish_meta(self) -> None:
        meta = {
            "v": TELEMETRY_VERSION,
            "session": self.session,
            "rate_hz": self.rate.hz,
            "batch_ms": self.settings.acquisition.batch_ms,
            "channels": [
                {
                    "name": c.name,
                    "unit": c.unit,
                    "description": c.description,
                    "kind": "measured" if c.measured else "derived",
                }
                for c in self.settings.channels
            ],
            "source": self._source(),
            "ts": time.time(),
        }
        self.mqtt.publish(topics.TELEMETRY_META, pack(meta), qos=1, retain=True)

    def _publish_stm32_state(self) -> None:
        """The state, and the service status's `stm32_connected` when that changed (one lock: the
        link thread and the device watch may both publish, and the last word must be the newest)."""
        with self._state_lock:
            status = self.device_status
            up = self.link_info is not None
            silent_since = self._silent_since
            lost = self._lost_published = self.numbering.lost_samples
            self._state_published_at = time.monotonic()
            state = {
                "connected": up and silent_since is None,
                "link": "down" if not up else "up" if silent_since is None else "silent",
                "silent_since": silent_since,
                **self._source(),
                "valves": self.device_valves,  # None exactly while there is no STATUS yet
                "safe": None if status is None else status.safe,
                "lost_samples_total": lost,
                "ts": time.time(),
            }
            self.mqtt.publish(topics.STATE_STM32, pack(state), qos=1, retain=True)
            if state["connected"] != self._connected_published:
                self._connected_published = bool(state["connected"])
                self.mqtt.set_status(stm32_connected=self._connected_published)

    def metrics(self) -> dict[str, float]:
        link, pub, mqtt, valves = self.link.stats, self.publisher.stats, self.mqtt.stats, self.valves.stats
        return {
            "samples_total": self.numbering.next_seq,
            "batches_published_total": pub.batches_published,
            "batches_dropped_total": pub.batches_dropped,
            "samples_overrun_total": pub.samples_overrun,
            "crc_errors_total": link.crc_errors,
            "bad_frames_total": link.bad_frames,
            "bad_lines_total": link.bad_lines,
            "counter_gaps_total": link.counter_gaps,
            "lost_samples_total": self.numbering.lost_samples,
            "reconnects_total": link.reconnects,
            "device_resets_total": self.numbering.device_resets,
            "block_errors_total": self.block_errors,
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
            "stm32_connected": float(self.link_info is not None and self._silent_since is None),
            "ring_fill": self.ring.size / self.ring.capacity,
            "rate_hz": self.rate.hz,
        }


def main() -> None:
    run_service(SERVICE, Acquisition, lambda settings: settings.acquisition.metrics_port)


if __name__ == "__main__":
    main()
