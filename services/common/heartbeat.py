"""The operator heartbeat on `rcs/operator/heartbeat`: `{who, ts}`, which actuation's deadman needs
from an open operator console to arm and while the stand is armed (docs/protocol.md).

Only a well-formed heartbeat counts (`parse_heartbeat`): a MessagePack map with a non-empty string
`who` and a UNIX time `ts` within `max_skew_s` of the receiver's clock (actuation uses
`actuation.operator_timeout_s`). Anything else, an empty payload included, is no heartbeat.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from services.common import topics
from services.common.codec import WireFormatError, pack, unpack_map
from services.common.mqtt import MqttClient

MAX_WHO_CHARS = 200


class BadHeartbeatError(ValueError):
    """A payload on the heartbeat topic that is no heartbeat; `kind` names the problem for counting."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


@dataclass(frozen=True)
class Heartbeat:
    who: str
    ts: float


def parse_heartbeat(payload: bytes, now: float, max_skew_s: float) -> Heartbeat:
    """The heartbeat in `payload` if it is well-formed and fresh at UNIX time `now`; else raises
    BadHeartbeatError."""
    try:
        message = unpack_map(payload)
    except WireFormatError as exc:
        raise BadHeartbeatError("undecodable", f"not a MessagePack map: {exc}") from exc
    who, ts = message.get("who"), message.get("ts")
    if not isinstance(who, str) or not who.strip() or len(who) > MAX_WHO_CHARS:
        raise BadHeartbeatError("who", f"'who' must be a name of 1 to {MAX_WHO_CHARS} characters")
    if not isinstance(ts, int | float) or isinstance(ts, bool) or not math.isfinite(ts):
        raise BadHeartbeatError("ts", "'ts' must be a UNIX time in seconds")
    if abs(now - ts) > max_skew_s:
        raise BadHeartbeatError(
            "stale", f"'ts' is {now - ts:+.1f} s off this clock (at most {max_skew_s:g} s)"
        )
    return Heartbeat(who, float(ts))


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
