"""The step motors: `MotorController` owns the step-motor Arduino's serial link in one thread.

The Arduino runs the existing firmware (shared fixtures README; `motor_replies` reads its lines).
What the controller relies on, and how it keeps the firmware out of trouble:

- Opening the port resets the Uno (DTR). After every open the controller waits for the boot banner
  with both start positions (`arduino.boot_timeout_s`, else it reopens), then the firmware's 1 s
  pause, and only then reports itself connected and sends commands. Positions come from the banner.
- A banner at any other time means the Uno reset by itself: the move under way and every queued
  move fail, `on_event({"kind": "motor_reset", ...})` reports it, positions are read again. After any
  reset the firmware *assumes* the boot position, wherever the motors really are.
- The firmware merges commands closer together than `motors.min_interval_ms` into one garbled
  command. Moves are queued (FIFO) and sent one at a time; the next goes only when the previous one
  has finished and the firmware has printed nothing for the interval plus SPACING_MARGIN.
- A move is done at `hareketi tamamlandı` + `yeni pozisyon`, within |delta| / `speed_deg_s` +
  `timeout_margin_s`. Without it (or if the firmware echoes a command other than the one sent) the
  move fails, that motor's position becomes unknown and the queue is failed; nothing more is sent
  until the firmware shows it is idle again (a final line, or its 30 s status line).
- Refused without sending: unknown motor ids, non-finite angles, targets beyond +-`limit_deg`, an
  unknown position, and any move while not connected. Firmware refusals become ok=False results
  carrying the firmware's line. Every failed move is also an `on_event({"kind": "motor_error"})`.

Callbacks run on the link thread, except `on_event` for a move refused at once by `move` itself,
which runs on the caller's thread. A callback that raises is logged, not fatal.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

import serial

from services.actuation import motor_replies as replies
from services.common.logs import Throttled
from services.common.serial_ports import find_port, open_serial
from services.common.settings import Settings

log = logging.getLogger("rcs.actuation.motors")

JOIN_TIMEOUT_S = 5.0
# The firmware times its merge window on the Uno's ceramic resonator (+-0.5 %, clones worse) from
# the end of a command; the controller waits this much longer than the window, from the last line.
SPACING_MARGIN = 1.1
POSITION_RESOLUTION_DEG = 0.01  # the firmware prints and the controller sends two decimals

_T = TypeVar("_T")


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
class _Request:
    motor_id: int
    angle_deg: float
    absolute: bool  # angle_deg is a target, else a relative move
    future: concurrent.futures.Future[MoveResult]

    def describe(self) -> str:
        return f"motor {self.motor_id} {'to' if self.absolute else 'by'} {self.angle_deg}°"


@dataclass
class _InFlight:
    request: _Request
    command: str  # as sent, without the newline
    target_deg: float
    timeout_s: float
    deadline: float
    echoed: bool = False  # the firmware's `Alınan komut` matched `command`
    completed: bool = False  # `hareketi tamamlandı` seen
    refusal: str | None = None  # the first refusal line
    last_line: str = ""


class _NoBootError(Exception):
    """Close the port and connect again (the board did not boot)."""


class MotorController:
    """Moves the stand's step motors through the step-motor Arduino; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_state: Callable[[MotorsState], None],
        on_event: Callable[[dict[str, Any]], None],
    ) -> None:
        self._settings = settings
        self._on_state = on_state
        self._on_event = on_event
        self._names = {m.id: m.name for m in settings.motors.motors}
        self._spacing_s = settings.motors.min_interval_ms / 1000 * SPACING_MARGIN
        self._problems = Throttled(log)
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._accept_lock = threading.Lock()
        self._accepting = False
        self._thread: threading.Thread | None = None
        # Owned by the link thread:
        self._port: str | None = None
        self._phase = _Phase.BOOTING
        self._connected = False
        self._positions: dict[int, float | None] = dict.fromkeys(self._names)
        self._moving: dict[int, bool] = dict.fromkeys(self._names, False)
        self._boot_positions: dict[int, float] = {}
        self._boot_deadline = 0.0
        self._ready_at = 0.0
        self._queue: deque[_Request] = deque()
        self._in_flight: _InFlight | None = None
        self._busy = False  # the firmware is processing a command whose end we have not seen
        self._quiet_until = 0.0  # no command goes before this
        self._state = self._snapshot()

    # --- public API ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("MotorController.start() called twice")
        with self._accept_lock:
            self._accepting = True
        self._thread = threading.Thread(target=self._run, name="arduino-link", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the port; the move under way and queued moves fail (the board finishes a move it
        has started: the firmware cannot be interrupted)."""
        with self._accept_lock:
            self._accepting = False
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("the Arduino link thread did not stop within %.0f s", JOIN_TIMEOUT_S)

    def move(
        self, motor_id: int, *, relative_deg: float | None = None, absolute_deg: float | None = None
    ) -> concurrent.futures.Future[MoveResult]:
        """Queue a move by `relative_deg` or to `absolute_deg` (exactly one); never blocks.

        The future resolves when the move is done, refused or failed (see the module docstring).
        """
        if relative_deg is not None and absolute_deg is not None:
            raise ValueError("give exactly one of relative_deg and absolute_deg")
        if absolute_deg is not None:
            request = _Request(motor_id, absolute_deg, True, concurrent.futures.Future())
        elif relative_deg is not None:
            request = _Request(motor_id, relative_deg, False, concurrent.futures.Future())
        else:
            raise ValueError("give exactly one of relative_deg and absolute_deg")
        problem = self._invalid(request)
        if problem is None and not self._state.connected:
            problem = "the motor Arduino is not connected"
        if problem is None:
            with self._accept_lock:
                if self._accepting:
                    self._requests.put(request)
                    self._wake.set()
                    return request.future
            problem = "the motor controller is not running"
        known = {m.id: m.position_deg for m in self._state.motors}
        self._resolve(request, False, problem, known.get(motor_id))
        return request.future

    @property
    def state(self) -> MotorsState:
        return self._state

    # --- link thread: connections ---------------------------------------------------------------

    def _run(self) -> None:
        arduino = self._settings.arduino
        while not self._stop.is_set():
            port = find_port(arduino.port, arduino.vid_pids)
            opened = open_serial(port, arduino.vid_pids, arduino.baudrate, self._problems)
            if opened is not None:
                self._serve(*opened)
            self._idle(arduino.reconnect_s)
        self._refuse_new("the motor controller stopped")

    def _idle(self, seconds: float) -> None:
        """Wait between connections, refusing moves as they come."""
        give_up = time.monotonic() + seconds
        while not self._stop.is_set():
            self._refuse_new("the motor Arduino is not connected")
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                return
            self._wake.wait(remaining)
            self._wake.clear()

    def _serve(self, ser: serial.Serial, port: str) -> None:
        """Run one connection until the port fails, the board does not boot, or stop()."""
        self._port = port
        self._boot(time.monotonic())
        lines = replies.LineSplitter()
        overlong = 0
        why = "the connection to the motor Arduino closed"
        try:
            while not self._stop.is_set():
                data = ser.read(ser.in_waiting or 1)
                now = time.monotonic()
                for line in lines.feed(data):
                    self._handle(line, now)
                if lines.overlong != overlong:
                    overlong = lines.overlong
                    self._problems.warning(
                        "overlong", "%s: dropped %d over-long lines so far", port, overlong
                    )
                self._step(ser, now)
        except _NoBootError:
            why = "the motor Arduino did not boot"
        except (serial.SerialException, OSError) as exc:
            self._problems.warning("lost", "%s: connection lost: %s", port, exc)
            why = f"the connection to the motor Arduino was lost ({exc})"
        except Exception:  # a bug must cost this connection, not the actuation service
            self._problems.warning("bug", "%s: closing after an unexpected error", port, exc_info=True)
            why = "the motor controller failed (see its log)"
        finally:
            try:
                ser.close()
            except (serial.SerialException, OSError) as exc:
                log.debug("closing %s: %s", port, exc)
            if self._stop.is_set():
                why = "the motor controller stopped"
            if self._connected:
                log.info("motor Arduino on %s disconnected", port)
            self._connected = False
            self._fail_all(why)
            self._port = None
            self._positions = dict.fromkeys(self._names)
            self._moving = dict.fromkeys(self._names, False)
            self._publish()

    def _boot(self, now: float) -> None:
        """The board is (re)starting: wait for its banner before anything else."""
        self._phase = _Phase.BOOTING
        self._connected = False
        self._boot_positions = {}
        self._boot_deadline = now + self._settings.arduino.boot_timeout_s
        self._positions = dict.fromkeys(self._names)
        self._moving = dict.fromkeys(self._names, False)
        self._busy = False
        self._publish()

    def _step(self, ser: serial.Serial, now: float) -> None:
        """Timers and the queue, after each read."""
        if self._phase is _Phase.BOOTING and now > self._boot_deadline:
            self._problems.warning(
                "boot",
                "%s: no boot banner with both motor positions within %.1f s (is this the step-motor "
                "Arduino?); reopening",
                self._port,
                self._settings.arduino.boot_timeout_s,
            )
            raise _NoBootError
        if self._phase is _Phase.PAUSING and now >= self._ready_at:
            self._phase = _Phase.READY
            self._connected = True
            self._quiet_until = now
            self._publish()
            log.info("motor Arduino on %s ready: %s", self._port, self._describe_positions())
        if self._phase is not _Phase.READY:
            self._refuse_new("the motor Arduino is booting")
            return
        self._take_new()
        flight = self._in_flight
        if flight is not None and now > flight.deadline:
            self._timed_out(flight)
        if self._in_flight is None and not self._busy and self._queue and now >= self._quiet_until:
            self._send_next(ser, now)

    # --- link thread: lines ---------------------------------------------------------------------

    def _handle(self, line: str, now: float) -> None:
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
                    self._publish()
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
                self._publish()
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
        self._publish()

    def _reset_detected(self) -> None:
        flight = self._in_flight
        previous = self._describe_positions()
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

    # --- link thread: moves ---------------------------------------------------------------------

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

    def _send_next(self, ser: serial.Serial, now: float) -> None:
        request = self._queue.popleft()
        if not request.future.set_running_or_notify_cancel():
            return  # cancelled by the caller
        motor = self._settings.motors
        problem = self._invalid(request)
        if problem is not None:
            self._refuse(request, problem)
            return
        position = self._positions[request.motor_id]
        if position is None:
            self._refuse(request, f"the position of {self._names[request.motor_id]} is unknown")
            return
        delta = round(request.angle_deg - position if request.absolute else request.angle_deg, 2)
        target = position + delta
        if abs(target) > motor.limit_deg + POSITION_RESOLUTION_DEG / 2:
            self._refuse(
                request, f"target {target:.2f}° is outside the motor's range of +-{motor.limit_deg}°"
            )
            return
        if delta == 0:
            self._resolve(request, True, f"already at {position:.2f}°", position)
            return
        command = f"{request.motor_id}:{delta:.2f}"
        timeout_s = motor.move_time_s(delta)
        self._in_flight = _InFlight(request, command, target, timeout_s, now + timeout_s)
        self._busy = True
        self._publish()
        log.debug("sending %r (%s)", command, request.describe())
        ser.write(command.encode() + b"\n")

    def _finish(self, ok: bool, response: str) -> None:
        """End the move in flight."""
        flight = self._in_flight
        if flight is None:
            return
        self._in_flight = None
        motor_id = flight.request.motor_id
        self._moving[motor_id] = False
        self._publish()
        self._resolve(flight.request, ok, response, self._positions.get(motor_id))

    def _fail_all(self, why: str) -> None:
        """Fail the move in flight and every queued one."""
        if self._in_flight is not None:
            self._finish(False, why)
        while self._queue:
            self._refuse(self._queue.popleft(), why)
        self._refuse_new(why)

    def _refuse_new(self, why: str) -> None:
        """Fail every request move() has passed on since the last look."""
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            self._refuse(request, why)

    def _refuse(self, request: _Request, why: str) -> None:
        self._resolve(request, False, why, self._positions.get(request.motor_id))

    def _invalid(self, request: _Request) -> str | None:
        """Why a request can never be carried out, None if it can."""
        if request.motor_id not in self._names:
            return f"unknown motor id {request.motor_id!r} (this stand has {sorted(self._names)})"
        if not math.isfinite(request.angle_deg):
            return f"the angle must be a finite number of degrees, not {request.angle_deg}"
        limit = self._settings.motors.limit_deg
        if request.absolute and abs(request.angle_deg) > limit:
            return f"target {request.angle_deg}° is outside the motor's range of +-{limit}°"
        return None

    def _resolve(self, request: _Request, ok: bool, response: str, position: float | None) -> None:
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

    # --- state and callbacks --------------------------------------------------------------------

    def _snapshot(self) -> MotorsState:
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

    def _publish(self) -> None:
        state = self._snapshot()
        if state != self._state:
            self._state = state
            self._call("on_state", self._on_state, state)

    def _event(self, kind: str, **fields: Any) -> None:
        self._call("on_event", self._on_event, {"kind": kind, **fields})

    def _describe_positions(self) -> str:
        return ", ".join(
            f"{self._names[m]} at {'unknown' if p is None else f'{p:.2f}°'}"
            for m, p in self._positions.items()
        )

    def _call(self, name: str, callback: Callable[[_T], None], arg: _T) -> None:
        try:
            callback(arg)
        except Exception:
            self._problems.warning(name, "%s callback failed", name, exc_info=True)
