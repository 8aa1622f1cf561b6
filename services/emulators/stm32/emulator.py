"""`Stm32Emulator`: the firmware, the plant and a pty, run by one thread on the wall clock.

Samples are due at `elapsed * rate`; each loop pass generates every whole block that is due, so the
long-run rate is exact however late the thread wakes. Between blocks the thread waits in select() on
the pty, so host commands are answered at once. Faults act on the link, not on the device: while the
link is stalled or unplugged the firmware keeps running (its sample counter advances, its watchdog
trips) and everything it sends is lost.

Fault injection and counters may be used from any thread: fault requests run on the emulator's
thread, and the calling thread waits until they have taken effect.
"""

from __future__ import annotations

import logging
import select
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from services.common.settings import Settings
from services.common.stand_physics import QUANTITIES, Plant, Sensors
from services.emulators.device_thread import MAX_WAIT_S, DeviceThread
from services.emulators.pty_port import PtyPort
from services.emulators.stm32.firmware import (
    LEGACY_TEXT_RATE_HZ,
    BinaryFirmware,
    Firmware,
    TextFirmware,
)

log = logging.getLogger("rcs.emulators.stm32")
TRUTH_BLOCKS = 300_000  # blocks of ground truth kept: 10 minutes of 2 ms blocks


@dataclass(frozen=True, slots=True)
class TruthBlock:
    """One block of samples as the plant made them (before the sensors and the ADC)."""

    first: int  # the device's index of its first sample (= its `seq` while the device never reset)
    n: int
    impulse_ns: float  # ∫ thrust dt over the block, device time
    above: int  # samples with the watched quantity above its threshold (`watch_above`)


class Stm32Emulator(DeviceThread):
    """The STM32 behind a pseudo-terminal at `link_path`, in a thread of this process.

    `rate_hz` defaults to acquisition.rate_hz (binary) or the legacy firmware's 50 lines/s (text).
    Counters: `samples_generated` (device samples, delivered or not), `frames_sent` and
    `frames_dropped` (messages: binary frames or text lines). A message is sent once it is in the
    device's transmit buffer and dropped if it never reaches the host: the buffer overflowed (the
    host does not read), the link was stalled or unplugged, or `drop_frames` asked for it.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        link_path: Path,
        protocol: Literal["binary", "text"] = "binary",
        rate_hz: float | None = None,
        seed: int | None = None,
    ) -> None:
        self._rng = np.random.default_rng(seed)
        self._firmware: Firmware
        if protocol == "binary":
            self._firmware = BinaryFirmware(settings, rate_hz or settings.acquisition.rate_hz)
        else:
            self._firmware = TextFirmware(settings, rate_hz or LEGACY_TEXT_RATE_HZ, self._rng)
        self.protocol = protocol
        self._plant = Plant(settings.valve_names, settings.emulator)
        self._sensors = Sensors(settings.measured_channels, settings.emulator.noise_fraction)
        self._state = self._plant.initial_state()
        super().__init__(PtyPort(link_path), "stm32-emulator")
        self._samples = 0
        self._queued = 0  # messages handed to the port
        self._dropped = 0  # messages that never reached the port
        self._to_drop = 0
        self._to_corrupt = 0
        self._garbage = b""  # goes out just before the next message
        self._stalled_until = float("-inf")
        self._measured_index = {c.name: i for i, c in enumerate(settings.measured_channels)}
        self._overrides: dict[int, float] = {}
        self._receive_taps: list[Callable[[bytes, float], None]] = []
        self._thrust = QUANTITIES.index("THRUST")
        self._watch: tuple[int, float] | None = None  # (quantity, threshold) of watch_above
        self._truth: deque[TruthBlock] = deque(maxlen=TRUTH_BLOCKS)

    @property
    def rate_hz(self) -> float:
        return self._firmware.rate_hz

    @property
    def valves(self) -> int:
        return self._firmware.valves

    @property
    def samples_generated(self) -> int:
        return self._samples

    def watch_above(self, quantity: str, threshold: float) -> None:
        """From now on, count in each block the samples whose `quantity` (of the plant, before the
        sensors: e.g. `P5`) is above `threshold` (`TruthBlock.above`)."""
        self._watch = (QUANTITIES.index(quantity), threshold)

    def truth(self) -> list[TruthBlock]:
        """What the plant did in each block generated (the last `TRUTH_BLOCKS`): the ground truth of
        a report's burn duration and impulse."""
        return list(self._truth)

    @property
    def frames_sent(self) -> int:
        return self._queued - self._port.discarded

    @property
    def frames_dropped(self) -> int:
        return self._dropped + self._port.discarded

    # Fault injection -----------------------------------------------------------------------------

    def inject_garbage(self, nbytes: int) -> None:
        """Put `nbytes` random bytes into the stream, just before the next message."""

        def inject(_now: float) -> None:
            self._garbage += self._rng.bytes(nbytes)

        self._in_loop(inject)

    def corrupt_next_frames(self, k: int) -> None:
        """Damage the next k data messages (a bit flip: binary frames then fail their CRC)."""

        def corrupt(_now: float) -> None:
            self._to_corrupt += k

        self._in_loop(corrupt)

    def drop_frames(self, k: int) -> None:
        """Do not send the next k data messages; their samples are lost, the counter moves on."""

        def drop(_now: float) -> None:
            self._to_drop += k

        self._in_loop(drop)

    def stall(self, seconds: float) -> None:
        """Send nothing and read nothing for `seconds`; what the device produces meanwhile is lost."""

        def hang(now: float) -> None:
            self._stalled_until = now + seconds

        self._in_loop(hang)

    def add_receive_tap(self, tap: Callable[[bytes, float], None]) -> None:
        """Call `tap(data, now)` with every byte the device receives from the host, as it reads it."""
        self._receive_taps.append(tap)

    def override(self, channel: str, value: float | None) -> None:
        """Make a measured channel read `value` (e.g. an over-pressure), or follow the plant again (None)."""
        index = self._measured_index[channel]

        def apply(_now: float) -> None:
            if value is None:
                self._overrides.pop(index, None)
            else:
                self._overrides[index] = value

        self._in_loop(apply)

    # The device loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        firmware = self._firmware
        start = time.monotonic()
        self._send(firmware.boot(start), start)
        while not self._stopping.is_set():
            now = time.monotonic()
            self._run_controls(now)
            self._replug_if_due(now)  # unplugged (`disconnect`), the device stayed powered
            if self._link_up(now):
                self._port.flush()
                received = self._port.read()
                for tap in self._receive_taps:
                    tap(received, now)
                self._send(firmware.receive(received, now), now)
            self._send(firmware.tick(now), now)
            due = int((now - start) * firmware.rate_hz)
            while due - self._samples >= firmware.block_size:
                self._generate(firmware.block_size, now)
            next_block = start + (self._samples + firmware.block_size) / firmware.rate_hz
            self._wait(now, min(next_block - time.monotonic(), MAX_WAIT_S))

    def _generate(self, n: int, now: float) -> None:
        self._state, block = self._plant.advance(self._state, self._firmware.valves, n, 1 / self.rate_hz)
        above = 0 if self._watch is None else int(np.count_nonzero(block[:, self._watch[0]] > self._watch[1]))
        self._truth.append(
            TruthBlock(self._samples, n, float(block[:, self._thrust].sum()) / self.rate_hz, above)
        )
        measured = self._sensors.measure(block, self._rng)
        for index, value in self._overrides.items():
            measured[:, index] = value
        messages = self._firmware.data(self._samples, measured)
        self._samples += n
        for message in messages:
            if self._to_drop:
                self._to_drop -= 1
                self._dropped += 1
                continue
            if self._to_corrupt:
                self._to_corrupt -= 1
                self._send([self._firmware.corrupt(message, self._rng)], now)
            else:
                self._send([message], now)

    def _send(self, messages: list[bytes], now: float) -> None:
        for message in messages:
            if self._link_up(now) and self._port.write(self._garbage + message):
                self._queued += 1
                self._garbage = b""
            else:
                self._dropped += 1

    def _link_up(self, now: float) -> bool:
        return self._port.is_open and now >= self._stalled_until

    def _wait(self, now: float, timeout: float) -> None:
        """Sleep for `timeout`, or until the host writes something while the link is up."""
        if timeout <= 0:
            return
        if self._link_up(now):
            select.select([self._port.fileno()], [], [], timeout)
        else:
            self._stopping.wait(timeout)
