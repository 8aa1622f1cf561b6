"""The operator heartbeat on `rcs/operator/heartbeat`: `{who, ts}`, which actuation's deadman needs
from an open operator console while the stand is armed (docs/protocol.md)."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Self

from services.common import topics
from services.common.codec import pack
from services.common.mqtt import MqttClient


def send_heartbeat(client: MqttClient, who: str) -> bool:
    """One heartbeat from `who` (QoS 0: a lost one is replaced by the next)."""
    return client.publish(topics.OPERATOR_HEARTBEAT, pack({"who": who, "ts": time.time()}))


class Heartbeats:
    """A heartbeat from `who` every `period_s` on a thread, from `start()` until `stop()`."""

    def __init__(self, client: MqttClient, who: str, period_s: float = 0.2) -> None:
        self._client = client
        self._who = who
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeats", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        while True:
            send_heartbeat(self._client, self._who)
            if self._stop.wait(self._period_s):
                return
