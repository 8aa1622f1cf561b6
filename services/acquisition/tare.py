"""Tare: zero chosen measured channels from the mean of their last seconds in the ring buffer.

`Offsets` is what the sample path subtracts from every sample (calibrated values, before the derived
channels are computed, so ISP, D1, D2, IMPULSE and VELOCITY derive from tared inputs). Each version
of the offsets is remembered with the first `seq` it applied to, so the ring buffer's *untared*
values can be recovered whatever tares happened inside the window. `TareBook` serves
`rcs/rpc/acquisition/tare` (actuation only: it decides whether the stand may be tared), keeps the
entries, persists them (tare_file.py) before applying them, and has the telemetry meta republished.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.acquisition import tare_file
from services.acquisition.ring_buffer import RingBuffer, Samples
from services.acquisition.tare_file import TareEntry, TareFileError
from services.common.rpc import RpcError
from services.common.settings import Settings

log = logging.getLogger("rcs.acquisition")

MIN_SECONDS = 0.1
MAX_SECONDS = 30.0
FRESH_S = 2.0  # the last block must have arrived this recently: an old window would be a wrong zero
_HISTORY = 256  # offset versions remembered (each tare is one)
TARER = "actuation"  # the only login whose tare requests are served (mosquitto/acl says the same)


class Offsets:
    """The offsets (one per channel, 0 for untared and derived channels) the sample path subtracts.

    `set` (any thread) asks for new offsets; the sample path takes them at its next block
    (`for_block`, the serial link's thread only) and records from which `seq` they apply.
    """

    def __init__(self, n_channels: int) -> None:
        self._lock = threading.Lock()
        self._wanted: npt.NDArray[np.float64] = np.zeros(n_channels)
        self._applied: npt.NDArray[np.float64] | None = None
        self._starts: list[int] = []  # first seq of each version, ascending
        self._versions: list[npt.NDArray[np.float64]] = []

    def set(self, offsets: npt.NDArray[np.float64]) -> None:
        wanted = offsets.astype(np.float64, copy=True)
        wanted.setflags(write=False)
        self._wanted = wanted  # one reference assignment: the sample path sees old or new

    def for_block(self, first_seq: int) -> npt.NDArray[np.float64]:
        """The offsets for the block starting at `first_seq`."""
        wanted = self._wanted
        if wanted is not self._applied:
            with self._lock:
                self._starts.append(first_seq)
                self._versions.append(wanted)
                del self._starts[:-_HISTORY], self._versions[:-_HISTORY]
            self._applied = wanted
        return wanted

    def untared(self, samples: Samples, columns: list[int]) -> npt.NDArray[np.float64]:
        """`samples.data[:, columns]` as they were before the offsets of their time were subtracted."""
        with self._lock:
            starts = np.array(self._starts, dtype=np.int64)
            table = np.vstack([np.zeros(len(self._wanted)), *self._versions])[:, columns]
        version = np.searchsorted(starts, samples.seq, side="right")  # 0: before any (no offsets)
        return samples.data[:, columns].astype(np.float64) + table[version]


class TareBook:
    """The tared channels, their file, and the tare request's handler."""

    def __init__(
        self,
        settings: Settings,
        ring: RingBuffer,
        offsets: Offsets,
        on_change: Callable[[], None],
        appended_at: Callable[[], float | None],
    ) -> None:
        """`appended_at`: time.monotonic() of the last block put in the ring (None: none yet)."""
        self._appended_at = appended_at
        self._ring = ring
        self._offsets = offsets
        self._on_change = on_change
        self._path: Path = settings.tare_file
        self._channels = settings.channel_names
        self._units = {c.name: c.unit for c in settings.channels}
        self._measured = frozenset(c.name for c in settings.measured_channels)
        self._lock = threading.Lock()
        self.entries: dict[str, TareEntry] = {}
        self.load_error: str | None = None

    def load(self) -> None:
        """The persisted tare, applied; a bad file is one ERROR line and no tare (the checklist's
        `tare_recent` then says so), never a crash: acquisition must run to keep the stand safe."""
        try:
            self.entries = tare_file.load(self._path, self._measured)
        except TareFileError as exc:
            self.load_error = str(exc)
            log.error("tare file ignored, every channel untared: %s", exc)
            return
        self._offsets.set(self._vector(self.entries))
        if self.entries:
            log.info("tare from %s: %s", self._path, self._describe(self.entries))

    def meta(self) -> dict[str, Any]:
        """The telemetry meta's `tare`: `{channel: {offset, unit, at, by, seconds, samples}}`."""
        with self._lock:
            return {name: asdict(entry) for name, entry in self.entries.items()}

    def tare(self, request: dict[str, Any]) -> dict[str, Any]:
        """`rcs/rpc/acquisition/tare` `{channels, seconds, clear, who}` (docs/protocol.md)."""
        if request.get("login") != TARER:
            raise RpcError(f"only {TARER} may tare acquisition: send rcs/rpc/actuation/tare")
        channels = self._channel_list(request.get("channels"))
        clear = request.get("clear", False)
        if not isinstance(clear, bool):
            raise RpcError("'clear' must be true or false")
        who = request.get("who")
        by = who[:200] if isinstance(who, str) and who else TARER
        with self._lock:
            entries = dict(self.entries)
            if clear:
                for name in channels:
                    entries.pop(name, None)
                samples = 0
            else:
                seconds = _seconds(request.get("seconds", 2.0))
                means, samples = self._means(channels, seconds)
                now = time.time()
                for name, mean in zip(channels, means, strict=True):
                    entries[name] = TareEntry(mean, self._units[name], now, by, seconds, samples)
            try:
                tare_file.save(self._path, entries)
            except OSError as exc:
                raise RpcError(f"tare not applied: cannot write {self._path}: {exc.strerror or exc}") from exc
            self.entries = entries
            self._offsets.set(self._vector(entries))
            self.load_error = None
        log.info("tare %s by %s: %s", "cleared" if clear else "set", by, self._describe(entries))
        self._on_change()
        return {
            "channels": channels,
            "cleared": clear,
            "samples": samples,
            "tare": self.meta(),
            "file": str(self._path),
        }

    def _channel_list(self, value: Any) -> list[str]:
        if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
            raise RpcError("'channels' must be a non-empty list of channel names")
        if len(value) > len(self._channels):
            raise RpcError(f"'channels': at most {len(self._channels)} names")
        unknown = [c for c in value if c not in self._channels]
        if unknown:
            raise RpcError(f"'channels': unknown channels {unknown[:5]}")
        derived = [c for c in value if c not in self._measured]
        if derived:
            raise RpcError(
                f"'channels': {derived} are derived on the host: tare the channels they derive from"
            )
        return list(dict.fromkeys(value))

    def _means(self, channels: list[str], seconds: float) -> tuple[list[float], int]:
        """Each channel's mean untared value over the newest `seconds` of the ring buffer."""
        appended_at = self._appended_at()
        if appended_at is None:
            raise RpcError("no samples received: is the STM32 connected?")
        if time.monotonic() - appended_at > FRESH_S:
            age = time.monotonic() - appended_at
            raise RpcError(f"no samples received for {age:.1f} s: is the STM32 connected?")
        samples = self._ring.last_seconds(seconds, self._ring.capacity)
        n = len(samples.t)
        held = float(samples.t[-1] - samples.t[0])
        if held < seconds / 2:
            raise RpcError(f"only {held:.2f} s of samples held, {seconds:g} s asked: try again later")
        columns = [self._channels.index(c) for c in channels]
        with np.errstate(all="ignore"):
            means = np.nanmean(self._offsets.untared(samples, columns), axis=0)
        undefined = [c for c, m in zip(channels, means.tolist(), strict=True) if not math.isfinite(m)]
        if undefined:
            raise RpcError(f"no finite samples of {undefined} in the last {seconds:g} s")
        return [float(m) for m in means], n

    def _vector(self, entries: dict[str, TareEntry]) -> npt.NDArray[np.float64]:
        vector = np.zeros(len(self._channels))
        for name, entry in entries.items():
            vector[self._channels.index(name)] = entry.offset
        return vector

    @staticmethod
    def _describe(entries: dict[str, TareEntry]) -> str:
        return ", ".join(f"{n} {e.offset:+.4g} {e.unit}" for n, e in sorted(entries.items())) or "none"


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RpcError("'seconds' must be a number")
    if not MIN_SECONDS <= value <= MAX_SECONDS:
        raise RpcError(f"'seconds' must be within {MIN_SECONDS:g} and {MAX_SECONDS:g}")
    return float(value)
