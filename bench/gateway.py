"""Gateway benchmark: sample → WebSocket client latency with 1, 10 and 50 full-rate clients.

Starts its own Mosquitto on a free loopback port (the project's config and ACL, generated logins),
the STM32 emulator (`python -m services.emulators.stm32`, 10 kHz × 22 channels, 10 ms batches),
rcs-acquisition and rcs-gateway (`python -m services.gateway`, as `make run` starts it) as child
processes. The clients are spread over `--client-procs` worker processes (default 4; multiprocessing,
spawn), each a uvloop event loop with its share of the clients (the clients share the 2 cores with
what they measure, so they are kept cheap): the `websockets` library, no compression,
each subscribed `{type: "subscribe", mode: "full", sensor_data: false}` with the viewer token, and per
frame only the newest sample's time is read (no per-sample Python work). The machine has 2 cores,
shared with the broker, the emulator, acquisition and the gateway. The parent sets one measurement
window in UNIX time for every worker; each returns its raw latencies and receive times.
Writes bench/results/gateway.json.

Per `sensor_batch` frame a client receives, stamped with time.time() when `recv()` returns it:

- sample → client: from the UNIX time of the newest sample in the batch (`t[-1]`, the emulator's
  device clock anchored to this host's clock by acquisition) to the client. It includes the
  device's framing (2 ms blocks), acquisition's read coalescing and 10 ms batching (for the newest
  sample: whatever is left of it), the broker, the gateway, and the client workers' own scheduling.
- broker → client: from the moment the parent's own MQTT subscriber (the `operator` login) got
  the same batch from the broker, i.e. mostly the gateway's share (all time.time() on one host).

Gateway CPU % (of one core) is measured from /proc over each measurement window; every client
also checks that it got every batch (contiguous `seq`) and counts `dropped` notices.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import struct
import tempfile
import threading
import time
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import uvloop
from measure import RESULTS, acquiring_stand, cpu_seconds, start_gateway, wait_until
from websockets.asyncio.client import connect

from services.common import topics
from services.common.mqtt import Message, MqttClient

CLIENT_COUNTS = (1, 10, 50)
VIEWER_TOKEN = "bench-viewer-token"
TARGET_P99_MS = 10.0
TIMEOUT_S = 30.0
CLIENT_PROCS = 4
NEWEST_T = struct.Struct("<d")


class BrokerArrivals:
    """When this process's MQTT subscriber received each batch (by seq), time.time()."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.at: dict[int, float] = {}

    def on_batch(self, message: Message) -> None:
        now = time.time()
        seq = msgpack.unpackb(message.payload)["seq"]
        with self.lock:
            self.at[seq] = now
            if len(self.at) > 20_000:
                for old in sorted(self.at)[:10_000]:
                    del self.at[old]


class Tally:
    def __init__(self) -> None:
        self.sample_to_client: list[float] = []
        self.received: list[tuple[int, float]] = []  # (seq, recv time)
        self.frames = 0
        self.gaps = 0
        self.dropped = 0


class Window:
    """The measurement window, UNIX time (time.time()), set by the parent for every worker."""

    def __init__(self) -> None:
        self.start = float("inf")
        self.end = float("inf")


async def client(url: str, tally: Tally, window: Window, ready: asyncio.Event, stop: asyncio.Event) -> None:
    async with connect(url, compression=None, max_size=None, ping_interval=None, max_queue=None) as ws:
        await ws.send(json.dumps({"type": "subscribe", "mode": "full", "sensor_data": False}))
        expected: int | None = None
        ready_set = False
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), 1.0)
            except TimeoutError:
                continue
            now = time.time()
            measuring = window.start <= now < window.end
            if not isinstance(raw, bytes):
                message = json.loads(raw)
                if message.get("type") == "dropped":
                    if measuring:
                        tally.dropped += int(message["count"])
                elif message.get("type") == "subscribed" and not ready_set:
                    ready_set = True
                    ready.set()
                continue
            frame = msgpack.unpackb(raw)
            if frame.get("type") != "sensor_batch":
                continue
            batch = msgpack.unpackb(frame["batch"])  # the MQTT payload, as the broker carried it
            seq, n = batch["seq"], batch["n"]
            if expected is not None and seq != expected and measuring:
                tally.gaps += 1
            expected = seq + n
            if measuring:
                (t_last,) = NEWEST_T.unpack_from(batch["t"], len(batch["t"]) - 8)  # newest sample only
                tally.sample_to_client.append(now - t_last)
                tally.received.append((seq, now))
                tally.frames += 1


async def worker_clients(url: str, count: int, control: Queue[Any], results: Queue[Any]) -> dict[str, Any]:
    """`count` clients on this process's event loop; the window comes from the parent once all are
    subscribed; returns their raw figures (latencies in s, receive times as UNIX time)."""
    tallies = [Tally() for _ in range(count)]
    window = Window()
    stop = asyncio.Event()
    readies = [asyncio.Event() for _ in range(count)]
    tasks = [
        asyncio.create_task(client(url, t, window, r, stop)) for t, r in zip(tallies, readies, strict=True)
    ]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), TIMEOUT_S)
    results.put(("ready", os.getpid()))
    window.start, window.end = await asyncio.to_thread(control.get, True, TIMEOUT_S)
    await asyncio.sleep(max(0.0, window.end - time.time()) + 0.2)
    stop.set()
    await asyncio.gather(*tasks)
    return {
        "sample_to_client": [v for t in tallies for v in t.sample_to_client],
        "received": [r for t in tallies for r in t.received],
        "frames": [t.frames for t in tallies],
        "gaps": sum(t.gaps for t in tallies),
        "dropped": sum(t.dropped for t in tallies),
    }


def worker(url: str, count: int, control: Queue[Any], results: Queue[Any]) -> None:
    """A client worker process (multiprocessing, spawn): its own event loop and its share of clients."""
    results.put(("done", uvloop.run(worker_clients(url, count, control, results))))


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    ms = np.array(values) * 1e3
    return {
        "p50": round(float(np.percentile(ms, 50)), 2),
        "p99": round(float(np.percentile(ms, 99)), 2),
        "max": round(float(ms.max()), 2),
    }


def measure(
    url: str, count: int, *, procs: int, seconds: float, gateway_pid: int, arrivals: BrokerArrivals
) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    procs = max(1, min(procs, count))
    shares = [count // procs + (1 if i < count % procs else 0) for i in range(procs)]
    results: Queue[Any] = ctx.Queue()
    controls: list[Queue[Any]] = [ctx.Queue() for _ in shares]
    workers = [
        ctx.Process(target=worker, args=(url, share, control, results), daemon=True)
        for share, control in zip(shares, controls, strict=True)
    ]
    for process in workers:
        process.start()
    try:
        for _ in workers:
            kind, _pid = results.get(timeout=TIMEOUT_S + 30)
            assert kind == "ready"
        start = time.time() + 1.0  # warm-up
        end = start + seconds
        for control in controls:
            control.put((start, end))
        time.sleep(max(0.0, start - time.time()))
        cpu0, wall0 = cpu_seconds(gateway_pid), time.monotonic()
        time.sleep(max(0.0, end - time.time()))
        cpu1, wall1 = cpu_seconds(gateway_pid), time.monotonic()
        outs = []
        for _ in workers:
            kind, out = results.get(timeout=TIMEOUT_S)
            assert kind == "done"
            outs.append(out)
    finally:
        for process in workers:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
    sample_to_client = [v for o in outs for v in o["sample_to_client"]]
    with arrivals.lock:
        at = dict(arrivals.at)
    broker_to_client = [now - at[seq] for o in outs for seq, now in o["received"] if seq in at]
    frames = [f for o in outs for f in o["frames"]]
    return {
        "clients": count,
        "client_procs": procs,
        "seconds": round(wall1 - wall0, 2),
        "frames_per_client_min": min(frames),
        "frames_per_client_max": max(frames),
        "gaps": sum(o["gaps"] for o in outs),
        "dropped_frames": sum(o["dropped"] for o in outs),
        "sample_to_client_ms": percentiles(sample_to_client),
        "broker_to_client_ms": percentiles(broker_to_client),
        "gateway_cpu_percent": round(100 * (cpu1 - cpu0) / (wall1 - wall0), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement per client count")
    parser.add_argument("--clients", type=int, nargs="*", default=list(CLIENT_COUNTS))
    parser.add_argument(
        "--client-procs",
        type=int,
        default=CLIENT_PROCS,
        help="worker processes the clients are spread over (each its own event loop)",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="rcs-bench-gateway-"))
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        broker, _emulator, _acquisition = acquiring_stand(stack, workdir)
        gateway, http_port = start_gateway(
            stack,
            broker,
            workdir,
            RCS_VIEWER_TOKEN=VIEWER_TOKEN,
            RCS_OPERATOR_TOKEN="bench-operator-token-unused",
        )
        arrivals = BrokerArrivals()
        watcher = MqttClient(broker.settings("operator"), "operator", client_id="rcs-bench-gateway")
        watcher.subscribe(topics.TELEMETRY, arrivals.on_batch, qos=0)
        watcher.start()
        stack.callback(watcher.stop)
        wait_until(lambda: len(arrivals.at) > 100, "telemetry on the broker", TIMEOUT_S)
        url = f"ws://127.0.0.1:{http_port}/ws?token={VIEWER_TOKEN}"

        async def ready() -> None:
            give_up = time.monotonic() + TIMEOUT_S
            while True:
                try:
                    async with connect(url, compression=None):
                        return
                except OSError:
                    if time.monotonic() > give_up:
                        raise
                    await asyncio.sleep(0.2)

        asyncio.run(ready())
        cpu0, wall0 = cpu_seconds(gateway.pid), time.monotonic()
        time.sleep(2.0)
        idle_cpu = round(100 * (cpu_seconds(gateway.pid) - cpu0) / (time.monotonic() - wall0), 1)
        runs = []
        for count in args.clients:
            run = measure(
                url,
                count,
                procs=args.client_procs,
                seconds=args.seconds,
                gateway_pid=gateway.pid,
                arrivals=arrivals,
            )
            runs.append(run)
            print(
                f"{count:3d} clients in {run['client_procs']} procs: "
                f"sample->client p50 {run['sample_to_client_ms']['p50']} ms "
                f"p99 {run['sample_to_client_ms']['p99']} ms, broker->client p50 "
                f"{run['broker_to_client_ms']['p50']} ms p99 {run['broker_to_client_ms']['p99']} ms, "
                f"gateway CPU {run['gateway_cpu_percent']} %, "
                f"gaps {run['gaps']}, dropped {run['dropped_frames']}"
            )
        results = {
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "system": platform.platform(),
            },
            "telemetry": "10 kHz x 22 channels, 10 ms batches (STM32 emulator, binary protocol)",
            "clients_run_as": (
                f"up to {args.client_procs} worker processes (multiprocessing spawn), each a uvloop "
                "event loop with its share of the clients, websockets library, no compression"
            ),
            "client_procs": args.client_procs,
            "gateway_idle_cpu_percent": idle_cpu,
            "runs": runs,
            "target": {"sample_to_client_ms_p99_with_50_clients": TARGET_P99_MS},
        }
    fifty = next((r for r in results["runs"] if r["clients"] == 50), None)
    if fifty is not None:
        p99 = fifty["sample_to_client_ms"]["p99"]
        verdict = "met" if p99 < TARGET_P99_MS else "NOT met"
        print(f"target: sample->client p99 < {TARGET_P99_MS} ms with 50 clients: {p99} ms, {verdict}")
        results["target"]["met"] = bool(p99 < TARGET_P99_MS)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gateway.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS / 'gateway.json'}")


if __name__ == "__main__":
    main()
