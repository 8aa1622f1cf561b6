"""The motor controller's bookkeeping, without threads or I/O: `MotorMoves` reads the step-motor
Arduino's lines (`motor_replies`), keeps its boot phase, the motors' positions and the moves
(queued, in flight), and says which command to send when. `motors.MotorController` owns the serial
port and the thread that drives it; what both do is described in motors.py's docstring.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import queue
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from services.actuation import motor_replies as replies
from services.common.logs import Throttled
from services.common.settings import Settings

log = logging.getLogger("rcs.actuation.motors")

# The firmware times its merge window on the Uno's ceramic resonator (+-0.5 %, clones worse) from
# the end of a command; the controller waits this much longer than the window, from the last line.
SPACING_MARGIN = 1.1
POSITION_RESOLUTION_DEG = 0.01  # the firmware prints and the controller sends two decimals


@dataclass(frozen=True)
class MotorState:
    id: int
    name: str
    position_deg: float | None  # where the firmware believes the motor is; None = unknown
    moving: bool
    target_deg: float | None  # of the move under way


@dataclass(frozen=True)
class MotorsState:
    connected: bool  # the port is open and the firmware has booted: moves are accepted
    motors: tuple[MotorState, ...]
    port: str | None  # the port open now (also while the board boots)


@dataclass(frozen=True)
class MoveResult:
    motor_id: int
    ok: bool
    position_deg: float | None
    response: str  # the firmware's last relevant line, or why the move was refused or failed


class _Phase(Enum):
    BOOTING = "booting"  # waiting for the banner and both start positions
    PAUSING = "pausing"  # banner read: the firmware's delay(1000)
    READY = "ready"


@dataclass
class MoveRequest:
    motor_id: int
    angle_deg: float
    absolute: bool  # angle_deg is a target, else a relative move
    future: concurrent.futures.Future[MoveResult]

    def describe(self) -> str:
        return f"motor {self.motor_id} {'to' if self.absolute else 'by'} {self.angle_deg}°"


@dataclass
class _InFlight:
    request: MoveRequest
    command: str  # as sent, without the newline
    target_deg: float
    timeout_s: float
    deadline: float
    echoed: bool = False  # the firmware's `Alınan komut` matched `command`
    completed: bool = False  # `hareketi tamamlandı` seen
    refusal: str | None = None  # the first refusal line
    last_line: str = ""


class NoBootError(Exception):
    """Close the port and connect again (the board did not boot)."""


class MotorMoves:
    """One Arduino's state and the moves for it; called on the link thread only, except `invalid`
    and `resolve` (also on the caller's thread, by `MotorController.move`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        requests: queue.SimpleQueue[MoveRequest],
        problems: Throttled,
        on_change: Callable[[], None],
        on_event: Callable[..., None],
    ) -> None:
        """`requests`: the moves `MotorController.move` passes on; `on_change()`: the snapshot may
        have changed; `on_event(kind, **fields)`: report an event."""
        self._settings = settings
        self._requests = requests
        self._problems = problems
        self._changed = on_change
        self._event = on_event
        self._names = {m.id: m.name for m in settings.motors.motors}
        self._spacing_s = settings.motors.min_interval_ms / 1000 * SPACING_MARGIN
        self._port: str | None = None
        self._phase = _Phase.BOOTING
        self._connected = False
        self._positions: dict[int, float | None] = dict.fromkeys(self._names)
        self._moving: dict[int, bool] = dict.fromkeys(self._names, False)
        self._boot_positions: dict[int, float] = {}
        self._boot_deadline = 0.0
        self._ready_at = 0.0
        self._queue: deque[MoveRequest] = deque()
        self._in_flight: _InFlight | None = None
        self._busy = False  # the firmware is processing a command whose end we have not seen
        self._quiet_until = 0.0  # no command goes before this

    # --- connections ----------------------------------------------------------------------------

    def opened(self, port: str, now: float) -> None:
        self._port = port
        self._boot(now)

    def closed(self, why: str) -> None:
        """The port is closed: every move fails with `why`, the positions are unknown."""
        if self._connected:
            log.info("motor Arduino on %s disconnected", self._port)
        self._connected = False
        self._fail_all(why)
        self._port = None
        self._positions = dict.fromkeys(self._names)
        self._moving = dict.fromkeys(self._names, False)
        self._changed()

    def _boot(self, now: float) -> None:
        """The board is (re)starting: wait for its banner before anything else."""
        self._phase = _Phase.BOOTING
        self._connected = False
        self._boot_positions = {}
        self._boot_deadline = now + self._settings.arduino.boot_timeout_s
        self._positions = dict.fromkeys(self._names)
        self._moving = dict.fromkeys(self._names, False)
        self._busy = False
        self._changed()

    def step(self, now: float) -> str | None:
        """Timers and the queue, after each read: the command to send now, if any (without its newline)."""
        if self._phase is _Phase.BOOTING and now > self._boot_deadline:
            self._problems.warning(
                "boot",
                "%s: no boot banner with both motor positions within %.1f s (is this the step-motor "
                "Arduino?); reopening",
                self._port,
                self._settings.arduino.boot_timeout_s,
            )
            raise NoBootError
        if self._phase is _Phase.PAUSING and now >= self._ready_at:
            self._phase = _Phase.READY
            self._connected = True
            self._quiet_until = now
            self._changed()
            log.info("motor Arduino on %s ready: %s", self._port, self.describe_positions())
        if self._phase is not _Phase.READY:
            self.refuse_new("the motor Arduino is booting")
            return None
        self._take_new()
        flight = self._in_flight
        if flight is not None and now > flight.deadline:
            self._timed_out(flight)
        if self._in_flight is None and not self._busy and self._queue and now >= self._quiet_until:
            return self._send_next(now)
        return None

    # --- lines ---------------------------------------------------------------------------------

    def handle(self, line: str, now: float) -> None:
        """One line the firmware printed. Long because it is one `match` over every kind of reply
        (`motor_replies`): what each line means to the moves reads in one place."""
        reply = replies.parse(line)
        booting = isinstance(reply, replies.Banner | replies.StartPosition)
        if booting and self._phase is not _Phase.BOOTING:
            self._reset_detected()
            self._boot(now)
        elif not booting and self._phase is _Phase.BOOTING:
            return  # what a previous session left in the USB chip's buffer
        self._quiet_until = now + self._spacing_s
        flight = self._in_flight
        if flight is not None:
            flight.last_line = line
        match reply:
            case replies.Banner():
                self._boot_positions = {}
            case replies.StartPosition(motor_id, position):
                self._boot_positions[motor_id] = position
                if self._phase is _Phase.BOOTING and self._names.keys() <= self._boot_positions.keys():
                    self._positions = {m: self._boot_positions[m] for m in self._names}
                    self._phase = _Phase.PAUSING
                    self._ready_at = now + replies.BOOT_PAUSE_S
                    self._changed()
            case replies.Received(command):
                self._busy = True
                if flight is not None and not flight.echoed and command == flight.command:
                    flight.echoed = True
                else:
                    self._garbled(command, flight)
            case replies.CurrentPosition(motor_id, position) if motor_id in self._names:
                self._set_position(motor_id, position)
            case replies.Steps(motor_id) if flight is not None and motor_id == flight.request.motor_id:
                self._moving[motor_id] = True
                self._changed()
            case replies.Completed(motor_id) if flight is not None and motor_id == flight.request.motor_id:
                flight.completed = True
            case replies.NewPosition(motor_id, position):
                self._busy = False
                if motor_id in self._names:
                    self._moving[motor_id] = False
                    self._set_position(motor_id, position)
                if flight is not None and flight.echoed and motor_id == flight.request.motor_id:
                    if flight.completed:
                        self._finish(True, line)
                    else:
                        self._finish(False, f"the Arduino reported a new position without completing: {line}")
            case replies.Refusal(text, final):
                if flight is not None and flight.echoed and flight.refusal is None:
                    flight.refusal = text
                if final:
                    self._busy = False
                    if flight is not None and flight.echoed:
                        self._finish(False, flight.refusal or text)
            case replies.StatusPositions(positions):
                if flight is None:
                    self._busy = False  # printed only while loop() idles
                for motor_id, position in zip((1, 2), positions, strict=True):
                    if motor_id in self._names:
                        self._set_position(motor_id, position)
            case replies.Unknown(text):
                self._problems.warning(
                    "unknown", "%s: unexpected line from the motor Arduino: %r", self._port, text
                )
            case _:
                pass

    def _set_position(self, motor_id: int, position: float) -> None:
        self._positions[motor_id] = position
        self._changed()

    def _reset_detected(self) -> None:
        flight = self._in_flight
        previous = self.describe_positions()
        message = (
            "the motor Arduino reset by itself (boot banner): it assumes its boot positions again, "
            "whatever the motors' real angles"
        )
        log.warning("%s: %s (were %s)", self._port, message, previous)
        self._event(
            "motor_reset",
            port=self._port,
            message=message,
            previous_positions_deg={self._names[m]: p for m, p in self._positions.items()},
            interrupted_motor_id=None if flight is None else flight.request.motor_id,
        )
        self._fail_all(
            "the motor Arduino reset by itself (during the move or before it started); it now assumes its "
            "boot positions, whatever the motors' real angles"
        )

    def _garbled(self, command: str, flight: _InFlight | None) -> None:
        """The firmware runs a command that is not the one in flight (merged input, or a stray one)."""
        self._problems.warning(
            "garbled",
            "%s: the motor Arduino runs %r%s",
            self._port,
            command,
            "" if flight is None else f" instead of {flight.command!r}",
        )
        if flight is not None:
            self._fail_all(f"the Arduino received {command!r} instead of {flight.command!r}")

    def _timed_out(self, flight: _InFlight) -> None:
        motor_id = flight.request.motor_id
        self._positions[motor_id] = None
        self._problems.warning(
            "timeout", "%s: %r not completed within %.1f s", self._port, flight.command, flight.timeout_s
        )
        self._fail_all(
            f"no completion from the Arduino within {flight.timeout_s:.1f} s "
            f"(last line: {flight.last_line!r}); the position of {self._names[motor_id]} is unknown "
            "until the Arduino reports it"
        )

    # --- moves ---------------------------------------------------------------------------------

    def _take_new(self) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            if self._busy and self._in_flight is None:
                self._refuse(
                    request, "the motor Arduino has not finished an earlier command; try again later"
                )
            else:
                self._queue.append(request)

    def _send_next(self, now: float) -> str | None:
        """The next queued move's command, or None when it is refused or needs none."""
        request = self._queue.popleft()
        if not request.future.set_running_or_notify_cancel():
            return None  # cancelled by the caller
        motor = self._settings.motors
        problem = self.invalid(request)
        if problem is not None:
            self._refuse(request, problem)
            return None
        position = self._positions[request.motor_id]
        if position is None:
            self._refuse(request, f"the position of {self._names[request.motor_id]} is unknown")
            return None
        delta = round(request.angle_deg - position if request.absolute else request.angle_deg, 2)
        target = position + delta
        if abs(target) > motor.limit_deg + POSITION_RESOLUTION_DEG / 2:
            self._refuse(
                request, f"target {target:.2f}° is outside the motor's range of +-{motor.limit_deg}°"
            )
            return None
        if delta == 0:
            self.resolve(request, True, f"already at {position:.2f}°", position)
            return None
        command = f"{request.motor_id}:{delta:.2f}"
        timeout_s = motor.move_time_s(delta)
        self._in_flight = _InFlight(request, command, target, timeout_s, now + timeout_s)
        self._busy = True
        self._changed()
        log.debug("sending %r (%s)", command, request.describe())
        return command

    def _finish(self, ok: bool, response: str) -> None:
        """End the move in flight."""
        flight = self._in_flight
        if flight is None:
            return
        self._in_flight = None
        motor_id = flight.request.motor_id
        self._moving[motor_id] = False
        self._changed()
        self.resolve(flight.request, ok, response, self._positions.get(motor_id))

    def _fail_all(self, why: str) -> None:
        """Fail the move in flight and every queued one."""
        if self._in_flight is not None:
            self._finish(False, why)
        while self._queue:
            self._refuse(self._queue.popleft(), why)
        self.refuse_new(why)

    def refuse_new(self, why: str) -> None:
        """Fail every request move() has passed on since the last look."""
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            self._refuse(request, why)

    def _refuse(self, request: MoveRequest, why: str) -> None:
        self.resolve(request, False, why, self._positions.get(request.motor_id))

    def invalid(self, request: MoveRequest) -> str | None:
        """Why a request can never be carried out, None if it can."""
        if request.motor_id not in self._names:
            return f"unknown motor id {request.motor_id!r} (this stand has {sorted(self._names)})"
        if not math.isfinite(request.angle_deg):
            return f"the angle must be a finite number of degrees, not {request.angle_deg}"
        limit = self._settings.motors.limit_deg
        if request.absolute and abs(request.angle_deg) > limit:
            return f"target {request.angle_deg}° is outside the motor's range of +-{limit}°"
        return None

    def resolve(self, request: MoveRequest, ok: bool, response: str, position: float | None) -> None:
        """Complete a request's future (unless the caller cancelled it); failures are events too."""
        future = request.future
        if not future.running() and not future.set_running_or_notify_cancel():
            return
        if not ok:
            log.debug("move %s failed: %s", request.describe(), response)
            self._event(
                "motor_error",
                motor_id=request.motor_id,
                motor=self._names.get(request.motor_id),
                request=request.describe(),
                response=response,
                position_deg=position,
                port=self._port,
            )
        future.set_result(MoveResult(request.motor_id, ok, position, response))

    # --- state --------------------------------------------------------------------------------

    def snapshot(self) -> MotorsState:
        flight = self._in_flight
        motors = tuple(
            MotorState(
                id=motor_id,
                name=name,
                position_deg=self._positions[motor_id],
                moving=self._moving[motor_id],
                target_deg=flight.target_deg if flight and flight.request.motor_id == motor_id else None,
            )
            for motor_id, name in self._names.items()
        )
        return MotorsState(connected=self._connected, motors=motors, port=self._port)

    def describe_positions(self) -> str:
        return ", ".join(
            f"{self._names[m]} at {'unknown' if p is None else f'{p:.2f}°'}"
            for m, p in self._positions.items()
        )
