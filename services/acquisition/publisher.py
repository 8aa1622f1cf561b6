"""Publish the ring buffer's new samples as telemetry batches, one MQTT message per batch.

The ring buffer is the only hand-over between the serial thread and this one: the publisher keeps a
read position and, every `batch_ms`, sends what arrived since, split wherever `seq` is not contiguous
(the contract says a batch's samples are `seq .. seq + n - 1`). It sends right after the first read
that lands at or past each due time (the serial thread calls `notify()`), so a batch's newest sample
is as fresh as the link delivers it rather than up to a whole period old.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from services.acquisition.ring_buffer import RingBuffer, Samples
from services.common import topics
from services.common.telemetry import TelemetryBatch, encode_batch

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], bool]


@dataclass
class PublisherStats:
    batches_published: int = 0
    samples_published: int = 0
    batches_dropped: int = 0  # the MQTT client refused them (disconnected or queue full)
    samples_overrun: int = 0  # overwritten in the ring before this thread read them


def contiguous_runs(samples: Samples, max_samples: int) -> Iterator[Samples]:
    """Split samples where `seq` jumps, and into pieces of at most `max_samples`."""
    breaks = np.flatnonzero(np.diff(samples.seq) != 1) + 1
    bounds = [0, *breaks.tolist(), len(samples.seq)]
    for start, stop in itertools.pairwise(bounds):
        for lo in range(start, stop, max_samples):
            hi = min(lo + max_samples, stop)
            yield Samples(samples.seq[lo:hi], samples.t[lo:hi], samples.data[lo:hi])


class TelemetryPublisher:
    def __init__(
        self,
        ring: RingBuffer,
        publish: Publish,
        *,
        session: str,
        channels: tuple[str, ...],
        rate_hz: Callable[[], float],
        batch_ms: int,
    ) -> None:
        self._ring = ring
        self._publish = publish
        self._session = session
        self._channels = channels
        self._rate_hz = rate_hz
        self._period = batch_ms / 1000.0
        self._max_batch = 50_000  # a late wake-up still sends bounded messages
        self._position = ring.written
        self.stats = PublisherStats()
        self._stop = threading.Event()
        self._fresh = threading.Event()
        self._thread = threading.Thread(target=self._run, name="telemetry-publisher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._fresh.set()
        self._thread.join(timeout=5)
        self.publish_pending()

    def notify(self) -> None:
        """New samples are in the ring (the serial thread, after each append)."""
        self._fresh.set()

    def _run(self) -> None:
        due = time.monotonic() + self._period
        while not self._stop.is_set():
            self._stop.wait(max(0.0, due - time.monotonic()))
            self._fresh.clear()
            self._fresh.wait(self._period)  # nothing read for a whole period: send what there is
            self.publish_pending()
            # fell behind (machine busy): don't try to catch up wake-ups
            due = max(due + self._period, time.monotonic())

    def publish_pending(self) -> None:
        while self._position < self._ring.written:
            skipped, self._position, samples = self._ring.read_from(self._position, self._max_batch)
            if skipped:
                self.stats.samples_overrun += skipped
                log.error(
                    "publisher fell %d samples behind the ring buffer; they were not published", skipped
                )
            for run in contiguous_runs(samples, self._max_batch):
                self._send(run)

    def _send(self, run: Samples) -> None:
        batch = TelemetryBatch(
            session=self._session,
            seq=int(run.seq[0]),
            rate_hz=self._rate_hz(),
            channels=self._channels,
            t=run.t,
            data=run.data,
        )
        if self._publish(topics.TELEMETRY, encode_batch(batch)):
            self.stats.batches_published += 1
            self.stats.samples_published += batch.n
        else:
            self.stats.batches_dropped += 1
