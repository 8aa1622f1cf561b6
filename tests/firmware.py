"""The C firmware core (firmware/) as tests use it: built with its Makefile, run as a board behind a pty.

`FirmwareBoard` runs a program (rcs-fw-pty as `make run` starts it: services.devstack.firmware_board,
or QEMU) whose stdout is the board's console (firmware/host/rcs_fw_pty.c and
the QEMU image print the same lines): `ready <pty>`, then `valves 0x<mask> safe <0|1>` at every
change of the outputs. It exposes `valves` like the Python emulator, so tests take either.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import pytest

from services.common.settings import PROJECT_ROOT

FIRMWARE = PROJECT_ROOT / "firmware"
HOST_BUILD = FIRMWARE / "build" / "host"
QEMU_IMAGE = FIRMWARE / "build" / "m7" / "rcs-fw-mps2.elf"
STOP_TIMEOUT_S = 15.0

_READY = re.compile(r"ready (\S+)")
_VALVES = re.compile(r"valves 0x([0-9a-f]+) safe ([01])")
_QEMU_PTY = re.compile(r"char device redirected to (\S+) \(label serial0\)")


def make_firmware(*targets: str) -> None:
    """`make -C firmware <targets>`; fails the test with the compiler's output if it fails."""
    result = subprocess.run(
        ["make", "-s", "-C", str(FIRMWARE), *targets], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"make -C firmware {' '.join(targets)} failed:\n{result.stdout}{result.stderr}")


@functools.cache
def host_build() -> Path:
    """The host build (unit tests, rcs-fw-pty, librcsfw.so), made once per test session."""
    make_firmware("host")
    return HOST_BUILD


def qemu_board_command() -> list[str]:
    """The Cortex-M7 build under QEMU mps2-an500: UART0 on a pty (the link), UART1 the console."""
    make_firmware("arm")
    return [
        "qemu-system-arm",
        "-M",
        "mps2-an500",
        "-kernel",
        str(QEMU_IMAGE),
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "pty",
        "-serial",
        "stdio",
    ]


class FirmwareBoard:
    """A firmware program behind the pty at `link_path`; its console goes to `log`.

    A program that makes the link itself prints `ready`; for QEMU (`qemu_link=True`) the link is made
    here from QEMU's "char device redirected to /dev/pts/N (label serial0)".
    """

    def __init__(self, command: list[str], link_path: Path, log: Path, *, qemu_link: bool = False) -> None:
        self.link_path = link_path
        self.log = log
        self._command = command
        self._qemu_link = qemu_link
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._valves: int | None = None
        self._safe: bool | None = None
        self._lines: list[str] = []
        self._process: subprocess.Popen[str] | None = None
        self._readers: list[threading.Thread] = []

    @property
    def valves(self) -> int | None:
        """The outputs as the board last reported them (None before its first report)."""
        with self._lock:
            return self._valves

    @property
    def safe(self) -> bool | None:
        with self._lock:
            return self._safe

    def console(self) -> str:
        with self._lock:
            return "\n".join(self._lines)

    def start(self, timeout: float = 30.0) -> None:
        self._process = subprocess.Popen(
            self._command,
            stdin=subprocess.DEVNULL,  # QEMU's `-serial stdio` would otherwise take over a terminal
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=FIRMWARE,
        )
        for stream in (self._process.stdout, self._process.stderr):
            assert stream is not None
            reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
            reader.start()
            self._readers.append(reader)
        if not self._ready.wait(timeout):
            self.stop(check=False)
            pytest.fail(f"{self._command[0]} did not come up:\n{self.console()}")

    def _read(self, stream: IO[str]) -> None:
        for raw in stream:
            line = raw.rstrip("\n")
            with self._lock:
                self._lines.append(line)
                if (valves := _VALVES.search(line)) is not None:
                    self._valves, self._safe = int(valves.group(1), 16), valves.group(2) == "1"
            if self._qemu_link and (pty := _QEMU_PTY.search(line)) is not None:
                staging = self.link_path.with_name(f".{self.link_path.name}.{os.getpid()}")
                staging.unlink(missing_ok=True)
                staging.symlink_to(pty.group(1))
                staging.replace(self.link_path)
                self._ready.set()
            elif not self._qemu_link and _READY.match(line):
                self._ready.set()

    def stop(self, *, check: bool = True) -> None:
        """SIGTERM; with `check`, the program must exit cleanly (a sanitizer report fails it)."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        for reader in self._readers:
            reader.join(STOP_TIMEOUT_S)
        self.log.write_text(self.console())
        if self._qemu_link and self.link_path.is_symlink():
            self.link_path.unlink()
        self._process = None
        if check:
            assert code == 0, f"{self._command[0]} exited with {code}:\n{self.console()}"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop(check=exc_type is None)
