"""rcs-arduino-emulator: the step-motor Arduino behind a pseudo-terminal, until SIGINT or SIGTERM.

    rcs-arduino-emulator [--link PATH] [--speed-factor X]

The actuation service opens PATH (a symlink to the current /dev/pts/N) as it would open the real
board; each open resets the emulated board, as DTR resets a Uno. Everything else comes from
stand.yaml and RCS_* variables.
"""

from __future__ import annotations

import logging
import math

from services.common.logs import setup_logging
from services.common.settings import load_settings
from services.emulators.arduino.emulator import ArduinoEmulator
from services.emulators.cli import parser_with_link, run_until_stopped

log = logging.getLogger("rcs.emulators.arduino")


def main() -> None:
    settings = load_settings()
    parser = parser_with_link(
        "Emulate the step-motor Arduino Uno behind a pty", "arduino", settings.arduino.port
    )
    parser.add_argument(
        "--speed-factor",
        type=float,
        default=1.0,
        help="run every firmware duration this many times faster (default 1: the real timing)",
    )
    args = parser.parse_args()
    if not (math.isfinite(args.speed_factor) and args.speed_factor > 0):
        parser.error("--speed-factor must be a positive number")
    setup_logging("arduino-emulator", settings.log_level, settings.log_format)

    emulator = ArduinoEmulator(settings, link_path=args.link, speed_factor=args.speed_factor)
    run_until_stopped(
        emulator,
        lambda: log.info(
            "Arduino emulator (speed x%g) on %s -> %s",
            emulator.speed_factor,
            emulator.link_path,
            emulator.device,
        ),
        lambda: log.info(
            "stopped: %d resets, %d lines sent, %d lost while no host had the port open",
            emulator.resets,
            emulator.lines_sent,
            emulator.lines_lost,
        ),
    )


if __name__ == "__main__":
    main()
