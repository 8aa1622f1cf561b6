"""Deadman: while armed or running, the stand must hear from its operator, its telemetry and acquisition.

Times are monotonic seconds, passed in. Nothing heard yet counts as silence.
"""

from __future__ import annotations

from services.actuation.core import SystemState
from services.common.settings import Settings

_WATCHED = (SystemState.ARMED, SystemState.RUNNING)


class Deadman:
    def __init__(self, settings: Settings) -> None:
        self._operator_timeout_s = settings.actuation.operator_timeout_s
        self._telemetry_stale_s = settings.actuation.telemetry_stale_ms / 1000
        self._heartbeat: float | None = None
        self._telemetry: float | None = None
        self._acquisition_online = False
        self._offline_since: float | None = None  # since when acquisition has said it is offline

    def operator_heartbeat(self, now: float) -> None:
        self._heartbeat = now

    def telemetry(self, now: float) -> None:
        """A telemetry batch arrived."""
        self._telemetry = now

    def acquisition_status(self, online: bool, now: float) -> None:
        """Acquisition's retained online/offline status arrived."""
        if online:
            self._offline_since = None
        elif self._acquisition_online or self._offline_since is None:
            self._offline_since = now
        self._acquisition_online = online

    def check(self, now: float, state: SystemState) -> str | None:
        """Why the stand must abort now, or None (always None unless armed or running)."""
        return self.arm_blocker(now) if state in _WATCHED else None

    def arm_blocker(self, now: float) -> str | None:
        """Why arming must be refused now: the same conditions, so arming never trips the deadman."""
        if self._heartbeat is None:
            return "no operator heartbeat received"
        if now - self._heartbeat > self._operator_timeout_s:
            return f"no operator heartbeat for {now - self._heartbeat:.1f} s"
        if self._telemetry is None:
            return "no telemetry received"
        if now - self._telemetry > self._telemetry_stale_s:
            return f"telemetry stale for {(now - self._telemetry) * 1000:.0f} ms"
        if not self._acquisition_online:
            if self._offline_since is None:
                return "acquisition offline (no status received)"
            return f"acquisition offline for {now - self._offline_since:.1f} s"
        return None
