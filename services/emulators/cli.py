"""What the emulators' command lines share: the `--link` option and running until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from services.common.lifecycle import stop_requested, wait_for


class Startable(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


def parser_with_link(description: str, board: str, configured_port: str | None) -> argparse.ArgumentParser:
    """A parser with `--link`: the pty symlink for the host to open, by default the board's configured
    port (RCS_<BOARD>_PORT), else ./run/<board>."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--link",
        type=Path,
        default=Path(configured_port) if configured_port else Path("run") / board,
        help="symlink to create for the host to open "
        f"(default: $RCS_{board.upper()}_PORT, else ./run/{board})",
    )
    return parser


def run_until_stopped(emulator: Startable, started: Callable[[], None], stopped: Callable[[], None]) -> None:
    """Start `emulator`, call `started`, wait for SIGINT/SIGTERM, then stop it and call `stopped`."""
    stop = stop_requested()
    emulator.start()
    started()
    try:
        wait_for(stop)
    finally:
        emulator.stop()
        stopped()
