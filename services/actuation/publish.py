"""Everything actuation publishes: its events on `rcs/events/actuation` and its retained state
topics (`rcs/state/system`, `rcs/state/valves`, `rcs/state/motors`, `rcs/state/alarms`,
`rcs/state/run`); formats in
docs/protocol.md.

`StatePublisher` only formats and publishes: what to publish, and when, is decided by its callers
(the control thread for the system and valve state, the motor controller's thread for the motors).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from services.actuation.alarms import AlarmBook
from services.actuation.core import SequenceProgress, StandCore
from services.actuation.motor_moves import MotorsState
from services.actuation.progress import alarms_state, sequence_state
from services.actuation.valve_map import ValveMap
from services.common import audit, topics
from services.common.codec import pack
from services.common.mqtt import MqttClient

STEP_FIELDS = ("step", "steps", "phase", "abort", "procedure")


class StatePublisher:
    def __init__(self, mqtt: MqttClient, service: str, valve_map: ValveMap) -> None:
        self._mqtt = mqtt
        self._service = service
        self._valve_map = valve_map
        self.valves_state: dict[str, Any] | None = None  # as last published on rcs/state/valves
        self.alarms_state: dict[str, Any] = {"alarms": [], "ts": time.time()}  # ... on rcs/state/alarms
        self.run_state: dict[str, Any] = {"active": None, "last": None, "ts": time.time()}  # rcs/state/run

    def event(self, kind: str, **fields: Any) -> None:
        self._mqtt.publish(
            topics.events(self._service), audit.event_payload(self._service, kind, fields), qos=1
        )

    def motor_event(self, event: dict[str, Any]) -> None:
        """An event of the motor controller's (`{"kind": ..., **fields}`), as an actuation event."""
        self.event(str(event.get("kind", "motor")), **{k: v for k, v in event.items() if k != "kind"})

    def system(self, core: StandCore) -> None:
        sequence = sequence_state(core, time.monotonic(), time.time())
        state = {
            "state": str(core.state),
            "armed": core.armed,
            "reason": core.reason,
            "sequence": sequence,
            "commanded": self._valve_map.format(core.commanded),
            "ts": time.time(),
        }
        self._mqtt.publish(topics.STATE_SYSTEM, pack(state), qos=1, retain=True)

    def step(self, at: float | None, progress: SequenceProgress | None) -> None:
        """A `step` event: a sequence started a step (`at`, monotonic), or ended (None, None). The
        record of the phases a run went through (its report's phase bands)."""
        if progress is None:
            self.event("step", sequence=None)
            return
        now_mono, now_unix = time.monotonic(), time.time()
        fields = {k: getattr(progress, k) for k in STEP_FIELDS}
        t0 = None if progress.t0 is None else now_unix - (now_mono - progress.t0)
        started = None if at is None else now_unix - (now_mono - at)
        self.event("step", sequence=progress.name, **fields, t0=t0, at=started)

    def alarms(self, book: AlarmBook) -> None:
        self.alarms_state = alarms_state(book, time.time())
        self._mqtt.publish(topics.STATE_ALARMS, pack(self.alarms_state), qos=1, retain=True)

    def run(self, state: dict[str, Any]) -> None:
        self.run_state = state
        self._mqtt.publish(topics.STATE_RUN, pack(state), qos=1, retain=True)

    def valves(self, mask: int, cause: str) -> None:
        changed = self.valves_state is None or self.valves_state["bits"] != self._valve_map.format(mask)
        self.valves_state = {
            "names": list(self._valve_map.names),
            "bits": self._valve_map.format(mask),
            "valves": self._valve_map.as_list(mask),
            "open": self._valve_map.open_names(mask),
            "cause": cause,
            "ts": time.time(),
        }
        self._mqtt.publish(topics.STATE_VALVES, pack(self.valves_state), qos=1, retain=True)
        if changed:  # the valves' history in the audit trail (a run's report marks each change)
            state = self.valves_state
            self.event("valves", bits=state["bits"], open=state["open"], cause=cause)

    def motors(self, state: MotorsState) -> None:
        message = {
            "connected": state.connected,
            "port": state.port,
            "motors": [asdict(m) for m in state.motors],
            "ts": time.time(),
        }
        self._mqtt.publish(topics.STATE_MOTORS, pack(message), qos=1, retain=True)

    def republish(self, core: StandCore, motors: MotorsState) -> None:
        """After (re)connecting to the broker: the retained state again (the valves as last published,
        not re-stamped)."""
        self.system(core)
        self._mqtt.publish(topics.STATE_ALARMS, pack(self.alarms_state), qos=1, retain=True)
        self._mqtt.publish(topics.STATE_RUN, pack(self.run_state), qos=1, retain=True)
        if self.valves_state is not None:
            self._mqtt.publish(topics.STATE_VALVES, pack(self.valves_state), qos=1, retain=True)
        self.motors(motors)
