"""`rcs/state/stm32` (retained), kept current: the link (up, down, or silent), where the samples come
from, the valves the device drives, whether it says it is safe and the samples lost so far; and the
service status's `stm32_connected`.

A device that stops sending frames while its port stays open (a hung firmware, a stalled USB link)
is "silent" after `stm32.silent_after_s`: the state then says `connected: false`, `link: "silent"`
and since when, until a frame arrives again. The serial link's thread reports every frame (`heard`),
STATUS, acknowledgements and (dis)connections; the watch thread ("device-watch") reports silence,
talking again and a changed lost-sample count (at most every LOST_REPORT_INTERVAL_S).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from services.acquisition.serial_link import LinkInfo
from services.common import topics
from services.common.codec import pack
from services.common.mqtt import MqttClient
from services.common.stm32_wire import StatusFrame, ValveAckFrame

log = logging.getLogger("rcs.acquisition")

WATCH_PERIOD_S = 0.1  # how often the device watch looks (bounds how late silence is reported)
LOST_REPORT_INTERVAL_S = 1.0  # a changed lost_samples_total is republished at most this often


def source(info: LinkInfo | None) -> dict[str, Any]:
    """Where the samples come from: `{kind: stm32 | emulator | none, protocol, port, device}`."""
    if info is None:
        return {"kind": "none", "protocol": None, "port": None, "device": None}
    kind = "emulator" if info.device.startswith("rcs-emulator") else "stm32"
    return {"kind": kind, "protocol": info.protocol, "port": info.port, "device": info.device}


class DeviceState:
    def __init__(self, mqtt: MqttClient, silent_after_s: float, lost_samples: Callable[[], int]) -> None:
        self._mqtt = mqtt
        self._silent_after_s = silent_after_s
        self._lost_samples = lost_samples
        self.link_info: LinkInfo | None = None
        self.status: StatusFrame | None = None
        self.valves: int | None = None  # the newest the device said: STATUS or an acknowledgement
        self._last_frame = 0.0  # monotonic time of the newest frame (any message) from the device
        self._silent_since: float | None = None  # UNIX time of the last frame while the device is silent
        self._state_lock = threading.Lock()  # one rcs/state/stm32 built and published at a time
        self._lost_published = 0
        self._connected_published: bool | None = None  # as the service status last said it
        self._state_published_at = 0.0  # monotonic
        self._stopping = threading.Event()
        self._watch = threading.Thread(target=self._watch_device, name="device-watch", daemon=True)

    def start(self) -> None:
        self._watch.start()

    def stop(self) -> None:
        self._stopping.set()
        self._watch.join()

    @property
    def connected(self) -> bool:
        """Linked and not silent."""
        return self.link_info is not None and self._silent_since is None

    # --- serial link thread ------------------------------------------------------------------

    def heard(self) -> None:
        """A frame (any message) arrived from the device."""
        self._last_frame = time.monotonic()

    def on_status(self, status: StatusFrame) -> bool:
        """The device's STATUS; whether its rate is new (the telemetry meta says it)."""
        previous, self.status = self.status, status
        if previous is None or (self.valves, previous.flags) != (status.valves, status.flags):
            self.valves = status.valves
            self.publish()
        return previous is None or previous.rate_hz != status.rate_hz

    def on_valve_ack(self, ack: ValveAckFrame) -> None:
        if self.status is None:
            return
        if ack.valves != self.valves:  # STATUS may not say so before the outputs change again
            self.valves = ack.valves
            self.publish()

    def on_connection(self, info: LinkInfo | None) -> None:
        self.heard()  # the connection was announced on a frame (or detection)
        with self._state_lock:
            self.link_info = info
            self._silent_since = None
        if info is None:
            self.status = self.valves = None
            log.warning("STM32 link lost; reconnecting")
        else:
            log.info("STM32 connected on %s (%s protocol, device %r)", info.port, info.protocol, info.device)
        self.publish()

    # --- the device watch ----------------------------------------------------------------------

    def _watch_device(self) -> None:
        period = min(WATCH_PERIOD_S, self._silent_after_s / 2)
        while not self._stopping.wait(period):
            self._check_device()

    def _check_device(self) -> None:
        """Report the device silent (or talking again), and samples newly lost."""
        with self._state_lock:  # read after a new connection's _last_frame, or before its link_info
            quiet_s = time.monotonic() - self._last_frame
            silent = self.link_info is not None and quiet_s > self._silent_after_s
            changed = silent != (self._silent_since is not None)
            if changed:
                self._silent_since = time.time() - quiet_s if silent else None
            lost_changed = self._lost_samples() != self._lost_published
            due = time.monotonic() - self._state_published_at >= LOST_REPORT_INTERVAL_S
        if changed:
            if silent:
                log.warning("STM32 silent: no frame for %.1f s (the port is still open)", quiet_s)
            else:
                log.info("STM32 sends frames again")
        if changed or (lost_changed and due):
            self.publish()

    # --- MQTT --------------------------------------------------------------------------------

    def publish(self) -> None:
        """The state, and the service status's `stm32_connected` when that changed (one lock: the
        link thread and the device watch may both publish, and the last word must be the newest)."""
        with self._state_lock:
            status = self.status
            up = self.link_info is not None
            silent_since = self._silent_since
            lost = self._lost_published = self._lost_samples()
            self._state_published_at = time.monotonic()
            state = {
                "connected": up and silent_since is None,
                "link": "down" if not up else "up" if silent_since is None else "silent",
                "silent_since": silent_since,
                **source(self.link_info),
                "valves": self.valves,  # None exactly while there is no STATUS yet
                "safe": None if status is None else status.safe,
                "lost_samples_total": lost,
                "ts": time.time(),
            }
            self._mqtt.publish(topics.STATE_STM32, pack(state), qos=1, retain=True)
            if state["connected"] != self._connected_published:
                self._connected_published = bool(state["connected"])
                self._mqtt.set_status(stm32_connected=self._connected_published)
