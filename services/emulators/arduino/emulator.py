"""`ArduinoEmulator`: the step-motor firmware behind a pty, run by one thread on the wall clock.

Opening a real Uno's port resets the board (DTR, through a capacitor on the reset pin), so every
host that opens the port sees the boot banner. pyserial's DTR ioctl does nothing on a pty, so the
emulator watches the open itself (PtyPort with hold_slave=False): it never keeps the slave side
open, so an inotify IN_OPEN on the slave's device node while no process had it open is a DTR edge,
i.e. a reset (even if the host closed and reopened the port between two loop passes), and poll()
on the master reports POLLHUP exactly while no host has the port open. While no host is attached
the board keeps running (a move finishes, status lines fall due) and what it prints is lost, as on
a real board whose port nobody reads: it is not written to the pty at all, since the kernel would
keep it for a host that does not flush its input on open (pyserial does). Closing the port does not
reset a Uno, nor this one.

Controls may be called from any thread: they run on the emulator's thread, and the calling thread
waits until they have taken effect.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from services.common.settings import Settings
from services.emulators.arduino.firmware import StepMotorFirmware
from services.emulators.device_thread import MAX_WAIT_S, DeviceThread
from services.emulators.pty_port import PtyPort

log = logging.getLogger("rcs.emulators.arduino")

LINE_END = b"\r\n"  # Serial.println


class ArduinoEmulator(DeviceThread):
    """The step-motor Uno behind a pseudo-terminal at `link_path`, in a thread of this process.

    `speed_factor` (default 1: the real firmware's timing) scales every firmware duration together.
    Counters: `lines_sent` (printed while a host was attached), `lines_lost` (printed while none was).
    """

    def __init__(self, settings: Settings, *, link_path: Path, speed_factor: float = 1.0) -> None:
        self._firmware = StepMotorFirmware(settings.motors, speed_factor)
        self.speed_factor = speed_factor
        super().__init__(PtyPort(link_path, hold_slave=False), "arduino-emulator")
        self._attached = False  # a host has the port open: what the board prints reaches it
        self.lines_sent = 0
        self.lines_lost = 0

    @property
    def positions(self) -> tuple[float, ...]:
        """Where the firmware believes each motor is, motor 1 first."""
        return self._firmware.positions

    @property
    def resets(self) -> int:
        """Board resets so far: power-up, each host opening the port, and `reset()`."""
        return self._firmware.resets

    # Fault injection -----------------------------------------------------------------------------

    def reset(self) -> None:
        """A spontaneous reset (brown-out, watchdog): the banner again, positions back to boot."""
        self._in_loop(lambda now: self._send(self._firmware.reset(now, external=False)))

    # The board loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        firmware = self._firmware
        firmware.reset(time.monotonic(), external=False)  # power-up, nobody listening
        while not self._stopping.is_set():
            now = time.monotonic()
            self._run_controls(now)
            if self._replug_if_due(now):
                # the board lost power with the USB cable (`disconnect`): it powers up again now, and
                # resets once more when a host opens the port
                firmware.reset(now, external=False)
            opens = self._port.host_opens()
            self._attached = self._port.host_attached()
            if opens:
                log.debug("host opened %s: DTR reset", self.link_path)
                self._send(firmware.reset(now, external=True))
            if self._attached:
                self._port.flush()
                data = self._port.read()
                if data:
                    self._send(firmware.receive(data, now))
            self._send(firmware.tick(now))
            self._wait(firmware.next_event())

    def _send(self, lines: list[str]) -> None:
        for line in lines:
            if self._attached and self._port.write(line.encode("utf-8", "surrogateescape") + LINE_END):
                self.lines_sent += 1
            else:
                self.lines_lost += 1

    def _wait(self, next_event: float | None) -> None:
        """Sleep until the firmware's next event, or until the host writes, opens or closes the port."""
        timeout = MAX_WAIT_S if next_event is None else min(next_event - time.monotonic(), MAX_WAIT_S)
        if timeout > 0:
            self._port.wait(timeout)
