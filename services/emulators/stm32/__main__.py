"""rcs-stm32-emulator: the STM32 firmware behind a pseudo-terminal, until SIGINT or SIGTERM.

    rcs-stm32-emulator [--link PATH] [--protocol binary|text] [--rate HZ]

The acquisition service opens PATH (a symlink to the current /dev/pts/N) as it would open the real
board. Everything else comes from stand.yaml and RCS_* variables.
"""

from __future__ import annotations

import logging

from services.common.logs import setup_logging
from services.common.settings import load_settings
from services.emulators.cli import parser_with_link, run_until_stopped
from services.emulators.stm32.emulator import Stm32Emulator

log = logging.getLogger("rcs.emulators.stm32")


def main() -> None:
    settings = load_settings()
    parser = parser_with_link(
        "Emulate the STM32 acquisition board behind a pty", "stm32", settings.stm32.port
    )
    parser.add_argument(
        "--protocol",
        choices=("binary", "text"),
        default="text" if settings.stm32.protocol == "text" else "binary",
        help="binary protocol v1 or the legacy text protocol (default: binary unless stm32.protocol is text)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="samples (binary) or lines (text) per second (default: acquisition.rate_hz, or 50 for text)",
    )
    args = parser.parse_args()
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be positive")
    setup_logging("stm32-emulator", settings.log_level, settings.log_format)

    emulator = Stm32Emulator(settings, link_path=args.link, protocol=args.protocol, rate_hz=args.rate)
    run_until_stopped(
        emulator,
        lambda: log.info(
            "STM32 emulator (%s protocol, %g Hz) on %s -> %s",
            args.protocol,
            emulator.rate_hz,
            emulator.link_path,
            emulator.device,
        ),
        lambda: log.info(
            "stopped: %d samples, %d messages sent, %d dropped",
            emulator.samples_generated,
            emulator.frames_sent,
            emulator.frames_dropped,
        ),
    )


if __name__ == "__main__":
    main()
