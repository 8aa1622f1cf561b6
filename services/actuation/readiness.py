"""Before the test: the go/no-go checklist and the tare (docs/safety.md §2.1 and §2.2).

`refusal` gates arming and the start of a procedure (commands.py): every failing item is named.
`checklist` answers `rcs/rpc/actuation/checklist` (a read, not audited). `tare` answers
`rcs/rpc/actuation/tare`: refused unless the stand is idle, then asked of acquisition
(`rcs/rpc/acquisition/tare`, which only actuation may ask), audited either way like every command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.actuation.authority import ActuationStats, Authority
from services.actuation.checklist import Snapshot, answer, refusal
from services.actuation.checklist_view import ChecklistView
from services.actuation.control import ControlThread
from services.actuation.core import SystemState
from services.actuation.publish import StatePublisher
from services.common import audit, topics
from services.common.rpc import RpcClient, RpcError, RpcTimeout

DECISION_TIMEOUT_S = 2.0
TARE_TIMEOUT_S = 8.0  # acquisition averages up to 30 s of samples from its ring buffer


class Readiness:
    def __init__(
        self,
        *,
        authority: Authority,
        control: ControlThread,
        view: ChecklistView,
        rpc: RpcClient,
        publisher: StatePublisher,
        stats: ActuationStats,
        configured: bool,
    ) -> None:
        """`configured`: the stand has checklist items (else nothing is asked of anyone)."""
        self._authority = authority
        self._control = control
        self._view = view
        self._rpc = rpc
        self._publisher = publisher
        self._stats = stats
        self._configured = configured

    @property
    def routine(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        """The commands served with the others (the checklist, a read, has a server of its own)."""
        return {"tare": self.tare}

    def outside(self) -> Snapshot | None:
        """What the bus says (a worker thread: it may wait for the logger); None without a checklist."""
        return self._view.outside() if self._configured else None

    def refusal(self, outside: Snapshot | None) -> str | None:
        """Control thread: `checklist: <id>: <reason>; …` for every failing item, or None."""
        return None if outside is None else refusal(self._authority.checklist(outside))

    def checklist(self, _body: dict[str, Any]) -> dict[str, Any]:
        outside = self._view.outside()
        states = self._control.call(lambda: self._authority.checklist(outside)).result(DECISION_TIMEOUT_S)
        return answer(states, outside.now)

    def tare(self, body: dict[str, Any]) -> dict[str, Any]:
        requester = audit.requester(body)
        record = self._recorder(body, requester)
        state = self._control.call(lambda: self._authority.core.state).result(DECISION_TIMEOUT_S)
        self._stats.commands_total += 1
        if state is not SystemState.IDLE:
            reason = f"tare only while idle: the stand is {state}"
            self._stats.refused_total += 1
            record(accepted=False, reason=reason)
            raise RpcError(reason)
        request: dict[str, Any] = {k: body[k] for k in ("channels", "seconds", "clear") if k in body}
        try:
            result = self._rpc.call(
                topics.ACQ_TARE, {**request, "who": requester.who}, timeout=TARE_TIMEOUT_S
            )
        except (RpcError, RpcTimeout) as exc:
            reason = f"tare: {exc}"
            self._stats.refused_total += 1
            record(accepted=False, reason=reason)
            raise RpcError(reason) from exc
        record(
            accepted=True, ok=True, result={"channels": result.get("channels"), "tare": result.get("tare")}
        )
        return result

    def _recorder(self, body: dict[str, Any], requester: audit.Requester) -> Callable[..., None]:
        def record(**fields: Any) -> None:
            self._publisher.event(
                "command", command="tare", **requester.fields(), args=audit.command_args(body), **fields
            )

        return record
