"""Alarms: warning limits and red-line trips, each until an operator has acknowledged it and it has cleared.

Lifecycle of one alarm (docs/safety.md §6.1):

    raised -> active-unacknowledged --ack--> active-acknowledged --clears--> (gone)
                     |                                 ^
                  clears                            raised again
                     v                                 |
              cleared-unacknowledged --ack--> (gone)   |
                     └──── raised again: active-unacknowledged (same id)

Pure: no I/O; times (`ts`, UNIX seconds) are passed in. One alarm per limit at a time, so the book is
bounded by the number of configured limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal

from services.actuation.redlines import RedlineMonitor, Trip
from services.common.settings import Redline

AlarmKind = Literal["warning", "redline"]


class AlarmState(StrEnum):
    ACTIVE_UNACKNOWLEDGED = "active-unacknowledged"
    ACTIVE_ACKNOWLEDGED = "active-acknowledged"
    CLEARED_UNACKNOWLEDGED = "cleared-unacknowledged"


@dataclass(frozen=True)
class Alarm:
    id: int
    key: str  # "warning P5 above 18": one alarm per limit
    kind: AlarmKind
    channel: str
    direction: Literal["above", "below"]
    limit: float
    value: float | None  # the extreme value when it was raised (None: not known)
    state: AlarmState
    raised_ts: float
    cleared_ts: float | None = None
    acknowledged_by: str | None = None
    acknowledged_ts: float | None = None


def limit_key(kind: AlarmKind, rule: Redline) -> str:
    direction, limit = ("above", rule.above) if rule.above is not None else ("below", rule.below)
    return f"{kind} {rule.channel} {direction} {limit:g}"


class AlarmBook:
    def __init__(self) -> None:
        self._alarms: dict[str, Alarm] = {}
        self._next_id = 1

    @property
    def alarms(self) -> tuple[Alarm, ...]:
        return tuple(sorted(self._alarms.values(), key=lambda alarm: alarm.id))

    def raise_limit(self, kind: AlarmKind, rule: Redline, value: float | None, ts: float) -> bool:
        """The limit is exceeded (long enough); True when that changed an alarm."""
        key = limit_key(kind, rule)
        alarm = self._alarms.get(key)
        if alarm is not None and alarm.state is not AlarmState.CLEARED_UNACKNOWLEDGED:
            return False
        if alarm is not None:
            self._alarms[key] = replace(
                alarm, state=AlarmState.ACTIVE_UNACKNOWLEDGED, value=value, raised_ts=ts, cleared_ts=None
            )
            return True
        direction: Literal["above", "below"] = "above" if rule.above is not None else "below"
        limit = rule.above if rule.above is not None else rule.below
        assert limit is not None  # the settings give exactly one
        self._alarms[key] = Alarm(
            self._next_id,
            key,
            kind,
            rule.channel,
            direction,
            limit,
            value,
            AlarmState.ACTIVE_UNACKNOWLEDGED,
            ts,
        )
        self._next_id += 1
        return True

    def clear_limit(self, kind: AlarmKind, rule: Redline, ts: float) -> bool:
        """The limit is no longer exceeded; True when that changed an alarm."""
        key = limit_key(kind, rule)
        alarm = self._alarms.get(key)
        if alarm is None or alarm.state is AlarmState.CLEARED_UNACKNOWLEDGED:
            return False
        if alarm.state is AlarmState.ACTIVE_ACKNOWLEDGED:
            del self._alarms[key]
        else:
            self._alarms[key] = replace(alarm, state=AlarmState.CLEARED_UNACKNOWLEDGED, cleared_ts=ts)
        return True

    def follow(
        self,
        kind: AlarmKind,
        monitor: RedlineMonitor,
        trip: Trip | None,
        values: Mapping[str, float],
        ts: float,
    ) -> bool:
        """After `monitor` checked a batch: raise the limits beyond (and the one that tripped), clear the
        others. `values`: the batch's values, for alarms raised without a trip."""
        over = set(monitor.beyond())
        changed = False
        for i, rule in enumerate(monitor.rules):
            tripped = (
                trip is not None and trip.channel == rule.channel and trip.limit in (rule.above, rule.below)
            )
            if tripped or i in over:
                value = trip.value if tripped and trip is not None else values.get(rule.channel)
                changed |= self.raise_limit(kind, rule, value, ts)
            if i not in over:
                changed |= self.clear_limit(kind, rule, ts)
        return changed

    def acknowledge(self, alarm_id: int, who: str, ts: float) -> str | None:
        """Acknowledge an alarm; None when done, else why not."""
        alarm = next((a for a in self._alarms.values() if a.id == alarm_id), None)
        if alarm is None:
            return f"no alarm {alarm_id} (it may have cleared and been acknowledged already)"
        if alarm.state is AlarmState.ACTIVE_ACKNOWLEDGED:
            return f"alarm {alarm_id} is already acknowledged (by {alarm.acknowledged_by})"
        if alarm.state is AlarmState.CLEARED_UNACKNOWLEDGED:
            del self._alarms[alarm.key]
        else:
            self._alarms[alarm.key] = replace(
                alarm, state=AlarmState.ACTIVE_ACKNOWLEDGED, acknowledged_by=who, acknowledged_ts=ts
            )
        return None
