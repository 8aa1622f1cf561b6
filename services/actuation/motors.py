"""The step motors: `MotorController` owns the step-motor Arduino's serial link in one thread.

The Arduino runs the existing firmware (shared fixtures README; `motor_replies` reads its lines,
`motor_moves` keeps the bookkeeping below without I/O; this module reads, writes and threads).
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
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import serial

from services.actuation import motor_replies as replies
from services.actuation.motor_moves import MotorMoves, MotorsState, MoveRequest, MoveResult, NoBootError
from services.common.logs import Throttled
from services.common.serial_ports import find_port, open_serial
from services.common.settings import Settings

log = logging.getLogger("rcs.actuation.motors")

JOIN_TIMEOUT_S = 5.0

_T = TypeVar("_T")


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
        self._problems = Throttled(log)
        self._requests: queue.SimpleQueue[MoveRequest] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._accept_lock = threading.Lock()
        self._accepting = False
        self._thread: threading.Thread | None = None
        self._moves = MotorMoves(  # owned by the link thread
            settings,
            requests=self._requests,
            problems=self._problems,
            on_change=self._publish,
            on_event=self._event,
        )
        self._state = self._moves.snapshot()

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
            request = MoveRequest(motor_id, absolute_deg, True, concurrent.futures.Future())
        elif relative_deg is not None:
            request = MoveRequest(motor_id, relative_deg, False, concurrent.futures.Future())
        else:
            raise ValueError("give exactly one of relative_deg and absolute_deg")
        problem = self._moves.invalid(request)
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
        self._moves.resolve(request, False, problem, known.get(motor_id))
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
        self._moves.refuse_new("the motor controller stopped")

    def _idle(self, seconds: float) -> None:
        """Wait between connections, refusing moves as they come."""
        give_up = time.monotonic() + seconds
        while not self._stop.is_set():
            self._moves.refuse_new("the motor Arduino is not connected")
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                return
            self._wake.wait(remaining)
            self._wake.clear()

    def _serve(self, ser: serial.Serial, port: str) -> None:
        """Run one connection until the port fails, the board does not boot, or stop()."""
        self._moves.opened(port, time.monotonic())
        lines = replies.LineSplitter()
        overlong = 0
        why = "the connection to the motor Arduino closed"
        try:
            while not self._stop.is_set():
                data = ser.read(ser.in_waiting or 1)
                now = time.monotonic()
                for line in lines.feed(data):
                    self._moves.handle(line, now)
                if lines.overlong != overlong:
                    overlong = lines.overlong
                    self._problems.warning(
                        "overlong", "%s: dropped %d over-long lines so far", port, overlong
                    )
                command = self._moves.step(now)
                if command is not None:
                    ser.write(command.encode() + b"\n")
        except NoBootError:
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
            self._moves.closed(why)

    # --- callbacks ------------------------------------------------------------------------------

    def _publish(self) -> None:
        state = self._moves.snapshot()
        if state != self._state:
            self._state = state
            self._call("on_state", self._on_state, state)

    def _event(self, kind: str, **fields: Any) -> None:
        self._call("on_event", self._on_event, {"kind": kind, **fields})

    def _call(self, name: str, callback: Callable[[_T], None], arg: _T) -> None:
        try:
            callback(arg)
        except Exception:
            self._problems.warning(name, "%s callback failed", name, exc_info=True)
