"""Test runs (docs/protocol.md, *Test runs*): the active run, who commanded during it, and when the run
of a test procedure (`test: true`) ends.

A run starts by an operator's `run_start`, or by itself when a test procedure starts (joining an
active run instead if an operator started one); it ends by `run_stop`, or `runs.post_s` after its
test procedure ended (after the abort ended, when it ended in one). Only one run is active at a time.
`RunBook` is plain logic on the control thread (`authority.Authority`): times are passed in, nothing
is published here.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.actuation.core import SequenceProgress, SystemState
from services.common.settings import Settings

_SLUG_CHARS = 40


@dataclass
class Run:
    id: str
    name: str
    notes: str
    stand: str
    started_at: float  # UNIX s
    started_by: str
    pretrigger_s: float
    procedure: str | None = None  # the test procedure run during it
    operators: list[str] = field(default_factory=list)  # who commanded during it, in order of first command
    ended_at: float | None = None
    stopped_by: str | None = None
    result: str | None = None  # completed, aborted, cancelled, stopped
    auto: bool = False  # started by its test procedure (which then ends it)
    aborted: bool = False  # the stand aborted during it
    outcome: str | None = None  # of its procedure: completed, aborted, cancelled

    def record(self) -> dict[str, Any]:
        """As published on rcs/state/run (and the logger's run.json takes it from there)."""
        return {k: v for k, v in asdict(self).items() if k not in ("aborted", "outcome")}


def run_id(name: str, started_at: float, taken: set[str]) -> str:
    """Sortable and safe as a file name: `20261202T014501Z-<slug of name>`, not one of `taken`."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:_SLUG_CHARS].strip("-") or "run"
    base = f"{datetime.fromtimestamp(started_at, UTC):%Y%m%dT%H%M%SZ}-{slug}"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


class RunBook:
    def __init__(self, settings: Settings) -> None:
        self._stand = settings.stand_name
        self._pretrigger_s = settings.runs.pretrigger_s
        self._post_s = settings.runs.post_s
        self._tests = frozenset(name for name, s in settings.sequences.items() if s.test)
        self.active: Run | None = None
        self.last: Run | None = None
        self._commander = "unknown"  # who last commanded: who started a test procedure
        self._procedure: SequenceProgress | None = None  # the test procedure running, as last seen
        self._tail_until: float | None = None  # monotonic: when the procedure's run ends
        self._aborting = False
        self._pending_tail = False  # the procedure ended: its run's tail starts once not aborting
        self._ids: set[str] = set()

    def state(self, ts: float) -> dict[str, Any]:
        """The retained rcs/state/run."""
        return {
            "active": None if self.active is None else self.active.record(),
            "last": None if self.last is None else self.last.record(),
            "ts": ts,
        }

    def commanded(self, who: str) -> None:
        """`who` had a command accepted: one of the active run's operators."""
        self._commander = who
        if self.active is not None and who not in self.active.operators:
            self.active.operators.append(who)

    def start(self, name: str, notes: str, who: str, unix: float) -> str | None:
        """Start a run; the refusal, or None."""
        if self.active is not None:
            return f"run {self.active.id} is active: stop it first"
        self._open(name, notes, who, unix, procedure=None, auto=False)
        return None

    def stop(self, wanted: str | None, who: str, unix: float) -> str | None:
        """Stop the active run (`wanted`: its id, or None for whichever is active); the refusal, or None."""
        if self.active is None:
            return "no run is active"
        if wanted is not None and wanted != self.active.id:
            return f"run {wanted} is not active (the active run is {self.active.id})"
        if self._procedure is not None:  # its record would end mid-procedure: abort ends it soonest
            return f"procedure {self._procedure.name} is running: its run ends {self._post_s:g} s after it"
        self._close(who, unix)
        return None

    def next_due(self) -> float | None:
        return self._tail_until

    def follow(self, sequence: SequenceProgress | None, state: SystemState, mono: float, unix: float) -> bool:
        """After every decision and wake-up: a test procedure starting starts a run, its end schedules
        the run's end (once any abort it ended in is over). Whether the run state changed."""
        changed = False
        aborting = state is SystemState.ABORTING
        if aborting and self.active is not None:
            self.active.aborted = True
        self._aborting = aborting
        test = sequence if sequence is not None and sequence.name in self._tests and not aborting else None
        if test is not None:
            if self._procedure is None or self._procedure.name != test.name:
                changed |= self._procedure_started(test.name, unix)
            self._procedure = test
        elif self._procedure is not None:
            self._procedure_ended(state)
        if self._pending_tail and not aborting:
            self._tail_until, self._pending_tail = mono + self._post_s, False
        if self._tail_until is not None and mono >= self._tail_until:
            self._tail_until = None
            if self.active is not None and self.active.auto:
                self._close(f"procedure {self.active.procedure}", unix)
                changed = True
        return changed

    # --- inside -----------------------------------------------------------------------------------

    def _procedure_started(self, name: str, unix: float) -> bool:
        self._tail_until, self._pending_tail = None, False
        if self.active is None:
            self._open(name, "", self._commander, unix, procedure=name, auto=True)
            return True
        if self.active.procedure is None:
            self.active.procedure = name
            return True
        return False

    def _procedure_ended(self, state: SystemState) -> None:
        """A procedure (which needs the stand armed) ends idle when it finished, armed when it was
        cancelled (or finished leaving valves open), aborting when it aborted."""
        self._procedure = None
        if self.active is None:
            return
        outcomes = {SystemState.ABORTING: "aborted", SystemState.IDLE: "completed"}
        outcome = outcomes.get(state, "cancelled")
        self.active.outcome = outcome
        if self.active.auto:
            self._pending_tail = True

    def _open(
        self, name: str, notes: str, who: str, unix: float, *, procedure: str | None, auto: bool
    ) -> None:
        self.active = Run(
            id=run_id(name, unix, self._ids),
            name=name,
            notes=notes,
            stand=self._stand,
            started_at=unix,
            started_by=who,
            pretrigger_s=self._pretrigger_s,
            procedure=procedure,
            operators=[who] if auto else [],
            auto=auto,
            aborted=self._aborting,
        )
        self._ids.add(self.active.id)

    def _close(self, who: str, unix: float) -> None:
        run = self.active
        assert run is not None
        run.ended_at, run.stopped_by = unix, who
        run.result = "aborted" if run.aborted else run.outcome or "stopped"
        self.active, self.last = None, run
        self._tail_until, self._pending_tail = None, False
