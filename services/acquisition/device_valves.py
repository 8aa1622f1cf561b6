"""What acquisition knows of the STM32's valve outputs: the device's latest report of them and the
commands written to it and not answered yet, which its answers are matched to.

Binary protocol answers carry the cmd_no. Text protocol answers do not: an `ACK: Valves:<digits>`
answers the oldest command asking for that pattern, any other line the oldest command; the device
answers in order, so older commands got no answer. A command unanswered for PENDING_TIMEOUT_S is
forgotten. Not thread-safe: ValveControl calls it with its lock held.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from services.acquisition.valve_wire import ValveCommand
from services.common.stm32_wire import ValveAckFrame

log = logging.getLogger("rcs.acquisition.valves")

PENDING_TIMEOUT_S = 2.0  # a command the device has not answered by then is forgotten


@dataclass(frozen=True)
class Written:
    command: ValveCommand
    sent: float  # monotonic


class DeviceValves:
    def __init__(self) -> None:
        self.mask: int | None = None  # the device's latest report of its outputs; None: unknown
        self._pending: deque[Written] = deque()  # written, unanswered, in write order
        self.unanswered = 0  # written commands the device never answered (forgotten)
        self.acks = 0  # device answers matched (binary: every answer)
        self.unmatched = 0  # device answers matching no command (text protocol)

    def may_be_open(self) -> bool:
        """The newest unanswered command opens a valve, or (none) the device's report is not
        all-closed or is unknown."""
        if self._pending:
            return self._pending[-1].command.resulting_mask != 0
        return self.mask is None or self.mask != 0

    def link_changed(self) -> int:
        """The link (re)connected or went down: forget every unanswered command (how many) and the
        outputs, unknown until the device reports them."""
        forgotten = len(self._pending)
        self._pending.clear()
        self.unanswered += forgotten
        self.mask = None
        return forgotten

    def writing(self, command: ValveCommand) -> Written:
        """Register `command` before writing it: the answer may arrive before the write returns."""
        entry = Written(command, time.monotonic())
        self._pending.append(entry)
        return entry

    def not_written(self, entry: Written) -> None:
        if entry in self._pending:
            self._pending.remove(entry)

    def binary_answer(self, ack: ValveAckFrame) -> ValveCommand | None:
        """The command a VALVE_ACK answers (None: none waiting with its cmd_no)."""
        self.mask = ack.valves
        entry = next((p for p in self._pending if p.command.cmd_no == ack.cmd_no), None)
        if entry is not None:
            self._pending.remove(entry)
        self._forget_stale()
        self.acks += 1
        return None if entry is None else entry.command

    def text_answer(self, mask: int | None) -> ValveCommand | None:
        """The command an `ACK:`/`NACK:` line answers; `mask`: the pattern an ACK reports, if any."""
        if mask is not None:
            self.mask = mask
        self._forget_stale()
        if mask is not None:  # the oldest command that asked for this pattern; skipped ones got no answer
            command = self._take_first(lambda c: c.resulting_mask == mask)
        else:  # NACK (or an ACK without a pattern): FIFO
            command = self._take_first(lambda c: True)
        if command is None:
            self.unmatched += 1
        else:
            self.acks += 1
        return command

    def _take_first(self, match: Callable[[ValveCommand], bool]) -> ValveCommand | None:
        """Remove the oldest pending command `match` accepts and every older one (the device answers
        in order: those got no answer)."""
        for index, entry in enumerate(self._pending):
            if match(entry.command):
                skipped = [self._pending.popleft().command for _ in range(index)]
                self._pending.popleft()
                if skipped:
                    self.unanswered += len(skipped)
                    log.warning("no answer from the STM32 to %s", ", ".join(c.describe() for c in skipped))
                return entry.command
        return None

    def _forget_stale(self) -> None:
        """Drop commands unanswered for PENDING_TIMEOUT_S."""
        now = time.monotonic()
        while self._pending and now - self._pending[0].sent > PENDING_TIMEOUT_S:
            command = self._pending.popleft().command
            self.unanswered += 1
            log.warning("no answer from the STM32 to %s within %.0f s", command.describe(), PENDING_TIMEOUT_S)
