"""Find the STM32's serial port: the configured path, else by USB VID:PID, native USB first."""

from __future__ import annotations

from collections.abc import Sequence

from serial.tools.list_ports_common import ListPortInfo

from services.common.serial_ports import find_port
from services.common.settings import Settings

# The firmware's own USB CDC device. Preferred over an ST-Link's virtual COM port, which is only a
# UART bridge (slower, and present whenever the debugger is plugged in, firmware running or not).
NATIVE_USB_VID_PID = "0483:5740"


def find_stm32_port(settings: Settings, ports: Sequence[ListPortInfo] | None = None) -> str | None:
    return find_port(settings.stm32.port, settings.stm32.vid_pids, prefer=NATIVE_USB_VID_PID, ports=ports)
