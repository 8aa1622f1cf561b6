"""rcs-actuation: the only command authority — valves, motors, sequences, arming, interlocks, abort.

Wiring: MQTT callbacks and request handlers never decide anything; they post jobs to the control
thread, which owns the safety core (`core.StandCore`), the red-line monitor and the deadman. Valve
patterns the core decides are sent to acquisition (`rcs/stm32/cmd/valves`), which writes them to
the STM32 and returns the device's acknowledgement; only an acknowledgement changes the published
valve state. Motors are driven by the motor controller's own thread (the Arduino link).

Abort never waits behind anything (docs/safety.md §5.2): abort requests arrive on a second MQTT
connection of their own (the "priority" connection, which also carries every valve write and its
acknowledgement, so a flood of requests and replies on the main connection cannot delay them), are
served by workers of their own, answer every command still queued "superseded by abort", and run on
the control thread before any job waiting there. Other commands wait in a bounded queue: beyond
`actuation.command_queue` they are refused at once ("busy: …"), never queued.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass
from typing import Any

from services.actuation.control import ControlThread
from services.actuation.core import StandCore, SystemState, ValveWrite, Verdict
from services.actuation.deadman import Deadman
from services.actuation.motors import MotorController, MotorsState
from services.actuation.pending import AckTimeoutError, PendingWrite, PendingWrites
from services.actuation.redlines import RedlineMonitor
from services.actuation.valve_map import ValveMap
from services.common import audit, topics
from services.common.codec import WireFormatError, pack, publish_properties, unpack_map
from services.common.heartbeat import BadHeartbeatError, parse_heartbeat
from services.common.lifecycle import run_service
from services.common.logs import DropMalformed, Throttled
from services.common.metrics import counters
from services.common.mqtt import Message, MqttClient
from services.common.rpc import RpcError, RpcServer
from services.common.settings import Settings
from services.common.telemetry import decode_batch

SERVICE = "actuation"
DEADMAN_PERIOD_S = 0.05
DECISION_TIMEOUT_S = 2.0  # the control thread answers in microseconds; this only bounds a bug
MOTOR_REPLY_CAP_S = 60.0
SUPERSEDED = "superseded by abort"
PRIORITY_CONNECT_WAIT_S = 5.0
log = logging.getLogger("rcs.actuation")


class ValveWriteRefusedError(Exception):
    pass


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


class Actuation:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.valve_map = ValveMap(settings)
        self.core = StandCore(settings)
        self.redlines = RedlineMonitor(settings)
        self.deadman = Deadman(settings)
        self.pending = PendingWrites()
        self.stats = ActuationStats()
        self._ack_timeout_s = settings.actuation.ack_timeout_ms / 1000
        self._problems = Throttled(log)
        self._decode = DropMalformed(self.stats, "malformed_total", self._problems)
        self._valves_state: dict[str, Any] | None = None

        self.mqtt = MqttClient(settings.mqtt, SERVICE)
        self.priority_mqtt = MqttClient(
            settings.mqtt, SERVICE, client_id=f"{self.mqtt.client_id}-priority", announce=False
        )
        self.control = ControlThread(self._on_wake, max_sleep_s=DEADMAN_PERIOD_S)
        self.motors = MotorController(settings, on_state=self._publish_motors, on_event=self._motor_event)
        bound = settings.actuation.command_queue
        self.commands = RpcServer(self.mqtt, workers=4, max_queued=bound)
        self.motor_commands = RpcServer(self.mqtt, workers=2, max_queued=bound)  # slow moves apart
        self.aborts = RpcServer(self.priority_mqtt, workers=2)

        self.mqtt.subscribe(topics.TELEMETRY, self._on_telemetry)
        self.priority_mqtt.subscribe(topics.STM32_VALVE_ACK, self._on_ack, qos=1)
        self.mqtt.subscribe(topics.STATE_STM32, self._on_stm32_state, qos=1)
        self.mqtt.subscribe(topics.OPERATOR_HEARTBEAT, self._on_heartbeat)
        self.mqtt.subscribe(topics.status("acquisition"), self._on_acquisition_status, qos=1)
        self.mqtt.add_connection_listener(self._on_broker)
        self.priority_mqtt.add_connection_listener(self._on_broker)
        handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "valves": self._cmd_valves,
            "valve": self._cmd_valve,
            "sequence": self._cmd_sequence,
            "cancel": self._cmd_cancel,
            "arm": self._cmd_arm,
            "disarm": self._cmd_disarm,
        }
        for name, handler in handlers.items():
            self.commands.serve(topics.actuation(name), handler)
        self.motor_commands.serve(topics.actuation("motor"), self._cmd_motor)
        self.aborts.serve(topics.actuation("abort"), self._cmd_abort)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.control.start()
        # The abort subscription is up before the main connection announces this service online.
        self.priority_mqtt.start()
        if not self.priority_mqtt.wait_connected(PRIORITY_CONNECT_WAIT_S):
            log.warning("priority connection not up yet; it keeps reconnecting in the background")
        self.mqtt.start()
        self.motors.start()
        log.info("actuation ready: %s, abort sequence %r", self.core.state, self.settings.abort_sequence_name)

    def stop(self) -> None:
        self.motors.stop()
        self.commands.close()
        self.motor_commands.close()
        self.aborts.close()
        self.control.stop()
        self.mqtt.stop()
        self.priority_mqtt.stop()

    # --- the control thread ------------------------------------------------------------------

    def _on_wake(self, now: float) -> float | None:
        for late in self.pending.expired(now):
            self.stats.ack_timeouts_total += 1
            reason = (
                f"the STM32 did not acknowledge valve pattern {self.valve_map.format(late.write.mask)} "
                f"({late.write.cause}) within {self.settings.actuation.ack_timeout_ms} ms"
            )
            late.done.set_exception(AckTimeoutError(reason))
            self._event("valve_ack_timeout", cmd_no=late.cmd_no, reason=reason)
            self._apply(self.core.on_write_failed(reason, now))
        self._apply(self.core.tick(now))
        tripped = self.deadman.check(now, self.core.state)
        if tripped is not None:
            self.stats.deadman_trips_total += 1
            self._event("deadman", reason=tripped)
            self._abort(tripped, "deadman", now)
        candidates = [self.core.next_due(), self.pending.next_deadline(), now + DEADMAN_PERIOD_S]
        return min(c for c in candidates if c is not None)

    def _apply(self, verdict: Verdict) -> list[PendingWrite]:
        for transition in verdict.transitions:
            log.info("state %s -> %s: %s", transition.old, transition.new, transition.reason)
            self._event("state", old=str(transition.old), new=str(transition.new), reason=transition.reason)
        sent = [self._send(write) for write in verdict.writes]
        if verdict.transitions or verdict.writes:
            self._publish_system()
        return sent

    def _send(self, write: ValveWrite) -> PendingWrite:
        pending = self.pending.add(write, time.monotonic() + self._ack_timeout_s)
        properties = publish_properties(MessageExpiryInterval=max(1, math.ceil(self._ack_timeout_s)))
        command = {
            "cmd_no": pending.cmd_no,
            "mask": write.mask,
            "deadline": time.time() + self._ack_timeout_s,
            "cause": write.cause,
        }
        self.priority_mqtt.publish(topics.STM32_VALVES, pack(command), qos=1, properties=properties)
        return pending

    def _abort(self, reason: str, who: str, now: float) -> None:
        self._apply(self._abort_verdict(reason, who, now))

    def _abort_verdict(self, reason: str, who: str, now: float) -> Verdict:
        if self.core.state != SystemState.ABORTING:
            self.stats.aborts_total += 1
            log.warning("ABORT by %s: %s", who, reason)
        return self.core.abort(reason, who, now)

    def _ack(self, message: dict[str, Any]) -> None:
        cmd_no, ok, valves = message.get("cmd_no"), message.get("ok"), message.get("valves")
        text = str(message.get("text") or message.get("result") or "")
        pending = self.pending.pop(cmd_no) if isinstance(cmd_no, int) else None
        if ok is True and isinstance(valves, int):
            self.core.on_ack(valves)
            cause = pending.write.cause if pending else f"device ({message.get('result')})"
            self._publish_valves(valves, cause)
            if pending:
                pending.done.set_result(valves)
            return
        if pending is None:
            return  # an answer to a write already given up on (its timeout was the error)
        self.stats.device_refusals_total += 1
        reason = f"the STM32 refused valve pattern {self.valve_map.format(pending.write.mask)}: {text}"
        pending.done.set_exception(ValveWriteRefusedError(reason))
        self._event("valve_refused", cmd_no=cmd_no, reason=reason)
        self._apply(self.core.on_write_failed(reason, time.monotonic()))

    def _check_telemetry(self, batch_payload: bytes) -> None:
        batch = self._decode(decode_batch, batch_payload, "telemetry", "telemetry")
        if batch is None:
            return
        now = time.monotonic()
        self.deadman.telemetry(now)
        trip = self.redlines.check(batch, self.core.state)
        if self.redlines.missing_channels:
            self._problems.warning(
                "redline-channels",
                "red-lines on channels not in telemetry: %s",
                self.redlines.missing_channels,
            )
        if trip is not None:
            self.stats.redline_trips_total += 1
            self._event("redline", **asdict(trip))
            self._abort(
                f"red-line: {trip.channel} {trip.direction} {trip.limit} (value {trip.value:.4g})",
                "redline",
                now,
            )

    # --- MQTT callbacks (paho's thread: post, don't decide) ----------------------------------

    def _on_telemetry(self, message: Message) -> None:
        payload = message.payload
        self.control.post(lambda: self._check_telemetry(payload))

    def _on_ack(self, message: Message) -> None:
        ack = self._decode(unpack_map, message.payload, "ack", "valve acknowledgement")
        if ack is None:
            return
        self.control.post(lambda: self._ack(ack))

    def _on_heartbeat(self, message: Message) -> None:
        try:
            parse_heartbeat(message.payload, time.time(), self.settings.actuation.operator_timeout_s)
        except BadHeartbeatError as exc:
            self.stats.bad_heartbeats_total += 1
            self._problems.warning(f"heartbeat:{exc.kind}", "ignored an operator heartbeat: %s", exc)
            return
        self.control.post(lambda: self.deadman.operator_heartbeat(time.monotonic()))

    def _on_stm32_state(self, message: Message) -> None:
        try:
            state = unpack_map(message.payload)
        except WireFormatError:
            return  # an empty payload clears the retained state; acquisition publishes it again
        valves = state.get("valves")
        if state.get("connected") is True and isinstance(valves, int) and not isinstance(valves, bool):
            self.control.post(lambda: self._device_report(valves))

    def _device_report(self, valves: int) -> None:
        """The outputs the STM32 reports by itself (at start, after its own go-safe): the valve state
        follows the device when no write is waiting for its acknowledgement."""
        if self.pending or not 0 <= valves < 1 << len(self.valve_map.names):
            return
        if self._valves_state is None or self._valves_state["bits"] != self.valve_map.format(valves):
            self.core.on_ack(valves)
            self._publish_valves(valves, "reported by the STM32")

    def _on_acquisition_status(self, message: Message) -> None:
        try:
            online = unpack_map(message.payload).get("state") == "online"
        except WireFormatError:
            online = False
        self.control.post(lambda: self.deadman.acquisition_status(online, time.monotonic()))

    def _on_broker(self, connected: bool) -> None:
        if connected:
            self.control.post(self._republish)
            return

        def make_safe() -> None:
            # Valve writes cannot reach the STM32 without the broker; acquisition sees this service's
            # Last Will and commands the device go-safe itself. Here: stop any sequence and abort, so
            # nothing resumes when the broker comes back.
            if self.core.state in (SystemState.ARMED, SystemState.RUNNING):
                self._abort("actuation lost the MQTT broker", SERVICE, time.monotonic())

        self.control.post(make_safe)

    # --- commands (request handlers' threads) ------------------------------------------------

    def _decide(
        self,
        command: str,
        body: dict[str, Any],
        decide: Callable[[str, float], Verdict],
        *,
        urgent: bool = False,
    ) -> tuple[Verdict, list[PendingWrite]]:
        requester = audit.requester(body)
        future = self.control.call(lambda: self._decide_now(decide, requester.who), urgent=urgent)
        verdict, sent = future.result(timeout=DECISION_TIMEOUT_S)
        self.stats.commands_total += 1
        if not verdict.accepted:
            self.stats.refused_total += 1
            self._event(
                "command",
                command=command,
                **requester.fields(),
                args=_args(body),
                accepted=False,
                reason=verdict.reason,
            )
            raise RpcError(verdict.reason)
        return verdict, sent

    def _decide_now(
        self, decide: Callable[[str, float], Verdict], who: str
    ) -> tuple[Verdict, list[PendingWrite]]:
        verdict = decide(who, time.monotonic())
        return verdict, self._apply(verdict)

    def _finish(
        self, command: str, body: dict[str, Any], sent: list[PendingWrite], **result: Any
    ) -> dict[str, Any]:
        """Wait for the device to acknowledge the first write (if any), then report and audit."""
        record = functools.partial(
            self._event,
            "command",
            command=command,
            **audit.requester(body).fields(),
            args=_args(body),
            accepted=True,
        )
        if sent:
            try:
                mask = sent[0].done.result(timeout=self._ack_timeout_s + 1.0)
            except (AckTimeoutError, ValveWriteRefusedError, FutureTimeout) as exc:
                reason = str(exc) or "no acknowledgement from the STM32"
                record(result=reason, ok=False)
                raise RpcError(reason) from exc
            result |= {"valves": self.valve_map.as_list(mask), "bits": self.valve_map.format(mask)}
        record(ok=True, result=result)
        return result

    def _cmd_valves(self, body: dict[str, Any]) -> dict[str, Any]:
        pattern = body.get("valves")
        if not isinstance(pattern, str | list):
            raise RpcError("'valves' must be a list of 9 x 0/1 or a string like \"010000000\"")
        try:
            mask = self.valve_map.parse(pattern)
        except (ValueError, TypeError) as exc:
            raise RpcError(f"'valves': {exc}") from exc
        _, sent = self._decide("valves", body, lambda who, _now: self.core.set_valves(mask, who))
        return self._finish("valves", body, sent)

    def _cmd_valve(self, body: dict[str, Any]) -> dict[str, Any]:
        name, state = body.get("name"), body.get("open")
        if name not in self.valve_map.names:
            raise RpcError(f"'name' must be one of {', '.join(self.valve_map.names)}")
        if not isinstance(state, bool):
            raise RpcError("'open' must be true or false")

        def decide(who: str, _now: float) -> Verdict:
            return self.core.set_valves(self.valve_map.with_valve(self.core.commanded, str(name), state), who)

        _, sent = self._decide("valve", body, decide)
        return self._finish("valve", body, sent)

    def _cmd_sequence(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name")
        if not isinstance(name, str):
            raise RpcError("'name' must be a sequence name")
        _, sent = self._decide("sequence", body, lambda who, now: self.core.start_sequence(name, who, now))
        return self._finish("sequence", body, sent, sequence=name, started=True)

    def _cmd_cancel(self, body: dict[str, Any]) -> dict[str, Any]:
        _, sent = self._decide("cancel", body, lambda who, _now: self.core.cancel(who))
        return self._finish("cancel", body, sent, state=str(self.core.state))

    def _cmd_arm(self, body: dict[str, Any]) -> dict[str, Any]:
        def decide(who: str, now: float) -> Verdict:
            blocker = self.deadman.arm_blocker(now)
            if blocker is not None:
                return Verdict(accepted=False, reason=f"cannot arm: {blocker}")
            return self.core.arm(who)

        _, sent = self._decide("arm", body, decide)
        return self._finish("arm", body, sent, state=str(self.core.state))

    def _cmd_disarm(self, body: dict[str, Any]) -> dict[str, Any]:
        _, sent = self._decide("disarm", body, lambda who, _now: self.core.disarm(who))
        return self._finish("disarm", body, sent, state=str(self.core.state))

    def _cmd_abort(self, body: dict[str, Any]) -> dict[str, Any]:
        reason = body.get("reason")
        why = audit.clipped(reason) if isinstance(reason, str) and reason else "operator abort"
        for server in (self.commands, self.motor_commands):
            server.supersede_queued(SUPERSEDED)
        _, sent = self._decide(
            "abort", body, lambda who, now: self._abort_verdict(why, who, now), urgent=True
        )
        try:
            return self._finish("abort", body, sent, state=str(self.core.state))
        except RpcError as exc:  # never refused: the device has not confirmed (yet)
            raise RpcError(
                f"aborting, not yet confirmed: {exc}; the abort goes on until the STM32 confirms"
            ) from exc

    def _cmd_motor(self, body: dict[str, Any]) -> dict[str, Any]:
        motor_id, angle, target = body.get("motor_id"), body.get("angle"), body.get("target")
        if not isinstance(motor_id, int) or isinstance(motor_id, bool):
            raise RpcError("'motor_id' must be an integer")
        if (angle is None) == (target is None):
            raise RpcError("give exactly one of 'angle' (relative degrees) or 'target' (absolute degrees)")
        value = angle if angle is not None else target
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise RpcError("the angle must be a number of degrees")
        if self.core.state == SystemState.ABORTING:
            raise RpcError("aborting: only abort is accepted")
        if angle is not None:
            future = self.motors.move(motor_id, relative_deg=float(value))
        else:
            future = self.motors.move(motor_id, absolute_deg=float(value))
        move = future.result(timeout=MOTOR_REPLY_CAP_S)
        args = _args(body)
        self._event(
            "command",
            command="motor",
            **audit.requester(body).fields(),
            args=args,
            accepted=move.ok,
            result=asdict(move),
        )
        if not move.ok:
            raise RpcError(move.response)
        return asdict(move)

    # --- publishing --------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> None:
        self.mqtt.publish(topics.events(SERVICE), audit.event_payload(SERVICE, kind, fields), qos=1)

    def _publish_system(self) -> None:
        core = self.core
        sequence = None
        if core.sequence is not None:  # `started` is monotonic inside; clients get UNIX time
            sequence = asdict(core.sequence) | {
                "started": time.time() - (time.monotonic() - core.sequence.started)
            }
        state = {
            "state": str(core.state),
            "armed": core.armed,
            "reason": core.reason,
            "sequence": sequence,
            "commanded": self.valve_map.format(core.commanded),
            "ts": time.time(),
        }
        self.mqtt.publish(topics.STATE_SYSTEM, pack(state), qos=1, retain=True)

    def _publish_valves(self, mask: int, cause: str) -> None:
        self._valves_state = {
            "names": list(self.valve_map.names),
            "bits": self.valve_map.format(mask),
            "valves": self.valve_map.as_list(mask),
            "open": self.valve_map.open_names(mask),
            "cause": cause,
            "ts": time.time(),
        }
        self.mqtt.publish(topics.STATE_VALVES, pack(self._valves_state), qos=1, retain=True)

    def _publish_motors(self, state: MotorsState) -> None:
        message = {
            "connected": state.connected,
            "port": state.port,
            "motors": [asdict(m) for m in state.motors],
            "ts": time.time(),
        }
        self.mqtt.publish(topics.STATE_MOTORS, pack(message), qos=1, retain=True)

    def _motor_event(self, event: dict[str, Any]) -> None:
        self._event(str(event.get("kind", "motor")), **{k: v for k, v in event.items() if k != "kind"})

    def _republish(self) -> None:
        self._publish_system()
        if self._valves_state is not None:
            self.mqtt.publish(topics.STATE_VALVES, pack(self._valves_state), qos=1, retain=True)
        self._publish_motors(self.motors.state)

    def metrics(self) -> dict[str, float]:
        return {
            **asdict(self.stats),
            **counters(self.commands.stats, "command_requests"),
            **counters(self.motor_commands.stats, "motor_requests"),
            **counters(self.aborts.stats, "abort_requests"),
            "command_queue": float(self.commands.queued),
            "armed": float(self.core.armed),
            "pending_writes": float(len(self.pending)),
            "arduino_connected": float(self.motors.state.connected),
        }


def _args(body: dict[str, Any]) -> dict[str, Any]:
    args: dict[str, Any] = audit.clipped({k: v for k, v in body.items() if k not in audit.AUDIT_KEYS})
    return args


def main() -> None:
    run_service(SERVICE, Actuation, lambda settings: settings.actuation.metrics_port)


if __name__ == "__main__":
    main()
