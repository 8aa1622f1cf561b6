"""Find a device's serial port (the configured path, else by USB VID:PID) and open it for a link thread."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import serial
from serial.tools import list_ports
from serial.tools.list_ports_common import ListPortInfo

from services.common.logs import Throttled

READ_TIMEOUT_S = 0.05  # bounds how late a link thread notices a stop, a deadline or queued work
WRITE_TIMEOUT_S = 0.5  # a device that stops reading is treated as gone


def vid_pid(port: ListPortInfo) -> str | None:
    """`VVVV:PPPP` in upper-case hex, None for a port that is not a USB device."""
    if port.vid is None or port.pid is None:
        return None
    return f"{port.vid:04X}:{port.pid:04X}"


def find_port(
    configured: str | None,
    vid_pids: Iterable[str],
    *,
    prefer: str | None = None,
    ports: Sequence[ListPortInfo] | None = None,
) -> str | None:
    """`configured` if set (it may not exist yet: the caller retries), else the first of `ports`
    (default: the system's) whose VID:PID is in `vid_pids`, one with VID:PID `prefer` first.
    None if nothing matches."""
    if configured:
        return configured
    if ports is None:
        ports = list_ports.comports()
    wanted = {v.upper() for v in vid_pids}
    matches = [p for p in ports if vid_pid(p) in wanted]
    preferred = [p for p in matches if prefer is not None and vid_pid(p) == prefer.upper()]
    best = (preferred or matches)[:1]
    return best[0].device if best else None


def open_serial(
    port: str | None, vid_pids: Sequence[str], baudrate: int, problems: Throttled
) -> tuple[serial.Serial, str] | None:
    """`port` (None: `find_port` found none) opened exclusively with the link timeouts, and its name;
    None, logged once per interval through `problems`, when there is no port or it cannot be opened
    (the link thread retries later)."""
    if port is None:
        problems.warning("no-port", "no serial port with a VID:PID in %s; retrying", ", ".join(vid_pids))
        return None
    try:
        opened = serial.Serial(
            port, baudrate, timeout=READ_TIMEOUT_S, write_timeout=WRITE_TIMEOUT_S, exclusive=True
        )
    except (serial.SerialException, OSError, ValueError) as exc:
        problems.warning("open", "cannot open %s: %s; retrying", port, exc)
        return None
    return opened, port
