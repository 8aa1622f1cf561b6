"""What runs on the control thread (`control.ControlThread`): the one place that changes the stand.

`Authority` owns the safety core, the red-line monitor, the deadman and the valve writes waiting for
the STM32's acknowledgement; only control-thread jobs may call it. It carries out the core's
verdicts (logs and publishes each transition, sends each valve write to acquisition on the priority
connection, republishes the system state), and turns what arrives — acknowledgements, the device's
own reports, telemetry, the clock — into core decisions, aborting on a red-line, a deadman trip or
a lost broker. A sequence step's motor move is started here and its outcome comes back as a job;
each telemetry batch's means go to the core (sequence conditions), its limits to the alarms.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import Any

from services.actuation.alarms import AlarmBook
from services.actuation.core import MotorRequest, StandCore, SystemState, ValveWrite, Verdict
from services.actuation.deadman import Deadman
from services.actuation.motor_moves import MoveResult
from services.actuation.motors import MotorController
from services.actuation.pending import AckTimeoutError, PendingWrite, PendingWrites, ValveWriteRefusedError
from services.actuation.progress import alarms_state_entry, batch_values
from services.actuation.publish import StatePublisher
from services.actuation.redlines import RedlineMonitor, Trip
from services.actuation.runs import RunBook
from services.actuation.valve_map import ValveMap
from services.common import topics
from services.common.codec import pack, publish_properties
from services.common.logs import DropMalformed, Throttled
from services.common.mqtt import MqttClient
from services.common.settings import Settings
from services.common.telemetry import decode_batch

DEADMAN_PERIOD_S = 0.05  # the control thread wakes at least this often, for the deadman
log = logging.getLogger("rcs.actuation")


@dataclass
class ActuationStats:
    commands_total: int = 0
    refused_total: int = 0
    aborts_total: int = 0
    redline_trips_total: int = 0
    deadman_trips_total: int = 0
    ack_timeouts_total: int = 0
    device_refusals_total: int = 0
    malformed_total: int = 0
    bad_heartbeats_total: int = 0  # payloads on the heartbeat topic that were no valid, fresh heartbeat


class Authority:
    def __init__(
        self,
        settings: Settings,
        *,
        valve_map: ValveMap,
        publisher: StatePublisher,
        valve_link: MqttClient,
        stats: ActuationStats,
        problems: Throttled,
        decode: DropMalformed,
        motors: MotorController,
        post: Callable[[Callable[[], None]], None],
    ) -> None:
        """`valve_link`: the connection valve writes go out on (the priority one); `post`: puts a job
        on the control thread (a sequence's motor move reports there)."""
        self.core = StandCore(settings)
        self.redlines = RedlineMonitor(settings)
        self.warnings = RedlineMonitor(settings, settings.warning_limits)
        self.alarms = AlarmBook()
        self.runs = RunBook(settings)
        self._motors = motors
        self._post = post
        self._published_progress: object = None
        self.deadman = Deadman(settings)
        self.pending = PendingWrites()
        self._settings = settings
        self._valve_map = valve_map
        self._publisher = publisher
        self._valve_link = valve_link
        self._stats = stats
        self._problems = problems
        self._decode = decode
        self._ack_timeout_s = settings.actuation.ack_timeout_ms / 1000

    def on_wake(self, now: float) -> float:
        """After every job and at every deadline: acknowledgement timeouts, sequence steps, the
        deadman. Returns the next deadline."""
        for late in self.pending.expired(now):
            self._stats.ack_timeouts_total += 1
            reason = (
                f"the STM32 did not acknowledge valve pattern {self._valve_map.format(late.write.mask)} "
                f"({late.write.cause}) within {self._settings.actuation.ack_timeout_ms} ms"
            )
            late.done.set_exception(AckTimeoutError(reason))
            self._publisher.event("valve_ack_timeout", cmd_no=late.cmd_no, reason=reason)
            self.apply(self.core.on_write_failed(reason, now))
        self.apply(self.core.tick(now))
        self._follow_runs(now)
        tripped = self.deadman.check(now, self.core.state)
        if tripped is not None:
            self._stats.deadman_trips_total += 1
            self._publisher.event("deadman", reason=tripped)
            self.abort(tripped, "deadman", now)
        candidates = [
            self.core.next_due(),
            self.pending.next_deadline(),
            self.runs.next_due(),
            now + DEADMAN_PERIOD_S,
        ]
        return min(c for c in candidates if c is not None)

    def decide(self, decide: Callable[[str, float], Verdict], who: str) -> tuple[Verdict, list[PendingWrite]]:
        """A command's decision `decide(who, now)`, carried out; the verdict and the writes it sent."""
        verdict = decide(who, time.monotonic())
        if verdict.accepted:
            self.runs.commanded(who)
        sent = self.apply(verdict)
        self._follow_runs(time.monotonic())  # after it: a test procedure's run names who started it
        return verdict, sent

    def apply(self, verdict: Verdict) -> list[PendingWrite]:
        for transition in verdict.transitions:
            log.info("state %s -> %s: %s", transition.old, transition.new, transition.reason)
            self._publisher.event(
                "state", old=str(transition.old), new=str(transition.new), reason=transition.reason
            )
        sent = [self._send(write) for write in verdict.writes]
        for request in verdict.moves:
            self._start_move(request)
        for at, progress in self.core.take_steps():
            self._publisher.step(at, progress)
        if verdict.transitions or verdict.writes or self.core.sequence != self._published_progress:
            self._published_progress = self.core.sequence
            self._publisher.system(self.core)
        return sent

    # --- test runs ---------------------------------------------------------------------------------

    def _follow_runs(self, now: float) -> None:
        """A test procedure's start starts its run, its end ends the run `runs.post_s` later."""
        if self.runs.follow(self.core.sequence, self.core.state, now, time.time()):
            self._publish_runs()

    def _publish_runs(self) -> None:
        state = self.runs.state(time.time())
        self._publisher.run(state)
        active, last = state["active"], state["last"]
        log.info("runs: active %s, last %s", active and active["id"], last and last["id"])

    def start_run(self, name: str, notes: str, who: str) -> Verdict:
        refusal = self.runs.start(name, notes, who, time.time())
        if refusal is not None:
            return Verdict(False, refusal)
        self._publish_runs()
        return Verdict(True, "run started")

    def stop_run(self, run_id: str | None, who: str) -> Verdict:
        refusal = self.runs.stop(run_id, who, time.time())
        if refusal is not None:
            return Verdict(False, refusal)
        self._publish_runs()
        return Verdict(True, "run stopped")

    def _start_move(self, request: MotorRequest) -> None:
        """A sequence step's motor move; its outcome goes back to the core on the control thread."""
        move = request.move
        motor_id = next(m.id for m in self._settings.motors.motors if m.name == move.motor)
        if move.target_deg is not None:
            future = self._motors.move(motor_id, absolute_deg=move.target_deg)
        else:
            future = self._motors.move(motor_id, relative_deg=move.by_deg)

        def done(outcome: Future[MoveResult]) -> None:
            result = outcome.result() if outcome.exception() is None else None
            ok = result is not None and result.ok
            why = result.response if result is not None else str(outcome.exception())

            def report() -> None:
                self.apply(self.core.on_motor_done(request.token, ok, why, time.monotonic()))

            self._post(report)

        future.add_done_callback(done)

    def _send(self, write: ValveWrite) -> PendingWrite:
        pending = self.pending.add(write, time.monotonic() + self._ack_timeout_s)
        properties = publish_properties(MessageExpiryInterval=max(1, math.ceil(self._ack_timeout_s)))
        command = {
            "cmd_no": pending.cmd_no,
            "mask": write.mask,
            "deadline": time.time() + self._ack_timeout_s,
            "cause": write.cause,
        }
        self._valve_link.publish(topics.STM32_VALVES, pack(command), qos=1, properties=properties)
        return pending

    def abort(self, reason: str, who: str, now: float) -> None:
        self.apply(self.abort_verdict(reason, who, now))

    def abort_verdict(self, reason: str, who: str, now: float) -> Verdict:
        if self.core.state != SystemState.ABORTING:
            self._stats.aborts_total += 1
            log.warning("ABORT by %s: %s", who, reason)
        return self.core.abort(reason, who, now)

    def valve_ack(self, message: dict[str, Any]) -> None:
        """An acknowledgement from the STM32 (through acquisition): the outputs it set, or a refusal."""
        cmd_no, ok, valves = message.get("cmd_no"), message.get("ok"), message.get("valves")
        text = str(message.get("text") or message.get("result") or "")
        pending = self.pending.pop(cmd_no) if isinstance(cmd_no, int) else None
        if ok is True and isinstance(valves, int):
            self.core.on_ack(valves)
            cause = pending.write.cause if pending else f"device ({message.get('result')})"
            self._publisher.valves(valves, cause)
            if pending:
                pending.done.set_result(valves)
            return
        if pending is None:
            return  # an answer to a write already given up on (its timeout was the error)
        self._stats.device_refusals_total += 1
        reason = f"the STM32 refused valve pattern {self._valve_map.format(pending.write.mask)}: {text}"
        pending.done.set_exception(ValveWriteRefusedError(reason))
        self._publisher.event("valve_refused", cmd_no=cmd_no, reason=reason)
        self.apply(self.core.on_write_failed(reason, time.monotonic()))

    def device_report(self, valves: int) -> None:
        """The outputs the STM32 reports by itself (at start, after its own go-safe): the valve state
        follows the device when no write is waiting for its acknowledgement."""
        if self.pending or not 0 <= valves < 1 << len(self._valve_map.names):
            return
        published = self._publisher.valves_state
        if published is None or published["bits"] != self._valve_map.format(valves):
            self.core.on_ack(valves)
            self._publisher.valves(valves, "reported by the STM32")

    def telemetry(self, batch_payload: bytes) -> None:
        """A telemetry batch: the deadman sees telemetry flowing, the red-lines check it."""
        batch = self._decode(decode_batch, batch_payload, "telemetry", "telemetry")
        if batch is None:
            return
        now = time.monotonic()
        self.deadman.telemetry(now)
        core = self.core
        trip = self.redlines.check(batch, core.state, phase=core.phase, open_mask=core.possibly_open)
        if self.redlines.missing_channels:
            self._problems.warning(
                "redline-channels",
                "red-lines on channels not in telemetry: %s",
                self.redlines.missing_channels,
            )
        if trip is not None:
            self._stats.redline_trips_total += 1
            self._publisher.event("redline", **asdict(trip))
            self.abort(
                f"red-line: {trip.channel} {trip.direction} {trip.limit} (value {trip.value:.4g})",
                "redline",
                now,
            )
        values = batch_values(batch)  # after the abort: nothing here may delay or prevent it
        self.apply(core.on_values(values, now))
        self._follow_alarms(trip, self.warnings.check(batch, core.state), values)

    def _follow_alarms(self, trip: Trip | None, warning: Trip | None, values: dict[str, float]) -> None:
        before = {alarm.id: alarm.state for alarm in self.alarms.alarms}
        changed = self.alarms.follow("redline", self.redlines, trip, values, time.time())
        changed |= self.alarms.follow("warning", self.warnings, warning, values, time.time())
        if changed:
            for alarm in self.alarms.alarms:
                if before.get(alarm.id) is not alarm.state:
                    self._publisher.event("alarm", alarm=alarms_state_entry(alarm))
            self._publisher.alarms(self.alarms)

    def acknowledge(self, alarm_id: int, who: str) -> Verdict:
        """An operator acknowledges an alarm."""
        refusal = self.alarms.acknowledge(alarm_id, who, time.time())
        if refusal is not None:
            return Verdict(False, refusal)
        self._publisher.alarms(self.alarms)
        return Verdict(True, f"alarm {alarm_id} acknowledged by {who}")

    def broker_lost(self, who: str) -> None:
        """Valve writes cannot reach the STM32 without the broker; acquisition sees this service's
        Last Will and commands the device go-safe itself. Here: stop any sequence and abort, so
        nothing resumes when the broker comes back."""
        if self.core.state in (SystemState.ARMED, SystemState.RUNNING):
            self.abort("actuation lost the MQTT broker", who, time.monotonic())
