"""What is wrong with the stand: one list that `/api/status`, `/api/health` and the dashboard share.

Built from what the gateway's bus holds (the services' retained statuses, `rcs/state/stm32`) and
the time since the last telemetry batch arrived. Each problem names its component and says why, in
words for people; an empty list means nothing is known to be wrong. Without the broker nothing else
can be known, so that is then the only problem.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from services.common import topics
from services.gateway.bus import Bus

SERVICES = ("acquisition", "actuation", "logger", "gateway")


@dataclass(frozen=True)
class Problem:
    component: str  # a service, "broker", "stm32", "telemetry" or "disk"
    reason: str


def _service_problems(bus: Bus) -> list[Problem]:
    found = []
    for service in SERVICES:
        status = bus.latest(topics.status(service))
        if status is None:
            found.append(Problem(service, f"{service} is offline (never seen on the broker)"))
        elif status.get("state") != "online":
            reason = status.get("reason", "no reason given")
            found.append(Problem(service, f"{service} is offline ({reason})"))
    return found


def _stm32_problems(stm32: dict[str, Any] | None, now: float) -> list[Problem]:
    if stm32 is None:
        return [Problem("stm32", "no STM32 link state from acquisition yet")]
    link = stm32.get("link", "up" if stm32.get("connected") is True else "down")
    if link == "silent":
        since = stm32.get("silent_since")
        quiet = f"for {now - since:.0f} s" if isinstance(since, int | float) else "lately"
        return [Problem("stm32", f"STM32 silent: no frame {quiet} (port {stm32.get('port')} still open)")]
    if link != "up":
        return [Problem("stm32", "STM32 not connected (no port found, unplugged, or not answering)")]
    return []


def _telemetry_problems(age_s: float | None, stale_after_s: float) -> list[Problem]:
    if age_s is None:
        return [Problem("telemetry", "no telemetry received since the gateway started")]
    if age_s > stale_after_s:
        return [Problem("telemetry", f"telemetry stale: no batch for {age_s:.0f} s")]
    return []


def logger_problems(logger: dict[str, Any] | None) -> list[Problem]:
    """What the logger's retained status says is wrong (its disk, how far behind it is)."""
    if logger is None or logger.get("state") != "online":
        return []  # said as a service problem
    found = []
    if logger.get("disk") == "error":
        found.append(Problem("disk", f"the logger cannot write: {logger.get('disk_error')}"))
    behind = logger.get("behind_s")
    if isinstance(behind, int | float):
        found.append(Problem("logger", f"logger behind: recording {behind:.1f} s behind the telemetry"))
    return found


def stand_problems(bus: Bus, stale_after_s: float) -> list[Problem]:
    """Everything known to be wrong now (see the module docstring)."""
    if not bus.connected:
        return [Problem("broker", "the gateway is not connected to the MQTT broker")]
    found = _service_problems(bus)
    acquisition = bus.latest(topics.status("acquisition")) or {}
    if acquisition.get("state") == "online":  # else its state says nothing current
        found += _stm32_problems(bus.latest(topics.STATE_STM32), time.time())
    found += _telemetry_problems(bus.telemetry_age_s(), stale_after_s)
    found += logger_problems(bus.latest(topics.status("logger")))
    return found
