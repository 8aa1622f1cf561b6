"""`/ws` end to end: real Mosquitto (project ACL), the STM32 and Arduino emulators behind ptys,
rcs-acquisition and rcs-actuation as processes, the gateway's Bus (login `gateway`) and `/ws` in
uvicorn on a free loopback port (a thread of this process), clients from the `websockets` library.

One stand for the module. Every wait is a liveness bound; nothing asserts on timing: the slow-client
test compares what clients received, counted in samples.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import msgpack
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from services.common import topics
from services.common.settings import Settings, load_settings
from services.devstack.broker import Broker, free_port
from services.emulators.stm32 import Stm32Emulator
from services.gateway.app import create_app
from services.gateway.auth import Auth, redact_tokens_in_server_logs
from services.gateway.bus import Bus
from services.gateway.hub import Hub
from services.gateway.rate_limits import CommandLimits
from services.gateway.serving import server_config
from services.gateway.ws import WebSocketEndpoint, WebSocketStats
from tests.conftest import wait_until
from tests.processes import emulated_devices

OPERATOR, VIEWER = "operator-token-for-tests", "viewer-token-for-tests"
QUEUE_FRAMES = 8
TIMEOUT = 20.0


@dataclass
class Gateway:
    url: str
    hub: Hub
    bus: Bus
    settings: Settings
    ws_stats: WebSocketStats
    stm32: Stm32Emulator


class Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # a thread of the test process
        pass


@pytest.fixture(scope="module")
def gateway(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gateway-ws")
    base = load_settings()
    settings = base.model_copy(
        update={
            "mqtt": broker.settings("gateway"),
            "auth": "on",
            "operator_token": SecretStr(OPERATOR),
            "viewer_token": SecretStr(VIEWER),
            "gateway": base.gateway.model_copy(update={"client_queue_frames": QUEUE_FRAMES}),
        }
    )
    with ExitStack() as stack:
        stm32, _arduino, _acquisition = emulated_devices(stack, settings, broker.settings, tmp)
        bus = Bus(settings)

        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            await bus.start()
            yield
            await bus.stop()

        app = FastAPI(lifespan=lifespan)
        endpoint = WebSocketEndpoint(bus, Auth(settings), settings, CommandLimits(settings.gateway))
        endpoint.attach(app)
        port = free_port()
        server = Server(server_config(app, settings, host="127.0.0.1", port=port, ws_ping_interval=None))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            wait_until(lambda: server.started, TIMEOUT, "uvicorn")
            wait_until(
                lambda: (bus.latest("rcs/state/system") or {}).get("state") == "idle", TIMEOUT, "actuation"
            )
            wait_until(
                lambda: (bus.latest("rcs/state/motors") or {}).get("connected") is True, TIMEOUT, "motors"
            )
            wait_until(lambda: bus.latest_sample() is not None, TIMEOUT, "telemetry")
            yield Gateway(f"ws://127.0.0.1:{port}/ws", endpoint.hub, bus, settings, endpoint.stats, stm32)
        finally:
            server.should_exit = True
            thread.join(15)


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 45))


def open_ws(gateway: Gateway, token: str | None = OPERATOR, **kwargs: Any) -> connect:
    """A client; it buffers whatever arrives (max_queue None) unless told otherwise."""
    url = gateway.url if token is None else f"{gateway.url}?token={token}"
    options: dict[str, Any] = {
        "compression": None,
        "max_size": None,
        "ping_interval": None,
        "max_queue": None,
    }
    return connect(url, **(options | kwargs))


def decode(frame: str | bytes) -> dict[str, Any]:
    message = json.loads(frame) if isinstance(frame, str) else msgpack.unpackb(frame)
    assert isinstance(message, dict)
    return message


async def next_of(
    ws: ClientConnection, kind: str, timeout: float = TIMEOUT
) -> tuple[dict[str, Any], str | bytes]:
    """The next message of type `kind` (others skipped), with the raw frame."""
    give_up = time.monotonic() + timeout
    while True:
        raw = await asyncio.wait_for(ws.recv(), max(0.01, give_up - time.monotonic()))
        message = decode(raw)
        if message.get("type") == kind:
            return message, raw


async def next_event(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next audit event of `kind` (others, e.g. actuation's `valves` and `step`, skipped)."""
    while True:
        event: dict[str, Any] = (await next_of(ws, "event"))[0]["data"]
        if event.get("kind") == kind:
            return event


async def ask(
    ws: ClientConnection, message: dict[str, Any], kind: str, *, binary: bool = False
) -> dict[str, Any]:
    await ws.send(msgpack.packb(message) if binary else json.dumps(message))
    answer, raw = await next_of(ws, kind)
    assert isinstance(raw, bytes) == (binary or kind.startswith("sensor_")), (
        f"{kind} in the request's encoding"
    )
    return answer


def test_legacy_messages_commands_and_pushes(gateway: Gateway) -> None:
    async def scenario() -> None:
        async with open_ws(gateway) as operator, open_ws(gateway, VIEWER) as viewer:
            # the current states on connect (valves: once actuation has had one acknowledged)
            meta = (await next_of(viewer, "telemetry_meta"))[0]["data"]
            units = {c["name"]: c["unit"] for c in meta["channels"]}
            assert units["P1"] == "bar" and len(units) == len(gateway.settings.channel_names)
            assert (await next_of(viewer, "system_state"))[0]["data"]["state"] == "idle"
            # sensor_data: pushed at the screen rate and on request, MessagePack, numbers or null
            pushed, raw = await next_of(viewer, "sensor_data")
            assert isinstance(raw, bytes)
            data = (await ask(viewer, {"type": "get_sensors"}, "sensor_data"))["data"]
            for key in ("pressures", "temperatures", "thrust", "isp", "timestamp", "errors", "debis"):
                assert key in data and key in pushed["data"]
            assert len(data["pressures"]) == 8 and all(isinstance(p, float) for p in data["pressures"])
            assert data["timestamp"].endswith("Z")

            # a viewer may not command
            refused = await ask(viewer, {"type": "valve_command", "valves": [0] * 9}, "error")
            assert refused["data"] == "operator role required"
            assert (await ask(viewer, {"type": "heartbeat"}, "error"))["data"] == "operator role required"

            # accepted: the answer to the sender, the new state to everyone
            run_valves = [0, 0, 0, 0, 0, 0, 1, 1, 0]
            answer = await ask(operator, {"type": "valve_command", "valves": run_valves}, "valve_response")
            assert answer == {"type": "valve_response", "success": True, "valves": run_valves}
            assert gateway.hub.clients and (await next_of(viewer, "valve_state"))[0]["valves"] == run_valves
            event = await next_event(viewer, "command")
            assert (event["kind"], event["who"], event["accepted"]) == ("command", "operator", True)
            assert event["origin"].startswith("gateway ws 127.0.0.1:")
            # refused by an interlock (the igniter needs armed): success false and the reason
            igniter = [0] * 8 + [1]
            answer = await ask(
                operator, {"type": "valve_command", "valves": igniter}, "valve_response", binary=True
            )
            assert answer["success"] is False and "igniter" in answer["reason"]
            assert answer["valves"] == run_valves, "the acknowledged valves, never the refused pattern"
            closed = await ask(operator, {"type": "valve_command", "valves": [0] * 9}, "valve_response")
            assert closed["success"] is True, closed
            # one valve by name (the console's): the answer repeats it; the rest stays as it is
            one = {"type": "valve_command", "name": "GOX2", "open": True}
            answer = await ask(operator, one, "valve_response")
            assert answer == {**one, "type": "valve_response", "success": True, "valves": [0] * 6 + [1, 0, 0]}
            one = {"type": "valve_command", "name": "IGNITION", "open": True}
            answer = await ask(operator, one, "valve_response")
            assert (
                answer["success"] is False and "igniter" in answer["reason"] and answer["name"] == "IGNITION"
            )
            one = {"type": "valve_command", "name": "GOX2", "open": False}
            assert (await ask(operator, one, "valve_response"))["valves"] == [0] * 9

            motor = await ask(
                operator, {"type": "step_motor_command", "motor_id": 1, "angle": 17.75}, "step_motor_response"
            )
            assert motor["success"] is True and motor["motor_id"] == 1 and motor["angle"] == 17.75
            assert isinstance(motor["response"], str)
            # the console's absolute move: `target` instead of `angle`, echoed in the answer
            moved = await ask(
                operator,
                {"type": "step_motor_command", "motor_id": 1, "target": -1700.0},
                "step_motor_response",
            )
            assert moved["success"] is True and moved["target"] == -1700.0 and "angle" not in moved, moved
            assert abs(moved["position_deg"] - -1700.0) <= gateway.settings.motors.deg_per_step

            # system_mode: the seed's source modes, then arm/disarm (arming needs heartbeats)
            source = await ask(
                operator, {"type": "system_mode", "mode": "simulation"}, "system_mode_response"
            )
            assert source["success"] is True and source["source"] == "emulator"
            real = await ask(operator, {"type": "system_mode", "mode": "real"}, "system_mode_response")
            assert real["success"] is False and "chosen when acquisition starts" in real["reason"]
            await operator.send(json.dumps({"type": "heartbeat"}))
            armed = await ask(operator, {"type": "system_mode", "mode": "arm"}, "system_mode_response")
            assert armed == {"type": "system_mode_response", "mode": "arm", "success": True, "state": "armed"}
            while (await next_of(viewer, "system_state"))[0]["data"]["state"] != "armed":
                pass  # earlier changes (the commanded pattern) first
            idle = await ask(operator, {"type": "system_mode", "mode": "disarm"}, "system_mode_response")
            assert idle["success"] is True and idle["state"] == "idle"

            # malformed messages: an error each, and the connection stays
            bad_before = gateway.ws_stats.bad_messages
            for bad in ("{not json", "[1, 2]", '{"no": "type"}', b"\xc1\xff", msgpack.packb([1])):
                await operator.send(bad)
                error, raw = await next_of(operator, "error")
                assert isinstance(error["data"], str) and isinstance(raw, type(bad))
            for bad_message in (
                {"type": "no_such_thing"},
                {"type": "valve_command"},
                {"type": "valve_command", "name": "NOPE", "open": True},
                {"type": "valve_command", "name": "GOX2", "open": 1},
                {"type": "step_motor_command", "motor_id": 1, "angle": "far"},
                {"type": "step_motor_command", "motor_id": 1, "angle": 1.0, "target": 2.0},
                {"type": "step_motor_command", "motor_id": 1},
                {"type": "subscribe", "mode": "display", "channels": ["NOPE"]},
                {"type": "subscribe", "mode": "full", "channels": []},
                {"type": "system_mode", "mode": "warp"},
                {"type": "system_mode", "mode": "hold", "reason": ""},
                {"type": "sequence", "name": "nope"},
                {"type": "sequence", "name": "emergency"},  # the abort sequence: system_mode abort
            ):
                assert "data" in await ask(operator, bad_message, "error")
            assert "data" in await ask(operator, {"type": "get_sensors"}, "sensor_data")
            assert gateway.bus.websocket_connections == 2
            assert gateway.ws_stats.bad_messages - bad_before == 18  # each one counted

    run(scenario())


async def until_system(gateway: Gateway, value: Callable[[dict[str, Any]], Any]) -> Any:
    """`value` of the gateway's latest rcs/state/system once it is truthy (within TIMEOUT)."""
    give_up = time.monotonic() + TIMEOUT
    while not (found := value(gateway.bus.latest(topics.STATE_SYSTEM) or {})):
        assert time.monotonic() < give_up, "timed out waiting for the system state"
        await asyncio.sleep(0.01)
    return found


def test_hold_resume_and_alarms_over_the_websocket(gateway: Gateway) -> None:
    async def scenario() -> None:
        async with open_ws(gateway) as operator:
            alarms = (await next_of(operator, "alarms"))[0]["data"]  # the retained state, on connect
            assert isinstance(alarms["alarms"], list) and isinstance(alarms["ts"], float)
            hold = await ask(operator, {"type": "system_mode", "mode": "hold"}, "system_mode_response")
            assert (hold["success"], hold["reason"]) == (False, "no sequence is running")
            resume = await ask(operator, {"type": "system_mode", "mode": "resume"}, "system_mode_response")
            assert (resume["success"], resume["reason"]) == (False, "no sequence is held")
            ack = await ask(operator, {"type": "alarm_ack", "id": 999}, "alarm_ack_response")
            assert (ack["id"], ack["success"]) == (999, False) and ack["reason"].startswith("no alarm 999")
            assert "data" in await ask(operator, {"type": "alarm_ack", "id": True}, "error")
            assert "data" in await ask(operator, {"type": "alarm_ack", "id": 10**30}, "error")

            # a sequence started by name (the console's Start), held with the operator's reason, resumed;
            # while it runs the deadman wants this console's heartbeats
            async def heartbeats() -> None:
                while True:
                    await operator.send(json.dumps({"type": "heartbeat"}))
                    await asyncio.sleep(0.5)

            beating = asyncio.create_task(heartbeats())
            started = await ask(operator, {"type": "sequence", "name": "o2cleaning"}, "sequence_response")
            assert started == {"type": "sequence_response", "name": "o2cleaning", "success": True}
            hold = {"type": "system_mode", "mode": "hold", "reason": "pad check"}
            held_answer = await ask(operator, hold, "system_mode_response")
            assert held_answer["success"] is True, held_answer
            held = await until_system(gateway, lambda s: (s.get("sequence") or {}).get("held"))
            assert held.endswith("pad check"), held
            again = await ask(operator, {"type": "sequence", "name": "o2feed"}, "sequence_response")
            assert again["success"] is False and again["reason"], again
            resume = {"type": "system_mode", "mode": "resume"}
            assert (await ask(operator, resume, "system_mode_response"))["success"] is True
            await until_system(gateway, lambda s: s.get("state") == "idle")  # o2cleaning ran to its end
            beating.cancel()

    run(scenario())


def test_tare_and_checklist_over_the_websocket(gateway: Gateway) -> None:
    async def scenario() -> None:
        async with open_ws(gateway) as operator, open_ws(gateway, VIEWER) as viewer:
            checklist = await ask(viewer, {"type": "checklist"}, "checklist_response")
            assert checklist["success"] is True and isinstance(checklist["ok"], bool)
            assert [i["id"] for i in checklist["items"]] == ["stm32", "valves-closed"]
            assert "data" in await ask(viewer, {"type": "tare", "channels": ["THRUST"]}, "error")  # a viewer
            tared = await ask(
                operator,
                {"type": "tare", "channels": ["THRUST"], "seconds": 0.5},
                "tare_response",
                binary=True,
            )
            assert tared["success"] is True and tared["channels"] == ["THRUST"], tared
            assert tared["tare"]["THRUST"]["by"] == "operator"
            cleared = await ask(
                operator, {"type": "tare", "channels": ["THRUST"], "clear": True}, "tare_response"
            )
            assert cleared["success"] is True and cleared["tare"] == {}
            for bad in (
                {"type": "tare", "channels": ["ISP"]},
                {"type": "tare", "channels": "THRUST"},
                {"type": "tare", "channels": ["THRUST"], "seconds": 0},
                {"type": "tare", "channels": ["THRUST"], "clear": "yes"},
            ):
                assert "data" in await ask(operator, bad, "error")

    run(scenario())


def test_runs_started_and_stopped_over_the_websocket_and_their_state_pushed(gateway: Gateway) -> None:
    async def scenario() -> None:
        async with open_ws(gateway) as operator, open_ws(gateway, VIEWER) as viewer:
            assert "active" in (await next_of(operator, "run_state"))[0]["data"]  # retained, on connect
            started = await ask(
                operator, {"type": "run_start", "name": "WS run", "notes": "n"}, "run_response"
            )
            assert started["success"] is True and started["command"] == "run_start"
            run_id = started["run"]["id"]
            while (await next_of(viewer, "run_state"))[0]["data"]["active"] is None:
                pass  # the state before the start, then the pushed one
            again = await ask(operator, {"type": "run_start", "name": "again"}, "run_response")
            assert (again["success"], again["reason"]) == (False, f"run {run_id} is active: stop it first")
            assert "data" in await ask(viewer, {"type": "run_stop"}, "error")  # a viewer commands nothing
            assert "data" in await ask(operator, {"type": "run_start", "name": ""}, "error")
            assert "data" in await ask(operator, {"type": "run_start", "name": "x", "notes": 3}, "error")
            assert "data" in await ask(operator, {"type": "run_stop", "id": "../../etc"}, "error")
            stopped = await ask(operator, {"type": "run_stop", "id": run_id}, "run_response", binary=True)
            assert stopped["success"] is True and stopped["run"]["result"] == "stopped"
            while (await next_of(viewer, "run_state"))[0]["data"]["active"] is not None:
                pass
            nothing = await ask(operator, {"type": "run_stop"}, "run_response")
            assert (nothing["success"], nothing["reason"]) == (False, "no run is active")

    run(scenario())


def test_full_subscription_is_contiguous_and_display_is_reduced(gateway: Gateway) -> None:
    async def scenario() -> None:
        async with (
            open_ws(gateway, VIEWER) as full,
            open_ws(gateway, VIEWER) as display,
            open_ws(gateway, VIEWER) as chosen,
        ):
            answer = await ask(
                full, {"type": "subscribe", "mode": "full", "sensor_data": False}, "subscribed"
            )
            assert answer["mode"] == "full" and answer["sensor_data"] is False
            some = {"type": "subscribe", "mode": "full", "channels": ["THRUST", "P1"]}
            assert (await ask(chosen, some, "subscribed"))["channels"] == ["THRUST", "P1"]
            for _ in range(3):
                batch = msgpack.unpackb((await next_of(chosen, "sensor_batch"))[0]["batch"])
                assert batch["channels"] == ["THRUST", "P1"]
                assert len(batch["data"]) == 4 * 2 * batch["n"] and len(batch["t"]) == 8 * batch["n"]
            asked = {"type": "subscribe", "mode": "display", "channels": ["P1", "THRUST"], "max_hz": 1000}
            answer = await ask(display, asked, "subscribed", binary=True)
            assert answer["max_hz"] == gateway.settings.gateway.display_max_hz
            seqs: list[int] = []
            while len(seqs) < 50:
                batch = msgpack.unpackb((await next_of(full, "sensor_batch"))[0]["batch"])
                assert set(batch) >= {"v", "session", "seq", "n", "channels", "t", "data"}
                if seqs:
                    assert batch["seq"] == seqs[-1], "every sample, in order, no gap"
                seqs.append(batch["seq"] + batch["n"])
            frames = [(await next_of(display, "sensor_display"))[0] for _ in range(5)]
            for frame in frames:
                assert frame["channels"] == ["P1", "THRUST"]
                low = np.frombuffer(frame["min"], "<f4").reshape(frame["n"], 2)
                high = np.frombuffer(frame["max"], "<f4").reshape(frame["n"], 2)
                assert (low <= high).all() and len(frame["t"]) == 8 * frame["n"]
            for before, after in itertools.pairwise(frames):
                assert after["seq_first"] == before["seq_next"]

    run(scenario())


def test_auth_by_first_message_and_refusals(gateway: Gateway) -> None:
    async def scenario() -> None:
        async with open_ws(gateway, None) as ws:
            await ws.send(json.dumps({"type": "auth", "token": OPERATOR}))
            assert (await next_of(ws, "authenticated"))[0] == {
                "type": "authenticated",
                "name": "operator",
                "role": "operator",
            }
            assert (await ask(ws, {"type": "system_mode", "mode": "simulation"}, "system_mode_response"))[
                "success"
            ]
        for token, first in (
            (None, {"type": "get_sensors"}),
            (None, {"type": "auth", "token": "wrong"}),
            ("wrong", None),
        ):
            async with open_ws(gateway, token) as ws:
                if first is not None:
                    await ws.send(json.dumps(first))
                error, _ = await next_of(ws, "error")
                assert "authentication required" in error["data"]
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        with pytest.raises(InvalidStatus) as refused:
            async with open_ws(gateway, OPERATOR, origin="http://evil.example"):
                pass
        assert refused.value.response.status_code == 403
        allowed = gateway.settings.gateway.cors_origins[0]
        async with open_ws(gateway, VIEWER, origin=allowed) as ws:
            assert "data" in await ask(ws, {"type": "get_sensors"}, "sensor_data")

    run(scenario())


def test_a_message_over_the_bound_closes_the_connection(gateway: Gateway) -> None:
    async def scenario() -> None:
        async with open_ws(gateway, VIEWER) as ws:
            await ws.send(json.dumps({"type": "get_sensors", "pad": "x" * 100_000}))
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

    run(scenario())


def test_a_star_in_cors_origins_allows_any_origin_for_cors_and_websocket(broker: Broker) -> None:
    """An app as rcs-gateway builds it; its bus is never started (lifespan off): only the checks run."""
    base = load_settings()
    settings = base.model_copy(
        update={
            "mqtt": broker.settings("gateway"),
            "auth": "on",
            "viewer_token": SecretStr(VIEWER),
            "gateway": base.gateway.model_copy(update={"cors_origins": ("*",)}),
        }
    )
    port = free_port()
    server = Server(
        server_config(
            create_app(settings, Bus(settings), Auth(settings)),
            settings,
            host="127.0.0.1",
            port=port,
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    elsewhere = Origin("http://elsewhere.example")
    try:
        wait_until(lambda: server.started, TIMEOUT, "uvicorn")
        preflight = httpx.options(
            f"http://127.0.0.1:{port}/api/valves",
            headers={"Origin": elsewhere, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "*"

        async def scenario() -> None:
            async with connect(f"ws://127.0.0.1:{port}/ws?token={VIEWER}", origin=elsewhere) as ws:
                assert "data" in await ask(ws, {"type": "get_sensors"}, "sensor_data")

        run(scenario())
    finally:
        server.should_exit = True
        thread.join(15)


def stuck_socket() -> socket.socket:
    """A client socket with a tiny receive buffer: when it stops reading, TCP stops the server fast."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


def test_a_slow_client_does_not_reduce_what_a_fast_one_receives(gateway: Gateway) -> None:
    async def scenario() -> None:
        host, port = "127.0.0.1", int(gateway.url.rsplit(":", 1)[1].split("/")[0])
        sock = stuck_socket()
        sock.connect((host, port))
        async with (
            open_ws(gateway, VIEWER) as fast,
            open_ws(gateway, VIEWER, sock=sock, max_queue=1, close_timeout=1) as slow,
        ):
            await ask(slow, {"type": "subscribe", "mode": "full"}, "subscribed")
            await ask(fast, {"type": "subscribe", "mode": "full"}, "subscribed")
            slow_client = next(c for c in gateway.hub.clients if c.name.endswith(f":{sock.getsockname()[1]}"))
            # the slow one reads nothing from now on; the fast one counts every sample it gets
            first_seq: int | None = None
            next_seq = 0
            while slow_client.dropped < 5 * QUEUE_FRAMES:
                batch = msgpack.unpackb((await next_of(fast, "sensor_batch"))[0]["batch"])
                if first_seq is None:
                    first_seq = next_seq = batch["seq"]
                assert batch["seq"] == next_seq, "the fast client lost nothing"
                next_seq = batch["seq"] + batch["n"]
            assert first_seq is not None
            fast_samples = next_seq - first_seq
            # all of it contiguous, while the slow one lost 40+ frames: more than its queue holds
            assert fast_samples > QUEUE_FRAMES * 100
            # the slow one, reading again: told how many frames it lost, then the newest ones
            told = 0
            slow_samples = 0
            while told == 0 or slow_samples == 0:
                message = decode(await asyncio.wait_for(slow.recv(), TIMEOUT))
                if message["type"] == "dropped":
                    told += message["count"]
                    assert message["total"] >= told
                elif message["type"] == "sensor_batch" and told:
                    slow_samples += msgpack.unpackb(message["batch"])["n"]
            assert told >= 5 * QUEUE_FRAMES
            assert gateway.hub.clients and all(
                c.dropped == 0 for c in gateway.hub.clients if c is not slow_client
            )

    run(scenario())


def test_connections_are_counted_and_released(gateway: Gateway) -> None:
    async def scenario() -> None:
        async with open_ws(gateway, VIEWER) as ws:
            await ask(ws, {"type": "get_sensors"}, "sensor_data")
            assert gateway.bus.websocket_connections == 1

    run(scenario())
    wait_until(lambda: gateway.bus.websocket_connections == 0, TIMEOUT, "the connection to be released")
    assert gateway.bus.websocket_connections == 0
    assert not gateway.hub.clients


def test_problems_are_pushed_on_connect_and_as_they_change(gateway: Gateway) -> None:
    def components(message: dict[str, Any]) -> dict[str, str]:
        return {p["component"]: p["reason"] for p in message["problems"]}

    async def next_problems(ws: ClientConnection, match: Any) -> dict[str, str]:
        while True:
            found = components((await next_of(ws, "problems"))[0])
            if match(found):
                return found

    async def scenario() -> None:
        async with open_ws(gateway, VIEWER) as viewer:
            # no logger runs in this module: said on connect, with the reason
            found = await next_problems(viewer, lambda found: "logger" in found)
            assert found["logger"] == "logger is offline (never seen on the broker)", found
            gateway.stm32.stall(3.0)
            found = await next_problems(viewer, lambda found: "stm32" in found)
            assert found["stm32"].startswith("STM32 silent: no frame for"), found
            found = await next_problems(viewer, lambda found: not {"stm32", "telemetry"} & found.keys())
            assert "logger" in found

    run(scenario())


def test_tokens_in_websocket_urls_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    redact_tokens_in_server_logs()
    with caplog.at_level(logging.INFO, logger="uvicorn.error"):
        logging.getLogger("uvicorn.error").info(
            '%s - "WebSocket %s" [accepted]', "127.0.0.1:5", f"/ws?token={OPERATOR}&x=1"
        )
    assert OPERATOR not in caplog.text and '"WebSocket /ws?token=<redacted>&x=1" [accepted]' in caplog.text
