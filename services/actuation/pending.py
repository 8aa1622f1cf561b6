"""Valve writes sent to the STM32 (through acquisition) and not yet acknowledged.

Each write gets a command number the device echoes in its acknowledgement, and a deadline: a write
still unacknowledged at its deadline is a failure, never a silent success.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field

from services.actuation.core import ValveWrite

# 0 is never used; 0xFF00 and above are left to acquisition's own go-safe commands.
FIRST_CMD_NO, LAST_CMD_NO = 1, 0xFEFF


@dataclass
class PendingWrite:
    cmd_no: int
    write: ValveWrite
    deadline: float  # monotonic seconds
    done: Future[int] = field(default_factory=Future)  # the acknowledged mask, or an exception


class AckTimeoutError(Exception):
    pass


class ValveWriteRefusedError(Exception):
    pass


class PendingWrites:
    def __init__(self) -> None:
        self._pending: dict[int, PendingWrite] = {}
        self._next = FIRST_CMD_NO

    def add(self, write: ValveWrite, deadline: float) -> PendingWrite:
        cmd_no = self._next
        self._next = FIRST_CMD_NO if cmd_no >= LAST_CMD_NO else cmd_no + 1
        pending = PendingWrite(cmd_no, write, deadline)
        self._pending[cmd_no] = pending
        return pending

    def pop(self, cmd_no: int) -> PendingWrite | None:
        return self._pending.pop(cmd_no, None)

    def expired(self, now: float) -> list[PendingWrite]:
        late = [p for p in self._pending.values() if p.deadline <= now]
        for p in late:
            del self._pending[p.cmd_no]
        return late

    def next_deadline(self) -> float | None:
        return min((p.deadline for p in self._pending.values()), default=None)

    def __len__(self) -> int:
        return len(self._pending)
