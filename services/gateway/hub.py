"""WebSocket fan-out: one telemetry subscription in, one bounded queue and one sender task per client.

Every client has two queues, drained by its own sender task (so a client that does not read only
ever blocks its own task):

- control: answers, errors and state pushes (`valve_state`, `system_state`, events…). Rare and
  never dropped; if a client lets `control_limit` of them pile up it is disconnected (it is gone).
- stream: `sensor_data`, `sensor_batch`, `sensor_display` frames, at most `limit` of them. When
  full, the OLDEST frame is dropped and counted; before its next stream frame the client gets
  `{"type": "dropped", "count": <dropped since the last notice>, "total": <since connecting>}`.

Frames are built once per batch/tick/message and the same object is queued for every client: a
`sensor_batch` frame is a MessagePack map `{type: "sensor_batch", batch: <bin: the MQTT payload
as received>}`, so the telemetry itself is never re-encoded; clients that chose some channels get
the batch re-encoded with those columns only, once per batch for each distinct choice.

Everything here runs on the event loop thread (the bus calls its listeners there).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack
import numpy as np
import numpy.typing as npt

from services.common.minmax import block_minmax
from services.common.telemetry import TelemetryBatch, encode_batch
from services.gateway.jsonable import jsonable

log = logging.getLogger(__name__)

Frame = bytes | str
Sender = Callable[[Frame], Awaitable[None]]
Mode = Literal["off", "full", "display"]


def encode_json(message: dict[str, Any]) -> str:
    """A control message as JSON text (NaN/inf become null, bytes base64)."""
    return json.dumps(jsonable(message, tag_bytes=True), allow_nan=False, separators=(",", ":"))


def encode_msgpack(message: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


def batch_frame(payload: bytes) -> bytes:
    """`{type: "sensor_batch", batch: <bin payload>}` without copying the payload through msgpack."""
    n = len(payload)
    if n < 0x100:
        header = b"\xc4" + n.to_bytes(1, "big")
    elif n < 0x10000:
        header = b"\xc5" + n.to_bytes(2, "big")
    else:
        header = b"\xc6" + n.to_bytes(4, "big")
    return _BATCH_PREFIX + header + payload


_BATCH_PREFIX: bytes = encode_msgpack({"type": "sensor_batch", "batch": b""})[:-2]  # minus the empty bin


@dataclass
class _Display:
    """A display subscription's pending buckets (one per telemetry batch) since its last frame."""

    names: tuple[str, ...] | None  # None = every channel
    period_s: float
    last_sent: float = -math.inf
    session: str | None = None
    t: list[float] = field(default_factory=list)
    mins: list[npt.NDArray[np.float32]] = field(default_factory=list)
    maxs: list[npt.NDArray[np.float32]] = field(default_factory=list)
    seq_first: int = 0
    seq_next: int = 0
    samples: int = 0

    def reset(self) -> None:
        self.t.clear()
        self.mins.clear()
        self.maxs.clear()
        self.samples = 0


class Client:
    """One connection's outgoing side; `run()` is its sender task."""

    def __init__(self, send: Sender, *, limit: int, control_limit: int = 1024, name: str = "") -> None:
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        self._send = send
        self.limit = limit
        self.control_limit = control_limit
        self.name = name
        self._control: deque[Frame] = deque()
        self._stream: deque[Frame] = deque()
        self._wake = asyncio.Event()
        self._closed = False
        self.mode: Mode = "off"
        self.full_channels: tuple[str, ...] | None = None  # `full` mode: None = every channel
        self.wants_sensor_data = True  # the screen-rate `sensor_data` pushes
        self.display: _Display | None = None
        self.dropped = 0  # stream frames dropped since connecting
        self._unreported = 0  # dropped since the last `dropped` notice
        self.sent = 0
        self.overflowed = False  # control queue overflow: the connection is to be closed

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued(self) -> int:
        return len(self._control) + len(self._stream)

    def push(self, frame: Frame) -> None:
        """A stream frame: when the queue is full the oldest one goes (counted, then told)."""
        if self._closed:
            return
        if len(self._stream) >= self.limit:
            self._stream.popleft()
            self.dropped += 1
            self._unreported += 1
        self._stream.append(frame)
        self._wake.set()

    def push_control(self, frame: Frame) -> None:
        """A control frame: never dropped; too many pending closes the client instead."""
        if self._closed:
            return
        if len(self._control) >= self.control_limit:
            self.overflowed = True
            self.close()
            return
        self._control.append(frame)
        self._wake.set()

    def close(self) -> None:
        """Stop the sender task after the frame it is sending; queued frames are discarded."""
        self._closed = True
        self._control.clear()
        self._stream.clear()
        self._wake.set()

    def _next(self) -> Frame | None:
        if self._control:
            return self._control.popleft()
        if self._unreported:
            count, self._unreported = self._unreported, 0
            return encode_json({"type": "dropped", "count": count, "total": self.dropped})
        if self._stream:
            return self._stream.popleft()
        return None

    async def run(self) -> None:
        """Send queued frames until closed; a send error (connection gone) ends it too."""
        while not self._closed:
            frame = self._next()
            if frame is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._send(frame)
            self.sent += 1


class Hub:
    """The set of connected clients and what every one of them is sent."""

    def __init__(self, *, display_max_hz: float) -> None:
        self.display_max_hz = display_max_hz
        self.clients: set[Client] = set()
        self.batches = 0
        self.full_frames = 0
        self._dropped_by_gone = 0  # stream frames dropped for clients that have disconnected since

    @property
    def dropped_frames(self) -> int:
        """Stream frames dropped for slow clients since the start, connected or gone."""
        return self._dropped_by_gone + sum(client.dropped for client in self.clients)

    def add(self, client: Client) -> None:
        self.clients.add(client)

    def remove(self, client: Client) -> None:
        if client in self.clients:
            self.clients.discard(client)
            self._dropped_by_gone += client.dropped
        client.close()

    def subscribe_full(self, client: Client, names: Iterable[str] | None = None) -> None:
        client.mode = "full"
        client.full_channels = tuple(names) if names is not None else None
        client.display = None

    def subscribe_display(self, client: Client, names: Iterable[str] | None, max_hz: float) -> float:
        """Display mode at min(max_hz, display_max_hz); returns the rate granted."""
        hz = min(max_hz, self.display_max_hz)
        client.mode = "display"
        client.display = _Display(tuple(names) if names is not None else None, 1.0 / hz)
        return hz

    def unsubscribe(self, client: Client) -> None:
        client.mode = "off"
        client.display = None

    def broadcast_control(self, frame: Frame) -> None:
        """A control frame (a state change) for every client."""
        for client in self.clients:
            client.push_control(frame)

    def on_telemetry(self, batch: TelemetryBatch, payload: bytes, now: float | None = None) -> None:
        """One telemetry batch: forwarded as is to `full` clients, reduced for `display` ones."""
        self.batches += 1
        full_frames: dict[tuple[str, ...] | None, bytes] = {}
        reduced: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None = None
        when = time.monotonic() if now is None else now
        for client in self.clients:
            if client.mode == "full":
                frame = full_frames.get(client.full_channels)
                if frame is None:
                    frame = batch_frame(_select(batch, client.full_channels, payload))
                    full_frames[client.full_channels] = frame
                    self.full_frames += 1
                client.push(frame)
            elif client.mode == "display" and client.display is not None:
                if reduced is None:
                    reduced = block_minmax(batch.data)
                self._accumulate(client, client.display, batch, reduced, when)

    def _accumulate(
        self,
        client: Client,
        display: _Display,
        batch: TelemetryBatch,
        reduced: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]],
        now: float,
    ) -> None:
        if display.session != batch.session:
            display.reset()
            display.session = batch.session
        names, columns = (
            (batch.channels, None) if display.names is None else _chosen(batch.channels, display.names)
        )
        low, high = reduced
        if not display.t:
            display.seq_first = batch.seq
        display.t.append(float(batch.t[0]))
        display.mins.append(low if columns is None else low[columns])
        display.maxs.append(high if columns is None else high[columns])
        display.seq_next = batch.next_seq
        display.samples += batch.n
        if now - display.last_sent < display.period_s:
            return
        display.last_sent = now
        frame = encode_msgpack(
            {
                "type": "sensor_display",
                "session": batch.session,
                "channels": list(names),
                "n": len(display.t),
                "samples": display.samples,
                "seq_first": display.seq_first,
                "seq_next": display.seq_next,
                "t": np.asarray(display.t, dtype="<f8").tobytes(),
                "min": np.stack(display.mins).astype("<f4", copy=False).tobytes(),
                "max": np.stack(display.maxs).astype("<f4", copy=False).tobytes(),
            }
        )
        display.reset()
        client.push(frame)


def _select(batch: TelemetryBatch, names: tuple[str, ...] | None, payload: bytes) -> bytes:
    """The batch's payload with only `names` (in that order; unknown ones left out), or as received."""
    if names is None or names == batch.channels:
        return payload
    picked, columns = _chosen(batch.channels, names)
    return encode_batch(
        TelemetryBatch(batch.session, batch.seq, batch.rate_hz, picked, batch.t, batch.data[:, columns])
    )


@functools.lru_cache(maxsize=64)
def _chosen(
    channels: tuple[str, ...], names: tuple[str, ...]
) -> tuple[tuple[str, ...], npt.NDArray[np.intp]]:
    """The subscribed `names` found in `channels` (in the subscription's order) and their column
    indexes; computed once per channel list and choice, not per batch."""
    index = {name: i for i, name in enumerate(channels)}
    picked = tuple(name for name in names if name in index)
    columns = np.array([index[name] for name in picked], dtype=np.intp)
    columns.setflags(write=False)  # shared by every caller
    return picked, columns
