"""Abort is never queued behind anything (docs/safety.md §5.2), end to end: real Mosquitto (project
ACL), the STM32 and Arduino emulators behind ptys, rcs-acquisition and rcs-actuation as processes, the
gateway (REST and `/ws`) in uvicorn on a free loopback port, clients flooding it with commands.

What reached the STM32 is read from the emulator's receive tap. Every wait is a liveness bound.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from services.common import topics
from services.common.mqtt import MqttClient
from services.common.rpc import RpcClient, RpcError
from services.common.settings import MqttSettings, Settings
from services.devstack.broker import Broker
from services.emulators.stm32 import Stm32Emulator
from tests.conftest import wait_until
from tests.test_actuation_e2e import RELIEFS, DeviceWrites, Observer, running_stand
from tests.test_gateway_rest import OPERATOR, Served, gateway_settings

TIMEOUT = 20.0
COMMAND_QUEUE = 8  # actuation's bound in this module (RCS_ACTUATION_COMMAND_QUEUE)
FLOOD = ("000000010", "000000100")  # FUEL2 / GOX2 alone: allowed while idle, in no abort step
CONNECTION_BURST, TOKEN_BURST = 5, 12
WHO = {"who": "flooder", "origin": "pytest"}


@dataclass
class Stand:
    settings: Settings
    stm32: Stm32Emulator
    writes: DeviceWrites
    operator: MqttClient
    seen: Observer
    served: Served
    mask: Callable[[str], int]

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.served.port}"

    def system_state(self) -> str:
        return str(self.seen.state(topics.STATE_SYSTEM).get("state"))


@pytest.fixture(scope="module")
def stand(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stand]:
    tmp = tmp_path_factory.mktemp("abort-priority")
    base = gateway_settings(broker, tmp)
    limits = {
        "connection_command_rate_per_s": 1.0,
        "connection_command_burst": CONNECTION_BURST,
        "token_command_rate_per_s": 1.0,
        "token_command_burst": TOKEN_BURST,
    }
    settings = base.model_copy(update={"gateway": base.gateway.model_copy(update=limits)})
    with ExitStack() as stack:
        devices = stack.enter_context(
            running_stand(settings, broker.settings, tmp, RCS_ACTUATION_COMMAND_QUEUE=str(COMMAND_QUEUE))
        )
        served = Served(settings)
        stack.callback(served.stop)
        wait_until(lambda: served.bus.latest_sample() is not None, TIMEOUT, "telemetry at the gateway")
        yield Stand(
            settings, devices.stm32, devices.writes, devices.operator, devices.seen, served, devices.mask
        )


def outcome(future: Future[dict[str, Any]]) -> str:
    try:
        future.result(0)
    except RpcError as exc:
        return str(exc).split(" (")[0]
    except Exception as exc:
        return type(exc).__name__
    return "ok"


def test_an_mqtt_flood_neither_delays_nor_outlives_an_abort(
    stand: Stand, mqtt_as: Callable[[str], MqttSettings]
) -> None:
    """The `rcs-ctl abort` case: valves requests flood actuation, another operator client aborts."""
    flooder = RpcClient(stand.operator)
    console = MqttClient(mqtt_as("operator"), "operator", client_id="rcs-test-abort-console")
    console.start()
    aborter = RpcClient(console)
    try:
        assert console.wait_connected(10)
        wait_until(lambda: stand.system_state() == "idle", TIMEOUT, "idle")
        before = len(stand.writes.seen())
        # The device reads nothing for a while: the valve writes of the commands being executed wait
        # for their acknowledgement, so actuation's queue stays full while the abort arrives (what
        # was decided before it may then be refused by the device, which is no execution after it).
        stand.stm32.stall(0.4)  # shorter than its 500 ms heartbeat watchdog
        flood = [
            flooder.request(topics.actuation("valves"), {"valves": FLOOD[i % 2], **WHO}, timeout=15)
            for i in range(200)
        ]
        wait_until(
            lambda: any(f.done() and outcome(f) == "busy: request queue full" for f in flood), 10, "busy"
        )
        result = aborter.call(topics.actuation("abort"), {"reason": "test: flood", **WHO}, timeout=10)
        assert result["state"] == "aborting" and result["bits"] == "000000000"
        wait_until(lambda: all(f.done() for f in flood), TIMEOUT, "every flood request to be answered")
        outcomes = [outcome(f) for f in flood]
        counts = {kind: outcomes.count(kind) for kind in set(outcomes)}
        assert counts.get("superseded by abort", 0) >= 1, counts
        assert counts.get("busy: request queue full", 0) >= 1, counts
        allowed = {
            "ok",
            "superseded by abort",
            "busy: request queue full",
            "aborting: only abort is accepted",
        }
        assert all(kind in allowed or kind.startswith("the STM32 refused") for kind in counts), counts
        wait_until(lambda: RELIEFS in stand.writes.seen()[before:], TIMEOUT, "the abort's venting step")
        written = stand.writes.seen()[before:]
        after_abort = written[written.index(0) :]  # no flood command closes everything: 0 is the abort
        flood_masks = {stand.mask(bits) for bits in FLOOD}
        assert not flood_masks & set(after_abort), (
            f"a flood command reached the device after the abort: {written}"
        )
        assert "test: flood" in str(stand.seen.state(topics.STATE_SYSTEM).get("reason"))
    finally:
        aborter.close()
        console.stop()
        flooder.close()


async def _ws_flood_then_abort(stand: Stand, n: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`n` valve commands as fast as they go, then `system_mode abort`; every answer until the abort's."""
    url = stand.http.replace("http", "ws", 1) + f"/ws?token={OPERATOR}"
    answers: list[dict[str, Any]] = []
    async with connect(url, max_queue=None, ping_interval=None) as ws:
        for i in range(n):
            await ws.send(json.dumps({"type": "valve_command", "valves": FLOOD[i % 2]}))
        await ws.send(json.dumps({"type": "system_mode", "mode": "abort"}))
        while True:
            frame = await asyncio.wait_for(ws.recv(), TIMEOUT)
            if isinstance(frame, bytes):
                continue  # sensor_data pushes (MessagePack)
            message = json.loads(frame)
            if message["type"] == "system_mode_response":
                return answers, message
            if message["type"] in ("error", "valve_response"):
                answers.append(message)


def test_websocket_commands_beyond_the_rate_limit_are_refused_and_abort_is_not(stand: Stand) -> None:
    answers, abort = asyncio.run(_ws_flood_then_abort(stand, 60))
    assert abort["success"] is True and abort["state"] == "aborting", abort
    limited = [a for a in answers if a["type"] == "error" and a["data"].startswith("rate limited")]
    assert len(limited) >= 60 - CONNECTION_BURST - 2, answers  # a token or two may refill meanwhile
    assert "on this connection" in limited[0]["data"]
    wait_until(lambda: stand.system_state() == "aborting", TIMEOUT, "the abort")
    metrics = httpx.get(f"{stand.http}/metrics", headers={"Authorization": f"Bearer {OPERATOR}"}).text
    assert f"rcs_gateway_ws_rate_limited_total {float(len(limited))}" in metrics
    assert stand.served.bus.abort_rpc.stats.replies >= 1, "the abort went on the abort connection"


def test_rest_commands_beyond_the_token_limit_are_429_and_abort_is_never_limited(stand: Stand) -> None:
    with httpx.Client(
        base_url=stand.http, headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=30
    ) as http:
        codes = [http.post("/api/arm").status_code for _ in range(TOKEN_BURST + 5)]
        assert 429 in codes, codes
        limited = http.post("/api/disarm")
        assert limited.status_code == 429 and "rate limited" in limited.json()["detail"]
        assert limited.headers["Retry-After"] == "1"
        for path in ("/api/abort", "/api/scenario/emergency"):
            answer = http.post(path)
            assert answer.status_code == 200 and answer.json()["state"] == "aborting", answer.text
        assert "rcs_gateway_http_rate_limited_total" in http.get("/metrics").text


async def _answer_while_an_abort_is_in_flight(stand: Stand) -> tuple[dict[str, Any], int, int]:
    """A WebSocket message sent while an abort (the device stalled) waits for its answer: its
    answer, and the aborts in flight when the message was sent and when it was answered."""
    bus = stand.served.bus
    url = stand.http.replace("http", "ws", 1) + f"/ws?token={OPERATOR}"
    async with connect(url, max_queue=None, ping_interval=None) as ws:
        stand.stm32.stall(0.4)  # the abort's first write waits for the device's acknowledgement
        abort = asyncio.create_task(
            asyncio.to_thread(
                httpx.post, f"{stand.http}/api/abort", headers={"Authorization": f"Bearer {OPERATOR}"}
            )
        )
        await asyncio.to_thread(wait_until, lambda: bus.aborts_in_flight > 0, TIMEOUT, "the abort sent")
        in_flight_when_sent = bus.aborts_in_flight
        await ws.send(json.dumps({"type": "subscribe", "mode": "off"}))
        while True:
            frame = await asyncio.wait_for(ws.recv(), TIMEOUT)
            message = json.loads(frame) if isinstance(frame, str) else {}
            if message.get("type") == "subscribed":
                in_flight_when_answered = bus.aborts_in_flight
                break
        assert (await abort).status_code in (200, 409)  # 409: aborting, the device's ack not in time
    return message, in_flight_when_sent, in_flight_when_answered


def test_no_websocket_message_is_read_while_an_abort_is_in_flight(stand: Stand) -> None:
    """The flood's messages wait in their sockets while the abort has the gateway to itself."""
    # from idle: the abort then writes its first step and waits for the (stalled) device's answer
    wait_until(lambda: stand.system_state() == "idle", TIMEOUT, "idle")
    answer, when_sent, when_answered = asyncio.run(_answer_while_an_abort_is_in_flight(stand))
    assert answer["mode"] == "off"
    assert when_sent == 1 and when_answered == 0, "read once the abort was answered, not before"


async def _flood_read_after_an_abort(stand: Stand, n: int) -> list[dict[str, Any]]:
    """The connection's rate limit used up, `n` valve commands in one go and at once a REST abort:
    the answers to the flood's commands that were within the rate limit (the gateway reads the
    flood at most one message a millisecond once over the limit, so the later ones come after the
    abort, as the limit lets one through a second)."""
    url = stand.http.replace("http", "ws", 1) + f"/ws?token={OPERATOR}"
    async with connect(url, max_queue=None, ping_interval=None) as ws:

        async def answer() -> dict[str, Any]:
            while True:
                frame = await asyncio.wait_for(ws.recv(), TIMEOUT)
                message = json.loads(frame) if isinstance(frame, str) else {}
                if message.get("type") in ("error", "valve_response"):
                    return message

        while (await _ask(ws, FLOOD[0], answer))["type"] != "error":
            pass  # until the rate limit refuses one: no token left
        for i in range(n):
            await ws.send(json.dumps({"type": "valve_command", "valves": FLOOD[i % 2]}))
        aborted = await asyncio.to_thread(
            httpx.post, f"{stand.http}/api/abort", headers={"Authorization": f"Bearer {OPERATOR}"}
        )
        assert aborted.status_code in (200, 409), aborted.text
        answers = [await answer() for _ in range(n)]
    return [a for a in answers if a["type"] == "valve_response"]


async def _ask(ws: Any, valves: str, answer: Callable[[], Any]) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "valve_command", "valves": valves}))
    message: dict[str, Any] = await answer()
    return message


def test_websocket_commands_sent_before_an_abort_and_read_after_it_are_superseded(stand: Stand) -> None:
    """What a client sent in one go before an abort on another connection never runs after it, even
    when the gateway reads it later: its `sent` is when its backlog began (docs/safety.md §5.2)."""
    wait_until(lambda: stand.system_state() == "idle", TIMEOUT, "idle")
    admitted = asyncio.run(_flood_read_after_an_abort(stand, 3000))
    reasons = [a.get("reason") for a in admitted]
    assert "superseded by abort" in reasons, reasons
    assert not any(str(r).startswith("aborting") for r in reasons), (
        f"a command sent before the abort was taken for a new one: {reasons}"
    )
    assert all(a["success"] or a["reason"] == "superseded by abort" for a in admitted), reasons
