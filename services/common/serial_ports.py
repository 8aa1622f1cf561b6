"""Find a device's serial port: the configured path, else by USB VID:PID."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from serial.tools import list_ports
from serial.tools.list_ports_common import ListPortInfo


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
