"""rcs-watch: subscribe to telemetry and print what arrives, once a second.

Also the continuity checker the end-to-end tests and the benchmark use: it counts samples, checks
that every batch continues the previous one (`seq == previous seq + n`) and measures how old each
batch's newest sample is on arrival.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from services.common import topics
from services.common.codec import WireFormatError
from services.common.mqtt import Message, MqttClient
from services.common.settings import load_settings
from services.common.telemetry import TelemetryBatch, decode_batch


@dataclass
class Continuity:
    """Per-session bookkeeping of received telemetry; thread-safe by a lock."""

    sessions: dict[str, int] = field(default_factory=dict)  # session -> next expected seq
    first_seq: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    batches: int = 0
    gaps: int = 0
    lost_samples: int = 0
    duplicates: int = 0
    malformed: int = 0
    channels: tuple[str, ...] = ()
    latencies_s: list[float] = field(default_factory=list)
    last: TelemetryBatch | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_message(self, message: Message) -> None:
        received = time.time()
        try:
            batch = decode_batch(message.payload)
        except WireFormatError:
            with self._lock:
                self.malformed += 1
            return
        with self._lock:
            self._account(batch, received)

    def _account(self, batch: TelemetryBatch, received: float) -> None:
        expected = self.sessions.get(batch.session)
        if expected is None:
            self.first_seq[batch.session] = batch.seq
        elif batch.seq > expected:
            self.gaps += 1
            self.lost_samples += batch.seq - expected
        elif batch.seq < expected:
            self.duplicates += 1
        self.sessions[batch.session] = max(batch.next_seq, expected or 0)
        self.samples += batch.n
        self.batches += 1
        self.channels = batch.channels
        self.latencies_s.append(received - float(batch.t[-1]))
        self.last = batch

    def snapshot(self) -> Continuity:
        with self._lock:
            return Continuity(
                sessions=dict(self.sessions),
                first_seq=dict(self.first_seq),
                samples=self.samples,
                batches=self.batches,
                gaps=self.gaps,
                lost_samples=self.lost_samples,
                duplicates=self.duplicates,
                malformed=self.malformed,
                channels=self.channels,
                latencies_s=list(self.latencies_s),
                last=self.last,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0 = until Ctrl-C)")
    args = parser.parse_args()
    settings = load_settings()
    client = MqttClient(settings.mqtt, "watch", announce=False)
    continuity = Continuity()
    client.subscribe(topics.TELEMETRY, continuity.on_message)
    client.start()
    started = time.monotonic()
    previous = continuity.snapshot()
    try:
        while not args.seconds or time.monotonic() - started < args.seconds:
            time.sleep(1.0)
            now = continuity.snapshot()
            values = ""
            if now.last is not None:
                row = now.last.data[-1]
                values = "  ".join(f"{c}={v:.4g}" for c, v in zip(now.channels[:6], row[:6], strict=True))
            p99 = np.percentile(now.latencies_s[-1000:], 99) * 1e3 if now.latencies_s else float("nan")
            samples, batches = now.samples - previous.samples, now.batches - previous.batches
            rates = f"{samples:6d} samples/s  {batches:4d} batches/s"
            print(
                f"{rates}  "
                f"gaps={now.gaps} lost={now.lost_samples} dup={now.duplicates} malformed={now.malformed}  "
                f"p99 age={p99:.1f} ms  {values}",
                flush=True,
            )
            previous = now
    except KeyboardInterrupt:
        pass
    finally:
        client.stop()


if __name__ == "__main__":
    main()
