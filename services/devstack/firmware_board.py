"""`stm32.emulator: firmware` (RCS_STM32_EMULATOR=firmware): the STM32 that `make run` starts is the C
firmware core of firmware/, compiled for the host and run behind a pty (firmware in the loop)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from services.common.settings import PROJECT_ROOT, Settings

FIRMWARE = PROJECT_ROOT / "firmware"
PTY_BOARD = Path("build") / "host" / "rcs-fw-pty"


def command(settings: Settings, link: Path) -> list[str]:
    """Build rcs-fw-pty if needed (make, gcc) and return its command line for this stand."""
    try:
        subprocess.run(["make", "-s", "-C", str(FIRMWARE), str(PTY_BOARD)], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(
            f"stm32.emulator is firmware but {FIRMWARE / PTY_BOARD} could not be built ({exc}); "
            "it needs make and gcc (`make gcc-present` installs them)"
        ) from exc
    return [
        str(FIRMWARE / PTY_BOARD),
        "--link",
        str(link),
        "--rate",
        str(round(settings.acquisition.rate_hz)),
        "--channels",
        str(len(settings.measured_channels)),
        "--valves",
        str(len(settings.valves)),
    ]
