"""Actuation benchmark: valve-command latency and red-line abort latency, through the whole stand.

Starts its own Mosquitto on a free loopback port (the project's config and ACL, generated logins), the
STM32 and Arduino emulators in this process, rcs-acquisition and rcs-actuation as child processes
logged in as their own users, and an operator client (the `operator` login) that sends heartbeats
and commands actuation over request/response. Writes bench/results/actuation.json.

One clock. The STM32 emulator runs in a thread of this process and its receive tap gets `now` =
time.monotonic() of the emulator's loop pass that read the bytes (taken when select() woke it for
them), so every time below is this process's monotonic clock and the figures need no clock sync.
Broker traffic is also watched by the operator client (the `operator` login may read everything):
the arrival of a message there is "seen on the broker", i.e. as a third subscriber gets it, in
parallel with the service it is meant for.

1. Command latency. `--commands` requests `valves`, alternating "000000110" (GOX2 + FUEL2, the run
   valves: no interlock while idle) and "000000000", one at a time, with a random 5..15 ms pause,
   after 10 unmeasured warm-up commands. Measured from just before the request is handed to the MQTT
   client (a subclass of MqttClient stamps the publish; RpcClient's own bookkeeping is before it)
   to the emulator reading the SET_VALVES frame carrying the command's `cmd_no` (its mask is
   checked). Round trip: the same start to the reply resolving the request's future (paho's thread).
   Hops: request -> actuation's `rcs/stm32/cmd/valves` seen on the broker -> SET_VALVES at the
   device -> acquisition's `rcs/stm32/valve_ack` seen on the broker -> reply. (The bench watches
   these topics with QoS 0, so that it sends no PUBACKs of its own beside those of its replies.)

2. Abort latency. Stand armed (heartbeats running), run valves open, then
   `emulator.override("P5", 30.0)` (red-line: P5 above 25 bar for 10 ms). From the emulator's code:
   the override is applied by the first loop pass that handles requests after the call, and affects
   every block generated from that pass on; a block (one SAMPLES frame, 20 samples = 2 ms) is
   generated once all its samples are due, so the first over-limit sample was taken up to 2 ms
   before the frame is written. The receive tap records, for every loop pass, its `now` and the
   device's sample counter before the pass generates, which gives the index of the first over-limit
   sample and when each frame went out; the bench's telemetry subscriber gives the `seq` of the
   first over-limit sample, and `seq - counter` must be the same for every abort (checked: it
   proves the attribution). Nominal sample times = the emulator's start (estimated from the passes
   to within its wake-up lag, ~0.1 ms: sample times come out that much late) + index / rate.
   The abort latency is measured from the nominal time of the first over-limit sample to the
   emulator reading the abort's first SET_VALVES (mask 0). It includes the 10 ms persistence (100
   samples; the trip is the 100th), the rest of the trip sample's 2 ms frame, acquisition's read
   coalescing (4 ms) and 10 ms batching, the broker, actuation's red-line check, the command back
   through the broker to acquisition and the pty. Also reported: from the trip sample, from the
   override() call, and the hops trip sample -> batch with it at the bench's subscriber -> abort
   command seen on the broker -> SET_VALVES at device. The issue's target ("red-line sample ->
   go-safe bytes", p99 < 20 ms) is checked from the trip sample, the one that makes the red-line
   fire; from the first over-limit sample the stand's configured persistence adds to it. After
   each abort the bench waits for idle, removes the override, waits for in-limit telemetry and
   re-arms. The emergency sequence's waits (7.4 s) are scaled by ABORT_WAIT_SCALE in a temp copy
   of config/stand.yaml (patterns kept) used by both services and this process (RCS_CONFIG): only
   the abort's first write is measured.

3. CPU % of one core of actuation and acquisition during the command phase (from /proc), with a
   2 s idle baseline (telemetry flowing, no commands) before it.

With K = 20 aborts, p99 is the second-largest value interpolated towards the largest.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import functools
import json
import os
import platform
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml
from measure import RESULTS, Child, bench_workdir, cpu_seconds, service, wait_until
from paho.mqtt.properties import Properties

from services.actuation.redlines import samples_needed
from services.actuation.valve_map import ValveMap
from services.common import topics
from services.common.codec import WireFormatError, unpack_map
from services.common.heartbeat import Heartbeats
from services.common.mqtt import Message, MqttClient
from services.common.rpc import RpcClient
from services.common.settings import DEFAULT_CONFIG, Settings, load_settings
from services.common.stm32_wire import Deframer, FrameError, SetValvesFrame, parse_frame
from services.common.telemetry import decode_batch
from services.devstack.broker import Broker, free_port
from services.emulators.arduino import ArduinoEmulator
from services.emulators.stm32 import Stm32Emulator

PATTERNS = ("000000110", "000000000")  # run valves open / all closed: allowed while idle
WARMUP_COMMANDS = 10
ABORT_WAIT_SCALE = 0.05  # the emergency sequence's waits, in the temp config (7.4 s -> 0.37 s)
REDLINE_CHANNEL = "P5"
OVER_LIMIT_VALUE = 30.0
TARGETS_MS = {"command_latency_ms_p99": 5.0, "abort_after_trip_sample_ms_p99": 20.0}
TIMEOUT_S = 20.0
WHO = {"who": "bench", "origin": "bench/actuation.py"}


def stats_ms(values: list[float], name: str, *, max_too: bool = True) -> dict[str, float]:
    ms = np.array(values) * 1e3
    out = {
        f"{name}_p50": round(float(np.percentile(ms, 50)), 2),
        f"{name}_p99": round(float(np.percentile(ms, 99)), 2),
    }
    if max_too:
        out[f"{name}_max"] = round(float(ms.max()), 2)
    return out


def _wait(predicate: Callable[[], object], what: str, timeout: float = TIMEOUT_S) -> None:
    wait_until(predicate, what, timeout, poll_s=0.002)


# --- the stand's configuration, with a short abort -------------------------------------------------


def write_short_config(directory: Path) -> Path:
    """config/stand.yaml with the abort sequence's waits scaled by ABORT_WAIT_SCALE (same patterns),
    and a checklist the bench's stand (no logger, no gateway, no tare) satisfies: the STM32 and the
    valves (the go/no-go checklist is not what is measured)."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["checklist"] = [
        {"id": "stm32", "kind": "stm32_connected"},
        {"id": "valves-closed", "kind": "valves_closed"},
    ]
    for sequence in config["sequences"].values():
        if sequence.get("abort"):
            for step in sequence["steps"]:
                if step.get("wait_ms"):
                    step["wait_ms"] = max(1, round(step["wait_ms"] * ABORT_WAIT_SCALE))
    path = directory / "stand-short-abort.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# --- what the device received, and when ----------------------------------------------------------


@dataclass(frozen=True)
class DeviceWrite:
    at: float  # the emulator's monotonic `now` of the pass that read it
    cmd_no: int
    mask: int


class DeviceTap:
    """The emulator's receive tap: SET_VALVES frames, and (while recording) every loop pass.

    Runs on the emulator's thread, once per loop pass, after the pass handled fault requests and
    before it generates sample blocks: `samples_generated` read here counts the blocks of earlier
    passes only.
    """

    def __init__(self, emulator: Stm32Emulator) -> None:
        self._emulator = emulator
        self._rate = emulator.rate_hz
        self._deframer = Deframer()
        self._lock = threading.Lock()
        self._writes: list[DeviceWrite] = []
        self._passes: list[tuple[float, int]] = []  # (now, samples generated before this pass)
        self._recording = False
        self._previous_now: float | None = None
        self.start_estimate = float("inf")  # the emulator's start: sample i is due at start + i / rate
        emulator.add_receive_tap(self._on_receive)

    def _on_receive(self, data: bytes, now: float) -> None:
        samples = self._emulator.samples_generated
        if self._previous_now is not None:  # the previous pass generated only samples already due
            self.start_estimate = min(self.start_estimate, self._previous_now - samples / self._rate)
        self._previous_now = now
        writes = []
        for body in self._deframer.feed(data) if data else ():
            try:
                frame = parse_frame(body)
            except FrameError:
                continue
            if isinstance(frame, SetValvesFrame):
                writes.append(DeviceWrite(now, frame.cmd_no, frame.valves))
        with self._lock:
            self._writes += writes
            if self._recording:
                self._passes.append((now, samples))

    def record_passes(self, on: bool) -> None:
        with self._lock:
            self._recording = on

    def write(
        self, after: float, *, cmd_no: int | None = None, mask: int | None = None
    ) -> DeviceWrite | None:
        """The first SET_VALVES read at or after `after` matching `cmd_no` and `mask`."""
        with self._lock:
            return next(
                (
                    w
                    for w in self._writes
                    if w.at >= after and cmd_no in (None, w.cmd_no) and mask in (None, w.mask)
                ),
                None,
            )

    def after(self, write: DeviceWrite) -> list[DeviceWrite]:
        """Every SET_VALVES read after `write` (in the order read; the same pass may read several)."""
        with self._lock:
            return self._writes[self._writes.index(write) + 1 :]

    def passes(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """(now, samples generated before the pass) of every pass recorded, in order."""
        with self._lock:
            snapshot = list(self._passes)
        return (
            np.array([p[0] for p in snapshot], dtype=np.float64),
            np.array([p[1] for p in snapshot], dtype=np.int64),
        )


# --- what the operator sees on the broker -------------------------------------------------------


class TimedMqttClient(MqttClient):
    """An MqttClient that notes when a request was handed to paho (just before it is published)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request_published_at: dict[str, float] = {}

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> bool:
        if topic.startswith("rcs/rpc/"):
            self.request_published_at[topic] = time.monotonic()
        return super().publish(topic, payload, qos=qos, retain=retain, properties=properties)


@dataclass(frozen=True)
class Seen:
    at: float
    body: dict[str, Any]


class BrokerWatch:
    """Messages of some topics as they reach this client, with their arrival times."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, list[Seen]] = {}
        self.latest_state: dict[str, Any] = {}

    def on_message(self, message: Message) -> None:
        at = time.monotonic()
        try:
            body = unpack_map(message.payload)
        except WireFormatError:
            return
        with self._lock:
            self._seen.setdefault(message.topic, []).append(Seen(at, body))
            if message.topic == topics.STATE_SYSTEM:
                self.latest_state = body

    def first(self, topic: str, after: float, key: str, value: object) -> Seen | None:
        """The first message on `topic` that arrived at or after `after` with `key` == `value`."""
        with self._lock:
            return next(
                (s for s in self._seen.get(topic, []) if s.at >= after and s.body.get(key) == value), None
            )

    def state(self) -> str:
        with self._lock:
            return str(self.latest_state.get("state"))


@dataclass(frozen=True)
class BatchSeen:
    at: float
    seq: int
    n: int
    first_over: int | None  # index in the batch of the first sample beyond the red-line, if any


class TelemetryWatch:
    """Per telemetry batch: arrival time, seq, n, and where the red-line channel first exceeds its limit."""

    def __init__(self, channel: str, limit: float) -> None:
        self._channel, self._limit = channel, limit
        self._lock = threading.Lock()
        self._batches: list[BatchSeen] = []
        self._arrivals: list[float] = []  # in order: bisect instead of scanning (this shares the GIL)

    def on_message(self, message: Message) -> None:
        at = time.monotonic()
        batch = decode_batch(message.payload)
        over = batch.data[:, batch.channels.index(self._channel)] > self._limit
        first = int(np.argmax(over)) if over.any() else None
        with self._lock:
            self._batches.append(BatchSeen(at, batch.seq, batch.n, first))
            self._arrivals.append(at)

    def since(self, after: float) -> list[BatchSeen]:
        with self._lock:
            return self._batches[bisect.bisect_left(self._arrivals, after) :]

    def in_limit_batches(self, after: float, count: int) -> bool:
        """At least `count` batches arrived since `after` without a sample beyond the limit."""
        return sum(b.first_over is None for b in self.since(after)) >= count


# --- the measurements ------------------------------------------------------------------------------


@dataclass
class Stand:
    settings: Settings
    stm32: Stm32Emulator
    tap: DeviceTap
    operator: TimedMqttClient
    rpc: RpcClient
    watch: BrokerWatch
    valves: ValveMap
    acquisition: Child
    actuation: Child

    def call(self, command: str, **body: Any) -> dict[str, Any]:
        return self.rpc.call(topics.actuation(command), {**body, **WHO}, timeout=5.0)


def measure_commands(stand: Stand, n: int, rng: random.Random) -> dict[str, Any]:
    topic = topics.actuation("valves")
    latency, round_trip, to_broker, broker_to_device, device_to_ack, ack_to_reply = [], [], [], [], [], []
    idle_s = 2.0
    services = (stand.actuation, stand.acquisition)
    cpu0 = {s.name: cpu_seconds(s.pid) for s in services}
    time.sleep(idle_s)  # the idle baseline: telemetry flowing, no commands
    idle = {s.name: cpu_seconds(s.pid) - cpu0[s.name] for s in services}
    cpu1, started = cpu0, 0.0
    for i in range(WARMUP_COMMANDS + n):
        if i == WARMUP_COMMANDS:
            cpu1, started = {s.name: cpu_seconds(s.pid) for s in services}, time.monotonic()
        pattern = PATTERNS[i % 2]
        mask = stand.valves.parse(pattern)
        replied = threading.Event()
        replied_at: list[float] = []

        def on_reply(
            _future: object, replied: threading.Event = replied, at: list[float] = replied_at
        ) -> None:
            at.append(time.monotonic())
            replied.set()

        future = stand.rpc.request(topic, {"valves": pattern, **WHO}, timeout=2.0)
        published = stand.operator.request_published_at[topics.request(topic, stand.operator.login)]
        future.add_done_callback(on_reply)
        if not replied.wait(5.0):
            raise RuntimeError(f"no reply to command {i}")
        if future.result()["bits"] != pattern:
            raise RuntimeError(f"command {i}: reply {future.result()} for {pattern}")

        sent = functools.partial(stand.watch.first, topics.STM32_VALVES, published, "mask", mask)
        _wait(sent, f"command {i} on the broker", timeout=2.0)
        command = sent()
        assert command is not None
        written = stand.tap.write(published, cmd_no=command.body["cmd_no"])
        if written is None or written.mask != mask:
            raise RuntimeError(f"command {i}: {command.body} not seen at the device")
        acked = functools.partial(
            stand.watch.first, topics.STM32_VALVE_ACK, published, "cmd_no", written.cmd_no
        )
        _wait(acked, f"the acknowledgement of command {i} on the broker", timeout=2.0)
        ack = acked()
        assert ack is not None
        if i >= WARMUP_COMMANDS:
            latency.append(written.at - published)
            round_trip.append(replied_at[0] - published)
            to_broker.append(command.at - published)
            broker_to_device.append(written.at - command.at)
            device_to_ack.append(ack.at - written.at)
            ack_to_reply.append(replied_at[0] - ack.at)
        time.sleep(rng.uniform(0.005, 0.015))
    elapsed = time.monotonic() - started
    cpu2 = {s.name: cpu_seconds(s.pid) for s in services}
    return {
        "commands": n,
        **stats_ms(latency, "command_latency_ms"),
        **stats_ms(round_trip, "command_round_trip_ms"),
        **stats_ms(to_broker, "command_request_to_cmd_on_broker_ms", max_too=False),
        **stats_ms(broker_to_device, "command_cmd_on_broker_to_device_ms", max_too=False),
        **stats_ms(device_to_ack, "command_device_to_ack_on_broker_ms", max_too=False),
        **stats_ms(ack_to_reply, "command_ack_on_broker_to_reply_ms", max_too=False),
        "command_phase_s": round(elapsed, 2),
        "commands_per_s": round(n / elapsed, 1),
        **{
            f"{name}_cpu_percent_of_one_core_commands": round(100 * (cpu2[name] - cpu1[name]) / elapsed, 1)
            for name in cpu2
        },
        **{f"{name}_cpu_percent_of_one_core_idle": round(100 * idle[name] / idle_s, 1) for name in idle},
    }


@dataclass(frozen=True)
class AbortRun:
    requested: float  # just before emulator.override()
    returned: float  # override() returned: the request has been applied
    abort_written: DeviceWrite
    abort_on_broker: Seen | None
    trip_seq: int | None  # the `seq` actuation's `redline` event names


def run_aborts(stand: Stand, k: int, rng: random.Random, telemetry: TelemetryWatch) -> list[AbortRun]:
    runs = []
    cleared = time.monotonic()
    closed = stand.valves.parse("000000000")
    for i in range(k):
        _wait(lambda: stand.watch.state() == "idle", "the stand to be idle")
        # the override is gone from the telemetry: arming must not trip at once
        _wait(functools.partial(telemetry.in_limit_batches, cleared, 3), "in-limit telemetry")
        stand.call("arm")
        stand.call("valves", valves=PATTERNS[0])
        time.sleep(rng.uniform(0.02, 0.12))  # a random phase against frames and batches
        requested = time.monotonic()
        stand.stm32.override(REDLINE_CHANNEL, OVER_LIMIT_VALUE)
        returned = time.monotonic()
        find_abort = functools.partial(stand.tap.write, requested, mask=closed)
        _wait(find_abort, f"abort {i} at the device")
        written = find_abort()
        assert written is not None
        _wait(lambda: stand.watch.state() == "idle", f"abort {i} to finish")
        aborting = stand.watch.first(topics.STATE_SYSTEM, requested, "state", "aborting")
        if aborting is None or "red-line" not in str(aborting.body.get("reason")):
            raise RuntimeError(f"abort {i} was not the red-line's: {aborting}")
        on_broker = stand.watch.first(topics.STM32_VALVES, requested, "cmd_no", written.cmd_no)
        event = stand.watch.first(topics.events("actuation"), requested, "kind", "redline")
        trip_seq = None if event is None else int(event.body["seq"])
        runs.append(AbortRun(requested, returned, written, on_broker, trip_seq))
        stand.stm32.override(REDLINE_CHANNEL, None)
        cleared = time.monotonic()
    return runs


def analyse_aborts(
    stand: Stand, runs: list[AbortRun], telemetry: TelemetryWatch, needed: int, limit: float
) -> dict[str, Any]:
    """Place each abort's first over-limit sample and trip sample in time; see the module docstring."""
    rate = stand.stm32.rate_hz
    start = stand.tap.start_estimate
    pass_at, before = stand.tap.passes()

    def frame_written(sample: int) -> float:
        """`now` of the pass that generated `sample` (the last pass that began with fewer samples)."""
        return float(pass_at[int(np.searchsorted(before, sample, side="right")) - 1])

    located: list[tuple[int, int | None]] = []  # (device counter of the first over-limit sample, its seq)
    handled_in_time = 0
    for run in runs:
        applied = int(np.searchsorted(pass_at, run.requested, side="right"))  # first pass after the call
        handled_in_time += bool(pass_at[applied] <= run.returned)
        batch = next((b for b in telemetry.since(run.requested) if b.first_over is not None), None)
        seq = None if batch is None or batch.first_over is None else batch.seq + batch.first_over
        located.append((int(before[applied]), seq))
    values, counts = np.unique(
        [seq - counter for counter, seq in located if seq is not None], return_counts=True
    )
    offset = int(values[np.argmax(counts)])  # seq - device counter, constant within the session
    confirmed = sum(
        seq is not None and seq - counter == offset and run.trip_seq == seq + needed - 1
        for run, (counter, seq) in zip(runs, located, strict=True)
    )

    from_first, from_trip, from_call, call_to_frame = [], [], [], []
    trip_to_batch, batch_to_cmd, cmd_to_device = [], [], []
    for run, (counter, seq) in zip(runs, located, strict=True):
        first = counter if seq is None else seq - offset
        trip = first + needed - 1
        abort_at = run.abort_written.at
        first_sample_at, trip_sample_at = start + first / rate, start + trip / rate
        from_first.append(abort_at - first_sample_at)
        from_trip.append(abort_at - trip_sample_at)
        from_call.append(abort_at - run.requested)
        call_to_frame.append(frame_written(first) - run.requested)
        trip_batch = next(
            (b for b in telemetry.since(run.requested) if b.seq <= trip + offset < b.seq + b.n), None
        )
        if trip_batch is not None and run.abort_on_broker is not None:
            trip_to_batch.append(trip_batch.at - trip_sample_at)
            batch_to_cmd.append(run.abort_on_broker.at - trip_batch.at)
            cmd_to_device.append(abort_at - run.abort_on_broker.at)
    return {
        "aborts": len(runs),
        **stats_ms(from_first, "abort_latency_ms"),
        **stats_ms(from_trip, "abort_after_trip_sample_ms"),
        **stats_ms(from_call, "abort_after_override_call_ms"),
        **stats_ms(call_to_frame, "abort_override_call_to_first_frame_ms", max_too=False),
        **stats_ms(trip_to_batch, "abort_trip_sample_to_batch_at_subscriber_ms", max_too=False),
        **stats_ms(batch_to_cmd, "abort_batch_at_subscriber_to_cmd_on_broker_ms", max_too=False),
        **stats_ms(cmd_to_device, "abort_cmd_on_broker_to_device_ms", max_too=False),
        "abort_hops_measured": len(trip_to_batch),
        # each: the pass that applied the override began before override() returned, the telemetry
        # puts the first over-limit sample where the emulator's counter does (same seq - counter), and
        # actuation's `redline` event names the sample `needed` - 1 after it
        "abort_sample_attribution_checks": f"{handled_in_time}/{len(runs)} {confirmed}/{len(runs)}",
        "abort_redline": f"{REDLINE_CHANNEL} := {OVER_LIMIT_VALUE:g}, limit {limit:g}, trip: sample {needed}",
    }


def run(n_commands: int, n_aborts: int) -> dict[str, Any]:
    rng = random.Random()
    with bench_workdir("rcs-bench-actuation-", write_short_config) as work:
        workdir, config = work.path, work.config
        with contextlib.ExitStack() as stack:
            settings = load_settings()
            broker = Broker(port=free_port())
            stack.callback(broker.close)
            broker.start()
            stm32 = Stm32Emulator(settings, link_path=workdir / "stm32")
            tap = DeviceTap(stm32)
            stm32.start()
            stack.callback(stm32.stop)
            arduino = ArduinoEmulator(settings, link_path=workdir / "arduino", speed_factor=4.0)
            arduino.start()
            stack.callback(arduino.stop)
            acquisition = service(
                "services.acquisition",
                "acquisition",
                broker,
                "acquisition",
                workdir,
                RCS_CONFIG=str(config),
                RCS_STM32_PORT=str(workdir / "stm32"),
                RCS_ACQUISITION_METRICS_PORT="0",
                RCS_ACQUISITION_RING_SECONDS="60",
            )
            stack.callback(acquisition.stop)
            actuation = service(
                "services.actuation",
                "actuation",
                broker,
                "actuation",
                workdir,
                RCS_CONFIG=str(config),
                RCS_ARDUINO_PORT=str(workdir / "arduino"),
                RCS_ACTUATION_METRICS_PORT="0",
            )
            stack.callback(actuation.stop)
            services = (acquisition, actuation)

            operator = TimedMqttClient(
                broker.settings("operator"), "operator", client_id="rcs-bench-operator"
            )
            watch = BrokerWatch()
            watched = (topics.STATE_SYSTEM, topics.STATE_MOTORS, topics.STATE_STM32, topics.STM32_VALVES)
            for topic in (*watched, topics.STM32_VALVE_ACK, topics.EVENTS):
                operator.subscribe(topic, watch.on_message)  # QoS 0: no PUBACKs of ours
            rpc = RpcClient(operator)
            operator.start()
            stack.callback(operator.stop)
            stack.callback(rpc.close)
            heartbeats = Heartbeats(operator, "bench")
            heartbeats.start()
            stack.callback(heartbeats.stop)
            stand = Stand(
                settings, stm32, tap, operator, rpc, watch, ValveMap(settings), acquisition, actuation
            )

            if not operator.wait_connected(10):
                raise RuntimeError("the operator client did not connect")
            for topic, key, value, what in (
                (topics.STATE_SYSTEM, "state", "idle", "actuation to start"),
                (topics.STATE_MOTORS, "connected", True, "the Arduino handshake"),
                (topics.STATE_STM32, "connected", True, "acquisition's STM32 link"),
            ):
                _wait(functools.partial(watch.first, topic, 0.0, key, value), what)
            stand.call("valves", valves=PATTERNS[1])  # the whole valve path answers
            result: dict[str, Any] = {"benchmark": "actuation"}
            result |= measure_commands(stand, n_commands, rng)

            rule = next(r for r in settings.redlines if r.channel == REDLINE_CHANNEL)
            assert rule.above is not None
            telemetry = TelemetryWatch(REDLINE_CHANNEL, rule.above)
            operator.subscribe(topics.TELEMETRY, telemetry.on_message)
            if not operator.wait_connected(10):
                raise RuntimeError("no telemetry subscription")
            tap.record_passes(True)
            runs = run_aborts(stand, n_aborts, rng, telemetry)
            tap.record_passes(False)
            needed = samples_needed(rule.persistence_ms, stm32.rate_hz)
            result |= analyse_aborts(stand, runs, telemetry, needed, rule.above)
            abort = settings.sequences[settings.abort_sequence_name]
            result["abort_sequence"] = (
                f"{settings.abort_sequence_name} with its waits x{ABORT_WAIT_SCALE:g} "
                f"({sum(s.wait_ms for s in abort.steps)} ms in all), patterns kept, in a temp copy of "
                "config/stand.yaml; only its first write is measured"
            )
            result["machine"] = (
                f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
            )
        work.check_exits(services)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=300)
    parser.add_argument("--aborts", type=int, default=20)
    args = parser.parse_args()
    result = run(args.commands, args.aborts)
    for key, value in result.items():
        line = f"{key:48s} {value}"
        if key in TARGETS_MS:
            target = TARGETS_MS[key]
            line += f"   target < {target:g} ms: {'met' if value < target else 'MISSED'}"
        print(line)
    result["targets_ms"] = {key: {"below": t, "met": result[key] < t} for key, t in TARGETS_MS.items()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "actuation.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
