"""The command handlers: one per request on `rcs/rpc/actuation/<command>` (docs/protocol.md).

Handlers run on the request servers' worker threads. Each checks its body, has the control thread
decide (`Authority.decide`: the core's verdict, carried out), waits for the STM32 to acknowledge the
first valve write the verdict sent, and audits the command as an event with the requester's
identity (services/common/audit.py), refused or not. A new command is one handler and one row in
`Commands.routine`. Abort and motor moves have servers (lanes) of their own; abort runs on the
control thread before any job waiting there, and first answers every command still queued
"superseded by abort".
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict
from typing import Any

from services.actuation.authority import ActuationStats, Authority
from services.actuation.control import ControlThread
from services.actuation.core import Verdict
from services.actuation.motors import MotorController
from services.actuation.pending import AckTimeoutError, PendingWrite, ValveWriteRefusedError
from services.actuation.publish import StatePublisher
from services.actuation.valve_map import ValveMap
from services.common import audit
from services.common.rpc import RpcError, RpcServer
from services.common.runs import NAME_CHARS, NOTES_CHARS
from services.common.settings import Settings

DECISION_TIMEOUT_S = 2.0  # the control thread answers in microseconds; this only bounds a bug
MOTOR_REPLY_CAP_S = 60.0
SUPERSEDED = "superseded by abort"

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class Commands:
    def __init__(
        self,
        settings: Settings,
        *,
        authority: Authority,
        control: ControlThread,
        motors: MotorController,
        valve_map: ValveMap,
        publisher: StatePublisher,
        stats: ActuationStats,
        queues: Sequence[RpcServer],
    ) -> None:
        """`queues`: the servers whose queued commands an abort supersedes."""
        self._authority = authority
        self._core = authority.core
        self._control = control
        self._motors = motors
        self._valve_map = valve_map
        self._publisher = publisher
        self._stats = stats
        self._queues = queues
        self._ack_timeout_s = settings.actuation.ack_timeout_ms / 1000

    @property
    def routine(self) -> dict[str, Handler]:
        """The commands served on the bounded command queue, by name."""
        return {
            "valves": self.valves,
            "valve": self.valve,
            "sequence": self.sequence,
            "cancel": self.cancel,
            "arm": self.arm,
            "disarm": self.disarm,
            "hold": self.hold,
            "resume": self.resume,
            "alarms": self.alarms,
            "ack": self.ack,
            "run_start": self.run_start,
            "run_stop": self.run_stop,
        }

    # --- the handlers ------------------------------------------------------------------------

    def valves(self, body: dict[str, Any]) -> dict[str, Any]:
        pattern = body.get("valves")
        if not isinstance(pattern, str | list):
            raise RpcError("'valves' must be a list of 9 x 0/1 or a string like \"010000000\"")
        try:
            mask = self._valve_map.parse(pattern)
        except (ValueError, TypeError) as exc:
            raise RpcError(f"'valves': {exc}") from exc
        sent = self._decide("valves", body, lambda who, _now: self._core.set_valves(mask, who))
        return self._finish("valves", body, sent)

    def valve(self, body: dict[str, Any]) -> dict[str, Any]:
        name, state = body.get("name"), body.get("open")
        if name not in self._valve_map.names:
            raise RpcError(f"'name' must be one of {', '.join(self._valve_map.names)}")
        if not isinstance(state, bool):
            raise RpcError("'open' must be true or false")

        def decide(who: str, _now: float) -> Verdict:
            return self._core.set_valves(
                self._valve_map.with_valve(self._core.commanded, str(name), state), who
            )

        sent = self._decide("valve", body, decide)
        return self._finish("valve", body, sent)

    def sequence(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name")
        if not isinstance(name, str):
            raise RpcError("'name' must be a sequence name")
        sent = self._decide("sequence", body, lambda who, now: self._core.start_sequence(name, who, now))
        return self._finish("sequence", body, sent, sequence=name, started=True)

    def cancel(self, body: dict[str, Any]) -> dict[str, Any]:
        sent = self._decide("cancel", body, lambda who, _now: self._core.cancel(who))
        return self._finish("cancel", body, sent, state=str(self._core.state))

    def arm(self, body: dict[str, Any]) -> dict[str, Any]:
        def decide(who: str, now: float) -> Verdict:
            blocker = self._authority.deadman.arm_blocker(now)
            if blocker is not None:
                return Verdict(accepted=False, reason=f"cannot arm: {blocker}")
            return self._core.arm(who)

        sent = self._decide("arm", body, decide)
        return self._finish("arm", body, sent, state=str(self._core.state))

    def disarm(self, body: dict[str, Any]) -> dict[str, Any]:
        sent = self._decide("disarm", body, lambda who, _now: self._core.disarm(who))
        return self._finish("disarm", body, sent, state=str(self._core.state))

    def hold(self, body: dict[str, Any]) -> dict[str, Any]:
        reason = body.get("reason")
        why = audit.clipped(reason) if isinstance(reason, str) and reason else "operator hold"
        sent = self._decide("hold", body, lambda who, now: self._core.hold(why, who, now))
        return self._finish("hold", body, sent, held=True, sequence=self._sequence_name())

    def resume(self, body: dict[str, Any]) -> dict[str, Any]:
        sent = self._decide("resume", body, self._core.resume)
        return self._finish("resume", body, sent, resumed=True, sequence=self._sequence_name())

    def alarms(self, _body: dict[str, Any]) -> dict[str, Any]:
        """The alarms as last published (a read: not audited)."""
        state: dict[str, Any] = self._control.call(lambda: self._publisher.alarms_state).result(
            timeout=DECISION_TIMEOUT_S
        )
        return state

    def ack(self, body: dict[str, Any]) -> dict[str, Any]:
        alarm_id = body.get("id")
        if not isinstance(alarm_id, int) or isinstance(alarm_id, bool):
            raise RpcError("'id' must be an alarm's integer id")
        sent = self._decide("ack", body, lambda who, _now: self._authority.acknowledge(alarm_id, who))
        return self._finish("ack", body, sent, acknowledged=alarm_id)

    def run_start(self, body: dict[str, Any]) -> dict[str, Any]:
        name, notes = body.get("name"), body.get("notes", "")
        if not isinstance(name, str) or not name.strip() or len(name) > NAME_CHARS:
            raise RpcError(f"'name' must be a non-empty text of at most {NAME_CHARS} characters")
        if not isinstance(notes, str) or len(notes) > NOTES_CHARS:
            raise RpcError(f"'notes' must be a text of at most {NOTES_CHARS} characters")
        runs = self._authority.runs
        sent = self._decide(
            "run_start", body, lambda who, _now: self._authority.start_run(name.strip(), notes, who)
        )
        return self._finish("run_start", body, sent, run=self._run_record(lambda: runs.active))

    def run_stop(self, body: dict[str, Any]) -> dict[str, Any]:
        wanted = body.get("id")
        if wanted is not None and not isinstance(wanted, str):
            raise RpcError("'id' must be a run id (or absent: the active run)")
        runs = self._authority.runs
        sent = self._decide("run_stop", body, lambda who, _now: self._authority.stop_run(wanted, who))
        return self._finish("run_stop", body, sent, run=self._run_record(lambda: runs.last))

    def _run_record(self, which: Callable[[], Any]) -> dict[str, Any] | None:
        """A run's record as the control thread holds it (after the command was decided)."""

        def record() -> dict[str, Any] | None:
            run = which()
            return None if run is None else dict(run.record())

        result: dict[str, Any] | None = self._control.call(record).result(timeout=DECISION_TIMEOUT_S)
        return result

    def _sequence_name(self) -> str | None:
        sequence = self._core.sequence
        return sequence.name if sequence is not None else None

    def abort(self, body: dict[str, Any]) -> dict[str, Any]:
        reason = body.get("reason")
        why = audit.clipped(reason) if isinstance(reason, str) and reason else "operator abort"
        for server in self._queues:
            server.supersede_queued(SUPERSEDED)
        sent = self._decide(
            "abort", body, lambda who, now: self._authority.abort_verdict(why, who, now), urgent=True
        )
        try:
            return self._finish("abort", body, sent, state=str(self._core.state))
        except RpcError as exc:  # never refused: the device has not confirmed (yet)
            raise RpcError(
                f"aborting, not yet confirmed: {exc}; the abort goes on until the STM32 confirms"
            ) from exc

    def motor(self, body: dict[str, Any]) -> dict[str, Any]:
        motor_id, angle, target = body.get("motor_id"), body.get("angle"), body.get("target")
        if not isinstance(motor_id, int) or isinstance(motor_id, bool):
            raise RpcError("'motor_id' must be an integer")
        if (angle is None) == (target is None):
            raise RpcError("give exactly one of 'angle' (relative degrees) or 'target' (absolute degrees)")
        value = angle if angle is not None else target
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise RpcError("the angle must be a number of degrees")
        refusal = self._control.call(self._core.manual_refusal).result(timeout=DECISION_TIMEOUT_S)
        if refusal is not None:  # aborting, or a sequence runs (not held)
            self._stats.refused_total += 1
            self._publisher.event(
                "command",
                command="motor",
                **audit.requester(body).fields(),
                args=command_args(body),
                accepted=False,
                reason=refusal,
            )
            raise RpcError(refusal)
        if angle is not None:
            future = self._motors.move(motor_id, relative_deg=float(value))
        else:
            future = self._motors.move(motor_id, absolute_deg=float(value))
        move = future.result(timeout=MOTOR_REPLY_CAP_S)
        self._publisher.event(
            "command",
            command="motor",
            **audit.requester(body).fields(),
            args=command_args(body),
            accepted=move.ok,
            result=asdict(move),
        )
        if not move.ok:
            raise RpcError(move.response)
        return asdict(move)

    # --- deciding, acknowledging, auditing ---------------------------------------------------

    def _decide(
        self,
        command: str,
        body: dict[str, Any],
        decide: Callable[[str, float], Verdict],
        *,
        urgent: bool = False,
    ) -> list[PendingWrite]:
        """Have the control thread decide and carry out; the valve writes sent. A refusal is audited
        and raised as the command's error."""
        requester = audit.requester(body)
        future = self._control.call(lambda: self._authority.decide(decide, requester.who), urgent=urgent)
        verdict, sent = future.result(timeout=DECISION_TIMEOUT_S)
        self._stats.commands_total += 1
        if not verdict.accepted:
            self._stats.refused_total += 1
            self._publisher.event(
                "command",
                command=command,
                **requester.fields(),
                args=command_args(body),
                accepted=False,
                reason=verdict.reason,
            )
            raise RpcError(verdict.reason)
        return sent

    def _finish(
        self, command: str, body: dict[str, Any], sent: list[PendingWrite], **result: Any
    ) -> dict[str, Any]:
        """Wait for the device to acknowledge the first write (if any), then report and audit."""
        record = functools.partial(
            self._publisher.event,
            "command",
            command=command,
            **audit.requester(body).fields(),
            args=command_args(body),
            accepted=True,
        )
        if sent:
            try:
                mask = sent[0].done.result(timeout=self._ack_timeout_s + 1.0)
            except (AckTimeoutError, ValveWriteRefusedError, FutureTimeout) as exc:
                reason = str(exc) or "no acknowledgement from the STM32"
                record(result=reason, ok=False)
                raise RpcError(reason) from exc
            result |= {"valves": self._valve_map.as_list(mask), "bits": self._valve_map.format(mask)}
        record(ok=True, result=result)
        return result


def command_args(body: dict[str, Any]) -> dict[str, Any]:
    """A command's arguments as audited: the body without the identity keys, clipped."""
    args: dict[str, Any] = audit.clipped({k: v for k, v in body.items() if k not in audit.AUDIT_KEYS})
    return args
