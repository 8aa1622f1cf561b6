"""Abort during a command flood: abort request -> abort bytes at the STM32, and the abort's answer.

Starts its own Mosquitto on a free loopback port (the project's config and ACL, generated logins), the
STM32 and Arduino emulators in this process, rcs-acquisition, rcs-actuation and rcs-gateway as child
processes logged in as their own users. Writes bench/results/abort_flood.json.

Each round, from idle:

- `websocket`: one operator WebSocket sends `--flood` (3,000) `valve_command` messages as fast as the
  socket takes them (FUEL2 alone / GOX2 alone, alternating: allowed while idle, never an abort step),
  then at once `POST /api/abort` on a separate HTTP connection (the issue's case).
- `mqtt`: one operator MQTT client sends `--flood` `valves` requests to actuation as fast as paho
  queues them, then a second operator client (as `rcs-ctl abort` does) requests `abort`.

Measured on this process's monotonic clock (the STM32 emulator runs in a thread here and its receive
tap stamps each SET_VALVES frame with the `now` of the loop pass that read it; see bench/actuation.py):
from just before the abort request is handed to the HTTP / MQTT client to the emulator reading the
abort's first write (mask 0: no flood command writes it), and to the abort's answer (HTTP response,
or the RPC reply resolving its future). Also counted per round: flood commands refused by the rate
limits, `busy`, `superseded by abort`, and the rounds where a flood pattern reached the device after
the abort's first write: while aborting (must be 0), and after the (shortened) abort sequence ended
(commands issued after the abort: for the WebSocket, those the gateway read from the socket after it).
The clients of a round run in a process of their own (see `flood_and_abort`).
Hops, as a third subscriber (this process's operator login, QoS 0) sees them:
request -> abort request seen on the broker -> the abort's first valve command seen on the broker ->
SET_VALVES at the device. The emergency sequence's waits are scaled by 0.05 in a temp copy of
config/stand.yaml (patterns kept), so a round's abort ends in ~0.4 s.

The machine's load averages are recorded before and after the run and the 1-minute one at every
round (`load_average_*`): on a shared machine they say how noisy the figures are. `--variants
websocket` runs one variant only.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import functools
import json
import math
import multiprocessing
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import httpx
from actuation import BrokerWatch, DeviceTap, stats_ms, write_short_config
from measure import RESULTS, bench_workdir, service, start_gateway, wait_until
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from services.common import topics
from services.common.mqtt import MqttClient
from services.common.rpc import RpcClient, RpcError
from services.common.settings import MqttSettings, load_settings
from services.devstack.broker import Broker, free_port
from services.emulators.arduino import ArduinoEmulator
from services.emulators.stm32 import Stm32Emulator

FLOOD_PATTERNS = ("000000010", "000000100")
VARIANTS = ("websocket", "mqtt")
OPERATOR_TOKEN = "bench-operator-token"
TARGETS_MS = {"websocket_abort_to_device_ms_p99": 50.0, "websocket_abort_http_answer_ms_max": 1000.0}
TIMEOUT_S = 30.0
WHO = {"who": "bench", "origin": "bench/abort_flood.py"}


def _wait(predicate: Callable[[], object], what: str) -> None:
    wait_until(predicate, what, TIMEOUT_S, poll_s=0.005)


async def websocket_round(http_port: int, n: int) -> tuple[float, float, dict[str, int]]:
    """(abort requested, abort answered, what the flood's answers said) for one round."""
    url = f"ws://127.0.0.1:{http_port}/ws?token={OPERATOR_TOKEN}"
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    async with (
        # max_queue: the harness stops reading the flood's answers while it sends the abort, so its
        # own parsing of thousands of answers on this event loop does not delay the abort request
        connect(url, max_queue=64, ping_interval=None, compression=None) as ws,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", headers=headers, timeout=10) as http,
    ):
        await http.get("/api/health")  # the HTTP connection is open before the flood
        for i in range(n):
            await ws.send(json.dumps({"type": "valve_command", "valves": FLOOD_PATTERNS[i % 2]}))
        requested = time.monotonic()
        answer = await http.post("/api/abort")
        answered = time.monotonic()
        if answer.status_code not in (200, 409):  # 409: aborting, the device's ack not in time
            raise RuntimeError(f"abort answered {answer.status_code}: {answer.text}")
        counts = {"rate_limited": 0, "valve_response": 0, f"abort_answered_{answer.status_code}": 1}
        with contextlib.suppress(TimeoutError, ConnectionClosed):  # the counts only
            while sum(counts.values()) < n:
                frame = await asyncio.wait_for(ws.recv(), 5.0)
                if isinstance(frame, bytes):
                    continue
                message = json.loads(frame)
                if message["type"] == "error" and str(message["data"]).startswith("rate limited"):
                    counts["rate_limited"] += 1
                elif message["type"] == "valve_response":
                    counts["valve_response"] += 1
    return requested, answered, counts


def mqtt_round(operator: MqttSettings, n: int) -> tuple[float, float, dict[str, int]]:
    with contextlib.ExitStack() as stack:
        flooding = MqttClient(operator, "operator", client_id="rcs-bench-flooder")
        flooder = RpcClient(flooding)
        flooding.start()
        stack.callback(flooding.stop)
        stack.callback(flooder.close)
        console = MqttClient(operator, "operator", client_id="rcs-bench-console")
        aborter = RpcClient(console)
        console.start()
        stack.callback(console.stop)
        stack.callback(aborter.close)
        if not (flooding.wait_connected(10) and console.wait_connected(10)):
            raise RuntimeError("the operator clients did not connect")
        return _mqtt_flood_then_abort(flooder, aborter, n)


def _mqtt_flood_then_abort(
    flooder: RpcClient, aborter: RpcClient, n: int
) -> tuple[float, float, dict[str, int]]:
    topic = topics.actuation("valves")
    flood = [flooder.request(topic, {"valves": FLOOD_PATTERNS[i % 2], **WHO}, timeout=20) for i in range(n)]
    requested = time.monotonic()
    abort = aborter.request(topics.actuation("abort"), {"reason": "bench: flood", **WHO}, timeout=10)
    counts: dict[str, int] = {}
    try:
        abort.result()
    except RpcError as exc:  # aborting, the device's acknowledgement not in time
        counts["abort_not_yet_confirmed"] = 1
        if not str(exc).startswith("aborting, not yet confirmed"):
            raise
    answered = time.monotonic()
    for future in flood:
        try:
            future.result()
            kind = "ok"
        except RpcError as exc:
            kind = str(exc).split(":")[0]
        except Exception as exc:
            kind = type(exc).__name__
        counts[kind] = counts.get(kind, 0) + 1
    return requested, answered, counts


def flood_and_abort(
    variant: str, http_port: int, operator: MqttSettings, n: int
) -> tuple[float, float, dict[str, int]]:
    """One round's clients, in a process of their own: the STM32 emulator's thread in the parent is
    not starved of the GIL by them (time.monotonic() is the same clock in every process)."""
    if variant == "websocket":
        return asyncio.run(websocket_round(http_port, n))
    return mqtt_round(operator, n)


def load_average() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages (runnable processes; this machine has
    os.cpu_count() cores): how noisy the figures next to them are."""
    return [round(x, 1) for x in os.getloadavg()]


def run(n_flood: int, rounds: int, variants: tuple[str, ...] = VARIANTS) -> dict[str, Any]:
    with bench_workdir("rcs-bench-abort-flood-", write_short_config) as work:
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
            common = {"RCS_CONFIG": str(config)}
            acquisition = service(
                "services.acquisition",
                "acquisition",
                broker,
                "acquisition",
                workdir,
                RCS_STM32_PORT=str(workdir / "stm32"),
                RCS_ACQUISITION_METRICS_PORT="0",
                RCS_ACQUISITION_RING_SECONDS="60",
                **common,
            )
            stack.callback(acquisition.stop)
            actuation = service(
                "services.actuation",
                "actuation",
                broker,
                "actuation",
                workdir,
                RCS_ARDUINO_PORT=str(workdir / "arduino"),
                RCS_ACTUATION_METRICS_PORT="0",
                **common,
            )
            stack.callback(actuation.stop)
            _gateway, http_port = start_gateway(
                stack, broker, workdir, RCS_OPERATOR_TOKEN=OPERATOR_TOKEN, **common
            )
            children = (acquisition, actuation)  # uvicorn re-raises SIGTERM after its clean shutdown

            operator = MqttClient(broker.settings("operator"), "operator", client_id="rcs-bench-watch")
            watch = BrokerWatch()
            operator.subscribe(topics.STATE_SYSTEM, watch.on_message)
            operator.subscribe(topics.STATE_MOTORS, watch.on_message)
            abort_topic = topics.actuation("abort")
            for topic in (topics.request(abort_topic, "+"), topics.STM32_VALVES):
                operator.subscribe(topic, watch.on_message)  # QoS 0: seen on the broker, no PUBACKs
            who = {"websocket": "operator", "mqtt": WHO["who"]}
            login = {"websocket": "gateway", "mqtt": "operator"}  # the requester, last level of the topic
            operator.start()
            stack.callback(operator.stop)
            if not operator.wait_connected(10):
                raise RuntimeError("the operator client did not connect")
            clients = stack.enter_context(
                concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            )
            _wait(functools.partial(watch.first, topics.STATE_SYSTEM, 0.0, "state", "idle"), "actuation")
            _wait(functools.partial(watch.first, topics.STATE_MOTORS, 0.0, "connected", True), "motors")
            _wait(lambda: _health(http_port), "the gateway")
            flood_masks = {int(bits[::-1], 2) for bits in FLOOD_PATTERNS}  # digit i = bit i

            result: dict[str, Any] = {"benchmark": "abort_flood", "flood": n_flood, "rounds": rounds}
            result["load_average_before"] = load_average()
            for variant in variants:
                to_device, to_answer, during, after_end = [], [], 0, 0
                hops: dict[str, list[float]] = {
                    "request_to_broker": [],
                    "broker_to_cmd_on_broker": [],
                    "cmd_on_broker_to_device": [],
                }
                totals: dict[str, int] = {}
                loads: list[float] = []
                for _ in range(rounds):
                    loads.append(load_average()[0])
                    _wait(lambda: watch.state() == "idle", "the stand to be idle")
                    time.sleep(1.2)  # the token bucket refills between rounds (50/s, burst 100)
                    requested, answered, counts = clients.submit(
                        flood_and_abort, variant, http_port, broker.settings("operator"), n_flood
                    ).result()
                    find_abort = functools.partial(tap.write, requested, mask=0)
                    _wait(find_abort, "the abort at the device")
                    written = find_abort()
                    assert written is not None
                    _wait(lambda: watch.state() == "idle", "the abort to end")
                    idle = watch.first(topics.STATE_SYSTEM, requested, "state", "idle")  # the abort's end
                    ended = math.inf if idle is None else idle.at
                    flood_after = [w for w in tap.after(written) if w.mask in flood_masks]
                    during += any(w.at < ended for w in flood_after)
                    after_end += any(w.at >= ended for w in flood_after)
                    request_seen = watch.first(
                        topics.request(abort_topic, login[variant]), requested, "who", who[variant]
                    )
                    command_seen = watch.first(topics.STM32_VALVES, requested, "mask", 0)
                    if request_seen is not None and command_seen is not None:
                        hops["request_to_broker"].append(request_seen.at - requested)
                        hops["broker_to_cmd_on_broker"].append(command_seen.at - request_seen.at)
                        hops["cmd_on_broker_to_device"].append(written.at - command_seen.at)
                    to_device.append(written.at - requested)
                    to_answer.append(answered - requested)
                    for kind, count in counts.items():
                        totals[kind] = totals.get(kind, 0) + count
                result |= stats_ms(to_device, f"{variant}_abort_to_device_ms")
                answer = "abort_http_answer_ms" if variant == "websocket" else "abort_reply_ms"
                result |= stats_ms(to_answer, f"{variant}_{answer}")
                for hop, values in hops.items():
                    if values:
                        result |= stats_ms(values, f"{variant}_abort_{hop}_ms", max_too=False)
                result[f"{variant}_load_average_1min_at_rounds"] = {
                    "min": min(loads),
                    "median": sorted(loads)[len(loads) // 2],
                    "max": max(loads),
                }
                result[f"{variant}_flood_answers"] = totals
                result[f"{variant}_rounds_with_a_flood_command_at_the_device_while_aborting"] = during
                result[f"{variant}_rounds_with_a_flood_command_at_the_device_after_the_abort_ended"] = (
                    after_end
                )
            result["load_average_after"] = load_average()
            result["machine"] = (
                f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
            )
        work.check_exits(children)
        return result


def _health(port: int) -> bool:
    """The gateway answers and is connected to the broker (its health is 503 here: no logger runs)."""
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1)
        return answer.json().get("broker_connected") is True
    except (httpx.HTTPError, ValueError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args()
    result = run(args.flood, args.rounds, tuple(args.variants))
    for key, value in result.items():
        line = f"{key:60s} {value}"
        if key in TARGETS_MS:
            line += f"   target < {TARGETS_MS[key]:g} ms: {'met' if value < TARGETS_MS[key] else 'MISSED'}"
        print(line)
    result["targets_ms"] = {
        key: {"below": t, "met": result[key] < t} for key, t in TARGETS_MS.items() if key in result
    }
    busiest = max(result["load_average_before"][0], result["load_average_after"][0])
    cores = os.cpu_count() or 1
    if busiest > cores:
        print(f"load average up to {busiest:g} on {cores} cores: the machine was busy, the figures are noisy")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "abort_flood.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
