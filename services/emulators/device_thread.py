"""What every emulated device has in common: one thread running its loop behind a PtyPort, and
controls that other threads hand to that loop and wait for."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from services.emulators.pty_port import PtyPort

log = logging.getLogger(__name__)

MAX_WAIT_S = 0.02  # the longest a device loop sleeps (bounds how late stop() and controls are seen)
JOIN_TIMEOUT_S = 5.0

Control = Callable[[float], None]  # runs on the device thread with the loop's clock


class DeviceThread:
    """Subclasses implement `_loop()`: `while not self._stopping.is_set(): ... self._run_controls(now)`."""

    def __init__(self, port: PtyPort, name: str) -> None:
        self._port = port
        self._name = name
        self._controls: queue.SimpleQueue[tuple[Control, threading.Event]] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._reconnect_at: float | None = None  # unplugged: when the new pty appears

    @property
    def link_path(self) -> Path:
        return self._port.link_path

    @property
    def device(self) -> str | None:
        """The /dev/pts/N the link points to now; None while unplugged."""
        return self._port.device

    def start(self) -> None:
        """Create the pty and its link (ready to open when this returns) and start the device."""
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        self._port.open()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the device and remove the link; re-raises what ended the thread, if anything."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                # not closing the pty under a loop that still uses it: its descriptors could be
                # reused by anything else; the loop closes the pty itself when it ends
                raise RuntimeError(f"the {self._name} thread did not stop within {JOIN_TIMEOUT_S} s")
        self._port.close()
        if self._error is not None:
            raise RuntimeError(f"the {self._name} thread failed") from self._error

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def disconnect(self, seconds: float) -> None:
        """Unplug: close the pty and remove the link now; a new pty appears behind it after `seconds`
        (the device loop calls `_replug_if_due`)."""

        def unplug(now: float) -> None:
            self._port.close()
            self._reconnect_at = now + seconds

        self._in_loop(unplug)

    def _replug_if_due(self, now: float) -> bool:
        """On the device thread: open the new pty once an unplug's time is over; True when it did."""
        if self._reconnect_at is None or now < self._reconnect_at:
            return False
        self._port.open()
        self._reconnect_at = None
        log.info("%s plugged back in: %s -> %s", self._name, self.link_path, self.device)
        return True

    def _in_loop(self, control: Control) -> None:
        """Run `control(now)` on the device thread and wait until it has."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            raise RuntimeError("the emulator is not running")
        done = threading.Event()
        self._controls.put((control, done))
        while not done.wait(MAX_WAIT_S):
            if not thread.is_alive():
                raise RuntimeError("the emulator stopped before handling the request")

    def _run_controls(self, now: float) -> None:
        while True:
            try:
                control, done = self._controls.get_nowait()
            except queue.Empty:
                return
            control(now)
            done.set()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            self._error = exc
            log.exception("%s failed", self._name)
        finally:
            self._port.close()

    def _loop(self) -> None:
        raise NotImplementedError
