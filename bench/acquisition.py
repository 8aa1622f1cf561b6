"""Acquisition benchmark: 10 kHz x 22 channels through a real pty for 60 s.

Starts its own Mosquitto on a free loopback port, the STM32 emulator and rcs-acquisition as separate
processes, subscribes to telemetry, and reports samples/s delivered on MQTT, gaps, acquisition CPU %
of one core, the age of each batch's newest sample when it reaches a subscriber (device sample time
to delivery: serial, decode, ring, publish and broker hop), and bytes on the wire.
Writes bench/results/acquisition.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from measure import RESULTS, cpu_seconds

from services.common import topics
from services.common.mqtt import Message, MqttClient
from services.devstack.broker import Broker, free_port
from services.devstack.watch import Continuity


def run(seconds: float, protocol: str) -> dict[str, Any]:
    broker = Broker(port=free_port())
    broker.start()
    workdir = Path(tempfile.mkdtemp(prefix="rcs-bench-"))
    link = workdir / "stm32"
    env = dict(
        os.environ,
        RCS_MQTT_HOST="127.0.0.1",
        RCS_MQTT_PORT=str(broker.port),
        RCS_MQTT_USERNAME="acquisition",
        RCS_MQTT_PASSWORD=broker.credentials["acquisition"],
        RCS_STM32_PORT=str(link),
        RCS_DATA_DIR=str(workdir),
        RCS_ACQUISITION_METRICS_PORT="0",
    )
    emulator = subprocess.Popen(
        [sys.executable, "-m", "services.emulators.stm32", "--link", str(link), "--protocol", protocol],
        env=env,
    )
    acquisition = subprocess.Popen([sys.executable, "-m", "services.acquisition"], env=env)
    continuity = Continuity()
    wire_bytes = 0

    def on_telemetry(message: Message) -> None:
        nonlocal wire_bytes
        wire_bytes += len(message.payload)
        continuity.on_message(message)

    client = MqttClient(broker.settings("operator"), "operator")
    client.subscribe(topics.TELEMETRY, on_telemetry)
    client.start()
    try:
        deadline = time.monotonic() + 30
        while continuity.snapshot().samples == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("no telemetry within 30 s")
            time.sleep(0.1)
        time.sleep(2.0)  # let start-up settle before measuring
        start = continuity.snapshot()
        start_bytes, start_cpu, t0 = wire_bytes, cpu_seconds(acquisition.pid), time.monotonic()
        emulator_cpu0 = cpu_seconds(emulator.pid)
        time.sleep(seconds)
        end = continuity.snapshot()
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(acquisition.pid) - start_cpu
        emulator_cpu = cpu_seconds(emulator.pid) - emulator_cpu0
        ages_ms = np.array(end.latencies_s[len(start.latencies_s) :]) * 1e3
        return {
            "benchmark": "acquisition",
            "protocol": protocol,
            "seconds": round(elapsed, 2),
            "channels": len(end.channels),
            "samples_per_s": round((end.samples - start.samples) / elapsed, 1),
            "batches_per_s": round((end.batches - start.batches) / elapsed, 1),
            "gaps": end.gaps - start.gaps,
            "lost_samples": end.lost_samples - start.lost_samples,
            "duplicates": end.duplicates - start.duplicates,
            "acquisition_cpu_percent_of_one_core": round(100 * cpu / elapsed, 1),
            "emulator_cpu_percent_of_one_core": round(100 * emulator_cpu / elapsed, 1),
            "sample_to_subscriber_ms_p50": round(float(np.percentile(ages_ms, 50)), 2),
            "sample_to_subscriber_ms_p99": round(float(np.percentile(ages_ms, 99)), 2),
            "mqtt_payload_bytes_per_s": round((wire_bytes - start_bytes) / elapsed),
            "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        }
    finally:
        client.stop()
        for process in (acquisition, emulator):
            process.send_signal(signal.SIGTERM)
        for process in (acquisition, emulator):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        broker.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--protocol", choices=("binary", "text"), default="binary")
    args = parser.parse_args()
    result = run(args.seconds, args.protocol)
    for key, value in result.items():
        print(f"{key:40s} {value}")
    RESULTS.mkdir(exist_ok=True)
    name = "acquisition.json" if args.protocol == "binary" else f"acquisition-{args.protocol}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
