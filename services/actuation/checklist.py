"""The go/no-go checklist (`checklist:` of config/stand.yaml; docs/safety.md §2.1): pure evaluators.

Each item's `kind` names an evaluator (`EVALUATORS`), a function of the item and a `Snapshot` of what
actuation sees (retained statuses, the STM32 link state, the logger's answer, the latest telemetry
values, the valves that may be open, the tare in the telemetry meta) returning `(ok, reason)`: the
reason says what was seen, for a pass as for a failure. No I/O and no clock: the snapshot carries
`now`. `refusal` turns the failing items into the one line arm and procedures are refused with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from services.common.settings import (
    ChannelRange,
    ChecklistItem,
    LoggerRecording,
    ServicesOnline,
    Stm32Connected,
    TareRecent,
    ValvesClosed,
)

GB = 1e9


@dataclass(frozen=True)
class Snapshot:
    """What the checklist is judged on, taken at `now` (UNIX s)."""

    now: float
    statuses: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # service -> rcs/status/<service>
    stm32: Mapping[str, Any] | None = None  # rcs/state/stm32
    logger: Mapping[str, Any] | str = "not asked"  # rcs/rpc/logger/status's result, or why there is none
    values: Mapping[str, float] = field(default_factory=dict)  # latest telemetry batch's means
    values_age_s: float | None = None  # age of that batch (None: none yet)
    open_valves: Mapping[str, str] = field(default_factory=dict)  # valves that may be open: name -> role
    tare: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # the telemetry meta's `tare`
    telemetry_stale_s: float = 0.5  # values older than this are no reading


@dataclass(frozen=True)
class ItemState:
    """One item's verdict, as `rcs/rpc/actuation/checklist` and `GET /api/checklist` give it."""

    id: str
    label: str
    kind: str
    ok: bool
    reason: str
    tare: tuple[str, ...] = ()  # the channels a tare would make pass (a `tare_recent` item's)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"tare": list(self.tare)}


Verdict = tuple[bool, str]


def _services_online(item: ServicesOnline, snapshot: Snapshot) -> Verdict:
    down = []
    for service in item.services:
        status = snapshot.statuses.get(service)
        if status is None:
            down.append(f"{service} (no status)")
        elif status.get("state") != "online":
            down.append(f"{service} ({status.get('reason') or status.get('state') or 'offline'})")
    if down:
        return False, f"offline: {', '.join(down)}"
    return True, f"online: {', '.join(item.services)}"


def _stm32_connected(item: Stm32Connected, snapshot: Snapshot) -> Verdict:
    state = snapshot.stm32
    if state is None:
        return False, "no STM32 link state from acquisition"
    if state.get("connected") is not True:
        return False, f"STM32 not connected (link {state.get('link', 'unknown')})"
    protocol = state.get("protocol")
    if item.protocol not in ("any", protocol):
        return False, f"STM32 speaks the {protocol} protocol, {item.protocol} needed"
    return True, f"STM32 connected ({protocol} protocol, {state.get('kind')})"


def _logger_recording(item: LoggerRecording, snapshot: Snapshot) -> Verdict:
    status = snapshot.statuses.get("logger")
    if status is None or status.get("state") != "online":
        return False, "logger offline"
    if status.get("disk") == "error":
        return False, f"logger cannot write: {status.get('disk_error')}"
    if status.get("behind_s") is not None:
        return False, f"logger {status['behind_s']:.0f} s behind the telemetry"
    answer = snapshot.logger
    if isinstance(answer, str):
        return False, f"no status from the logger: {answer}"
    free = answer.get("disk_free_bytes")
    if isinstance(free, bool) or not isinstance(free, int | float):
        return False, "the logger does not say its free disk space"
    if free < item.min_free_disk_gb * GB:
        return (
            False,
            f"{free / GB:.1f} GB free in {answer.get('data_dir')}, {item.min_free_disk_gb:g} GB needed",
        )
    return True, f"recording, {free / GB:.1f} GB free"


def _channel_range(item: ChannelRange, snapshot: Snapshot) -> Verdict:
    age = snapshot.values_age_s
    if age is None or age > snapshot.telemetry_stale_s:
        return False, f"no recent telemetry of {item.channel}"
    value = snapshot.values.get(item.channel)
    if value is None or not math.isfinite(value):
        return False, f"{item.channel} has no value"
    low = "-inf" if item.min is None else f"{item.min:g}"
    bounds = f"{low} … {'inf' if item.max is None else f'{item.max:g}'}"
    if (item.min is not None and value < item.min) or (item.max is not None and value > item.max):
        return False, f"{item.channel} {value:.4g} outside {bounds}"
    return True, f"{item.channel} {value:.4g} within {bounds}"


def _valves_closed(item: ValvesClosed, snapshot: Snapshot) -> Verdict:
    wanted = set(item.valves)
    open_ = [
        name for name, role in snapshot.open_valves.items() if not wanted or name in wanted or role in wanted
    ]
    if open_:
        return False, f"{', '.join(open_)} may be open"
    return True, "closed" if wanted else "every valve closed"


def _tare_recent(item: TareRecent, snapshot: Snapshot) -> Verdict:
    problems = []
    for channel in item.channels:
        entry = snapshot.tare.get(channel)
        at = entry.get("at") if entry is not None else None
        if not isinstance(at, int | float) or isinstance(at, bool):
            problems.append(f"{channel} not tared")
        elif snapshot.now - at > item.max_age_s:
            problems.append(f"{channel} tared {_age(snapshot.now - at)} ago")
    if problems:
        return False, f"{', '.join(problems)} (at most {_age(item.max_age_s)} old): tare them"
    return True, f"{', '.join(item.channels)} tared within {_age(item.max_age_s)}"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


EVALUATORS: dict[str, Callable[[Any, Snapshot], Verdict]] = {
    "services_online": _services_online,
    "stm32_connected": _stm32_connected,
    "logger_recording": _logger_recording,
    "channel_range": _channel_range,
    "valves_closed": _valves_closed,
    "tare_recent": _tare_recent,
}


def evaluate(items: Sequence[ChecklistItem], snapshot: Snapshot) -> list[ItemState]:
    """Every item's verdict, in the configured order."""
    states = []
    for item in items:
        ok, reason = EVALUATORS[item.kind](item, snapshot)
        tare = item.channels if isinstance(item, TareRecent) else ()
        states.append(ItemState(item.id, item.label or item.id, item.kind, ok, reason, tare))
    return states


def refusal(states: Sequence[ItemState]) -> str | None:
    """`checklist: <id>: <reason>; …` naming every failing item, or None when all pass."""
    failing = [f"{s.id}: {s.reason}" for s in states if not s.ok]
    return f"checklist: {'; '.join(failing)}" if failing else None


def answer(states: Sequence[ItemState], now: float) -> dict[str, Any]:
    """The checklist request's result: `{ok, items: [{id, label, kind, ok, reason, tare}], ts}`."""
    return {"ok": all(s.ok for s in states), "items": [s.as_dict() for s in states], "ts": now}
