"""The valve path on the wire (docs/protocol.md): actuation's commands as they arrive, the device's
answers as they are read, and the acknowledgement acquisition publishes for each command.

Commands: `rcs/stm32/cmd/valves` `{cmd_no, mask, deadline, cause}` and `rcs/stm32/cmd/go_safe`
`{cmd_no, deadline, reason}`. Acknowledgements: `rcs/stm32/valve_ack`
`{cmd_no, ok, result, valves, text, ts}`, from the device's VALVE_ACK (binary protocol), from an
`ACK:`/`NACK:` line (text protocol), or from acquisition when a command is not executed.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from services.acquisition.text_protocol import TextAck
from services.common.codec import WireFormatError, pack, unpack_map
from services.common.stm32_wire import HEARTBEAT_TIMEOUT_S, AckResult, ValveAckFrame
from services.common.valve_pattern import parse_pattern

_TEXT_VALVES = re.compile(r"^Valves:\s*([01]+)\s*$")

Result = Literal[
    "applied",
    "refused_no_heartbeat",
    "refused_bad_mask",
    "nack",
    "not_connected",
    "expired",
    "go_safe_applied",
]


@dataclass(frozen=True)
class ValveCommand:
    cmd_no: int
    mask: int | None  # None: GO_SAFE
    deadline: float  # UNIX s
    cause: str  # `cause` of a valve command, `reason` of a go-safe
    own: bool = False  # acquisition's own go-safe

    @property
    def go_safe(self) -> bool:
        return self.mask is None

    @property
    def resulting_mask(self) -> int:
        """The valves after the device applies this command."""
        return 0 if self.mask is None else self.mask

    def describe(self) -> str:
        what = "GO_SAFE" if self.mask is None else f"valves {self.mask:#05x}"
        return f"command {self.cmd_no} ({what}, {self.cause!r})"


def _number(message: dict[str, Any], key: str) -> float:
    value = message.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise WireFormatError(f"field {key!r} missing or not a finite number")
    return float(value)


def _integer(message: dict[str, Any], key: str, low: int, high: int | None = None) -> int:
    value = message.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise WireFormatError(f"field {key!r} missing or not an integer")
    if value < low or (high is not None and value > high):
        raise WireFormatError(f"field {key!r} = {value} out of range")
    return value


def _text(message: dict[str, Any], key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str):
        raise WireFormatError(f"field {key!r} missing or not a string")
    return value


def parse_valves(payload: bytes) -> ValveCommand:
    """`{cmd_no: 0..65535, mask: int >= 0, deadline: UNIX s, cause: str}`; WireFormatError otherwise.

    A mask with bits beyond the configured valves parses: it is refused, with an answer."""
    message = unpack_map(payload)
    return ValveCommand(
        cmd_no=_integer(message, "cmd_no", 0, 0xFFFF),
        mask=_integer(message, "mask", 0),
        deadline=_number(message, "deadline"),
        cause=_text(message, "cause"),
    )


def parse_go_safe(payload: bytes) -> ValveCommand:
    """`{cmd_no: 0..65535, deadline: UNIX s, reason: str}`; WireFormatError otherwise."""
    message = unpack_map(payload)
    return ValveCommand(
        cmd_no=_integer(message, "cmd_no", 0, 0xFFFF),
        mask=None,
        deadline=_number(message, "deadline"),
        cause=_text(message, "reason"),
    )


def text_ack_mask(ack: TextAck, n_valves: int) -> int | None:
    """The mask an `ACK: Valves:<digits>` line reports (digit i = valve i), else None."""
    match = _TEXT_VALVES.match(ack.text)
    if not ack.ok or match is None or len(match.group(1)) != n_valves:
        return None
    return parse_pattern(match.group(1), n_valves)


def binary_answer(ack: ValveAckFrame, command: ValveCommand | None) -> tuple[Result, str]:
    """The result and text of a VALVE_ACK answering `command` (None: one no longer waited for)."""
    go_safe = command is not None and command.go_safe
    if ack.result == AckResult.APPLIED:
        result: Result = "go_safe_applied" if go_safe else "applied"
        text = f"{'GO_SAFE applied' if go_safe else 'applied'}: valves {ack.valves:#05x}"
    elif ack.result == AckResult.REFUSED_NO_HEARTBEAT:
        result = "refused_no_heartbeat"
        text = (
            f"refused by the STM32: no heartbeat within {HEARTBEAT_TIMEOUT_S * 1000:.0f} ms, "
            f"valves stay closed ({ack.valves:#05x})"
        )
    else:
        result = "refused_bad_mask"
        text = f"refused by the STM32: bits beyond its valves; valves unchanged ({ack.valves:#05x})"
    if command is None:
        text += " (answer to a command this service no longer waited for)"
    return result, text


def text_answer(ack: TextAck, command: ValveCommand) -> tuple[Result, str]:
    """The result and text of an `ACK:`/`NACK:` line answering `command`."""
    if ack.ok:
        result: Result = "go_safe_applied" if command.go_safe else "applied"
    else:
        result = "nack"
    return result, f"{'ACK' if ack.ok else 'NACK'}: {ack.text}"


def ack_payload(cmd_no: int, result: Result, text: str, valves: int | None = None) -> bytes:
    """The packed acknowledgement of command `cmd_no`."""
    ok = result in ("applied", "go_safe_applied")
    return pack(
        {"cmd_no": cmd_no, "ok": ok, "result": result, "valves": valves, "text": text, "ts": time.time()}
    )
