"""Gateway REST end to end: real Mosquitto (project ACL, the `gateway` login), the STM32 and Arduino
emulators, rcs-acquisition, rcs-actuation and rcs-logger as processes, the gateway app in-process on
uvicorn (loopback, free port), an httpx client. Every wait is a liveness bound, not a timing assertion.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import HTTPException
from pydantic import SecretStr

from services.analyze import synth
from services.common import topics
from services.common.settings import PROJECT_ROOT, Settings, load_settings
from services.devstack.broker import Broker, free_port
from services.emulators.stm32 import Stm32Emulator
from services.gateway.app import create_app
from services.gateway.auth import Auth
from services.gateway.bus import Bus
from services.gateway.limits import ReadSlots
from services.gateway.serving import server_config
from tests.conftest import new_broker, wait_until
from tests.processes import Logger, emulated_devices
from tests.test_ctl import _ctl

TIMEOUT = 20.0
OPERATOR = "op-token-0123456789"
VIEWER = "viewer-token-0123456789"
ORIGIN = "http://localhost:3000"
MAX_CELLS = 100_000  # less than the synthetic recording's 6000 rows x 25 columns


@dataclass
class Gateway:
    url: str
    bus: Bus
    settings: Settings
    data_dir: Path
    synthetic: str = ""  # an older recording's file name
    tokens: dict[str, str] = field(default_factory=dict)  # named accounts made with rcs-users
    stm32: Stm32Emulator | None = None

    def client(self, token: str | None = OPERATOR) -> httpx.Client:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def gateway_settings(broker: Broker, data_dir: Path, **update: Any) -> Settings:
    base = load_settings()
    return base.model_copy(
        update={
            "mqtt": broker.settings("gateway"),
            "data_dir": data_dir,
            "auth": "on",
            "operator_token": SecretStr(OPERATOR),
            "viewer_token": SecretStr(VIEWER),
            **update,
        }
    )


class Served:
    """`create_app` on uvicorn in a thread, as rcs-gateway serves it (lifespan starts the bus)."""

    def __init__(self, settings: Settings) -> None:
        self.bus = Bus(settings)
        self.port = free_port()
        config = server_config(
            create_app(settings, self.bus, Auth(settings)), settings, host="127.0.0.1", port=self.port
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, TIMEOUT, "uvicorn")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def add_account(accounts: Path, name: str, role: str) -> str:
    """`rcs-users add` as a person runs it; the token it prints once."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.gateway.users",
            "add",
            name,
            "--role",
            role,
            "--file",
            str(accounts),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().rsplit(" ", 1)[1]


@pytest.fixture(scope="module")
def gateway(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gateway-rest")
    data_dir = tmp / "data"
    data_dir.mkdir()
    accounts = tmp / "gateway-accounts"
    tokens = {
        name: add_account(accounts, name, role) for name, role in (("alice", "operator"), ("bob", "viewer"))
    }
    base = gateway_settings(broker, data_dir)
    settings = base.model_copy(
        update={
            "gateway": base.gateway.model_copy(
                update={"secrets_file": accounts, "max_answer_cells": MAX_CELLS}
            )
        }
    )
    # an older recording (within the logger's retention), made like the logger's files
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    plan = synth.SynthPlan(start=start, seconds=3.0, rate_hz=2000, gaps=1, rotate_s=60)
    ((synthetic, _),) = synth.write(settings, plan, data_dir)
    (data_dir / "notes.txt").write_text("not a recording")
    with ExitStack() as stack:
        stm32, _arduino, _acquisition = emulated_devices(stack, settings, broker.settings, tmp)
        stack.enter_context(Logger(broker.settings("logger"), tmp, data_dir))
        served = Served(settings)
        stack.callback(served.stop)
        bus = served.bus
        wait_until(
            lambda: (bus.latest(topics.STATE_SYSTEM) or {}).get("state") == "idle", TIMEOUT, "actuation"
        )
        wait_until(
            lambda: (bus.latest(topics.STATE_MOTORS) or {}).get("connected") is True, TIMEOUT, "motors"
        )
        wait_until(lambda: bus.latest_sample() is not None, TIMEOUT, "telemetry")
        wait_until(
            lambda: (bus.latest(topics.status("logger")) or {}).get("state") == "online", TIMEOUT, "logger"
        )
        yield Gateway(
            f"http://127.0.0.1:{served.port}", bus, settings, data_dir, synthetic.name, tokens, stm32
        )


@pytest.fixture(scope="module")
def lonely(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway on a broker of its own with no service, in the legacy mode without tokens (RCS_AUTH=off)."""
    tmp = tmp_path_factory.mktemp("gateway-lonely")
    broker = new_broker()
    broker.start()
    base = gateway_settings(broker, tmp, auth="off")
    settings = base.model_copy(update={"gateway": base.gateway.model_copy(update={"command_timeout_s": 0.5})})
    served = Served(settings)
    try:
        yield Gateway(f"http://127.0.0.1:{served.port}", served.bus, settings, tmp)
    finally:
        served.stop()
        broker.close()


def only_numbers_or_null(value: Any) -> bool:
    if isinstance(value, list):
        return all(only_numbers_or_null(v) for v in value)
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


# -- security ------------------------------------------------------------------------------------


def test_reads_need_a_viewer_token_and_commands_an_operator_token(gateway: Gateway) -> None:
    with gateway.client(None) as anonymous, gateway.client("wrong") as wrong:
        for client in (anonymous, wrong):
            assert client.get("/api/status").status_code == 401
            assert client.get("/metrics").status_code == 401
            response = client.post("/api/valves", json={"valves": [0] * 9})
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
        assert anonymous.get("/api/health").json()["status"] == "ok"  # liveness is open
    with gateway.client(VIEWER) as viewer:
        assert viewer.get("/api/status").status_code == 200
        for path in ("/api/valves", "/api/abort", "/api/arm", "/api/save_sensor_buffer"):
            assert viewer.post(path, json={"valves": [0] * 9}).status_code == 403, path


def test_cors_preflight_allowed_for_configured_origins_only(gateway: Gateway) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    with gateway.client(None) as client:
        allowed = client.options("/api/valves", headers={"Origin": ORIGIN, **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == ORIGIN
        refused = client.options("/api/valves", headers={"Origin": "http://evil.example", **preflight})
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers


# -- reads ---------------------------------------------------------------------------------------


def test_hello_status_health(gateway: Gateway) -> None:
    with gateway.client(VIEWER) as client:
        assert client.get("/api/hello").json()["stand"] == gateway.settings.stand_name
        # (a loaded machine may starve the emulator past the 0.5 s silence limit for a moment)
        wait_until(lambda: client.get("/api/health").status_code == 200, TIMEOUT, "a healthy stand")
        assert client.get("/api/health").json() == {"status": "ok", "broker_connected": True, "problems": []}
        status = client.get("/api/status").json()
    assert status["system_mode"] == "idle"
    assert status["stm32_connected"] is True and status["arduino_connected"] is True
    assert status["simulation_active"] is True
    assert status["websocket_connections"] == 0
    stand = ("acquisition", "actuation", "logger", "gateway")  # other clients' statuses may be listed too
    assert {name: status["services"][name] for name in stand} == dict.fromkeys(stand, "online")
    assert status["status"] == "ok" and status["problems"] == []
    assert isinstance(status["lost_samples_total"], int)


def test_a_silent_stm32_fails_health_with_the_reason_until_it_talks_again(gateway: Gateway) -> None:
    assert gateway.stm32 is not None
    found: list[dict[str, str]] = []

    def failing_with(component: str, words: str) -> bool:
        response = client.get("/api/health")
        found[:] = response.json()["problems"]
        return response.status_code == 503 and any(
            p["component"] == component and words in p["reason"] for p in found
        )

    with gateway.client(None) as client:  # /api/health needs no token
        gateway.stm32.stall(4.0)
        wait_until(lambda: failing_with("stm32", "STM32 silent: no frame for"), TIMEOUT, "health to fail")
        wait_until(lambda: failing_with("telemetry", "telemetry stale"), TIMEOUT, "stale telemetry")
        assert client.get("/api/health").json()["status"] == "failing"
        with gateway.client(VIEWER) as viewer:
            status = viewer.get("/api/status").json()
        assert status["status"] == "degraded" and status["stm32_connected"] is False, status
        assert {"stm32", "telemetry"} <= {p["component"] for p in status["problems"]}, status
        wait_until(lambda: client.get("/api/health").status_code == 200, TIMEOUT, "the stand to recover")
    with gateway.client(VIEWER) as viewer:
        wait_until(
            lambda: viewer.get("/api/status").json()["lost_samples_total"] > 0,
            TIMEOUT,
            "the samples lost while silent to be counted",
        )


def test_sensors_latest_values_and_legacy_shape(gateway: Gateway) -> None:
    with gateway.client(VIEWER) as client:
        sensors = client.get("/api/sensors").json()
    assert set(sensors["channels"]) == set(gateway.settings.channel_names)
    legacy = sensors["sensor_data"]
    assert len(legacy["pressures"]) == 8 and len(legacy["temperatures"]) == 8
    assert legacy["p_chamber"] == sensors["channels"]["P5"]
    assert legacy["thrust"] == sensors["channels"]["THRUST"]
    assert legacy["timestamp"].endswith("Z") and legacy["timestamp"].startswith(str(datetime.now(UTC).year))
    assert legacy["errors"] == 0
    assert all(only_numbers_or_null(v) for k, v in legacy.items() if k != "timestamp"), legacy


def test_buffer_status_and_history(gateway: Gateway) -> None:
    with gateway.client(VIEWER) as client:
        buffer = client.get("/api/buffer_status").json()
        history = client.get("/api/history", params={"seconds": 1, "points": 50}).json()
        bad = client.get("/api/history", params={"seconds": -1})
    assert buffer["size"] > 0 and buffer["capacity"] > buffer["size"]
    assert history["channels"] == list(gateway.settings.channel_names)
    assert 0 < history["n"] <= 50 and len(history["t"]) == history["n"]
    assert all(len(history["min"][c]) == history["n"] for c in history["channels"])
    assert all(
        lo is None or lo <= hi for lo, hi in zip(history["min"]["P1"], history["max"]["P1"], strict=True)
    )
    assert bad.status_code == 422


def _metric(text: str, name: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


def test_metrics_count_bad_requests_and_log_them_once(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    with gateway.client(VIEWER) as viewer, gateway.client() as operator:
        before = viewer.get("/metrics").text
        with caplog.at_level(logging.WARNING, logger="rcs.gateway.http"):
            for _ in range(5):
                assert operator.post("/api/valves", json={"valves": "nope"}).status_code == 422
        after = viewer.get("/metrics").text
    assert "rcs_gateway_bus_telemetry_batches_total" in after
    assert "rcs_gateway_http_unauthorized_total" in after and "rcs_gateway_ws_bad_messages_total" in after
    invalid = "rcs_gateway_http_invalid_total"
    assert _metric(after, invalid) - _metric(before, invalid) == 5
    assert caplog.text.count("refused an invalid request POST /api/valves") == 1


def test_invalid_requests_are_logged_once_per_route_whatever_the_names(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    with gateway.client(VIEWER) as viewer, caplog.at_level(logging.WARNING, logger="rcs.gateway.http"):
        for n in range(5):
            name = f"sensor_log_20260101_00000{n}_0.parquet"
            assert viewer.get(f"/api/parquet_data/{name}", params={"offset": -1}).status_code == 422
    assert caplog.text.count("refused an invalid request GET /api/parquet_data/{filename}") == 1, caplog.text


# -- commands ------------------------------------------------------------------------------------


def test_valves_accepted_refused_and_audited(gateway: Gateway) -> None:
    with gateway.client() as client:
        accepted = client.post("/api/valves", json={"valves": [0, 0, 0, 0, 0, 0, 1, 1, 0]})
        assert accepted.status_code == 200, accepted.text
        assert accepted.json() == {
            "success": True,
            "valves": [0, 0, 0, 0, 0, 0, 1, 1, 0],
            "bits": "000000110",
        }
        refused = client.post("/api/valves", json={"valves": [0, 0, 0, 0, 0, 0, 0, 0, 1]})  # IGNITION, idle
        assert refused.status_code == 409
        assert "igniter-needs-armed" in refused.json()["detail"]
        assert client.post("/api/valves", json={"valves": [0] * 8}).status_code == 422
        assert client.post("/api/valves", json={"valves": [2] * 9}).status_code == 422
        assert client.post("/api/valves", content=b"{not json").status_code == 422
        assert client.post("/api/valves", json={"valves": [0] * 9}).status_code == 200

        def audited() -> list[dict[str, Any]]:
            events = client.get("/api/events", params={"limit": 50}).json()["events"]
            return [e for e in events if e.get("kind") == "command" and e.get("command") == "valves"]

        wait_until(lambda: len(audited()) >= 3, TIMEOUT, "audit events")
        closed, refused_event, opened = audited()[:3]  # newest first
    assert (opened["who"], opened["origin"], opened["accepted"]) == ("operator", "gateway 127.0.0.1", True)
    assert refused_event["accepted"] is False and closed["accepted"] is True


def test_named_accounts_are_audited_by_name_whatever_the_body_says(gateway: Gateway) -> None:
    with gateway.client(gateway.tokens["bob"]) as viewer:
        assert viewer.get("/api/status").status_code == 200
        assert viewer.post("/api/valves", json={"valves": [0] * 9}).status_code == 403
    with gateway.client(gateway.tokens["alice"]) as alice:
        body = {"valves": [0] * 9, "who": "mallory", "origin": "nowhere", "login": "actuation"}
        assert alice.post("/api/valves", json=body).status_code == 200

        def audited() -> list[dict[str, Any]]:
            events = alice.get("/api/events", params={"limit": 50}).json()["events"]
            return [e for e in events if e.get("kind") == "command" and e.get("who") == "alice"]

        wait_until(lambda: audited() != [], TIMEOUT, "alice's audit event")
        event = audited()[0]
    assert (event["login"], event["origin"]) == ("gateway", "gateway 127.0.0.1")
    assert (event["service"], event["publisher"]) == ("actuation", "actuation")
    assert "claimed_who" not in event and "forged" not in event
    assert event["args"] == {"valves": [0] * 9}


def test_step_motor(gateway: Gateway) -> None:
    with gateway.client() as client:
        moved = client.post("/api/step_motor", json={"motor_id": 1, "angle": 10})
        assert moved.status_code == 200, moved.text
        assert moved.json()["success"] is True and moved.json()["motor_id"] == 1
        assert client.post("/api/step_motor", json={"motor_id": 3, "angle": 10}).status_code == 422
        assert client.post("/api/step_motor", json={"motor_id": 1, "angle": 1e9}).status_code == 422
        assert client.post("/api/step_motor", json={"motor_id": 1}).status_code == 422
        assert client.post("/api/step_motor", json={"motor_id": True, "angle": 10}).status_code == 422


@pytest.mark.parametrize("angle", ["NaN", "1e309", "-Infinity", "Infinity"])
def test_a_motor_angle_that_is_no_finite_number_is_422_with_the_reason(gateway: Gateway, angle: str) -> None:
    with gateway.client() as client:
        response = client.post(
            "/api/step_motor",
            content=f'{{"motor_id": 1, "angle": {angle}}}',
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("body.angle: "), response.text


def test_booleans_are_no_valve_states(gateway: Gateway) -> None:
    with gateway.client() as client:

        def commands() -> list[dict[str, Any]]:
            events = client.get("/api/events", params={"limit": 500}).json()["events"]
            return [e for e in events if e.get("kind") == "command"]

        before = commands()
        response = client.post("/api/valves", json={"valves": [True] + [0] * 8})
        assert response.status_code == 422, response.text
        assert response.json()["detail"].startswith("body.valves.0: ")
        assert client.post("/api/valves", json={"valves": [1.0] + [0] * 8}).status_code == 422
        assert commands() == before  # never sent to actuation


def test_errors_never_echo_the_input(gateway: Gateway) -> None:
    huge = "X" * 50_000  # within the body bound
    with gateway.client() as client:
        answers = [
            client.post("/api/valves", json={"valves": huge}),
            client.post("/api/valves", json={"valves": [huge[:5000]] * 9}),
            client.get("/api/parquet_data/" + huge[:2000]),
            client.get(f"/api/parquet_data/{gateway.synthetic}", params={"columns": f"seq,{huge[:3000]}"}),
            client.get("/api/events", params={"limit": huge[:2000]}),
        ]
    for answer in answers:
        assert answer.status_code in (404, 422), answer.text[:300]
        assert "XXX" not in answer.text and len(answer.text) < 1000, answer.text[:300]
        assert isinstance(answer.json()["detail"], str)


def test_a_body_over_the_bound_is_413_before_it_is_read(gateway: Gateway) -> None:
    bound = gateway.settings.gateway.max_body_bytes
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:  # no token, no body
        sock.sendall(
            f"POST /api/valves HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {64 * 1024**2}\r\n\r\n".encode()
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 413 ")  # answered without waiting for 64 MB

    def chunks() -> Iterator[bytes]:  # chunked: no Content-Length to go by
        yield b'{"valves": ['
        for _ in range(4 * bound // 1024):
            yield b"0, " * 341 + b"0,"
        yield b"0]}"

    with gateway.client() as client:
        streamed = client.post("/api/valves", content=chunks(), headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413, streamed.text
        assert "request body larger than" in streamed.json()["detail"]
        assert client.post("/api/valves", json={"valves": [0] * 9}).status_code == 200  # the next one is fine


def test_arm_needs_an_operator_heartbeat_then_arm_and_disarm(gateway: Gateway) -> None:
    with gateway.client() as client:
        refused = client.post("/api/arm")
        assert refused.status_code == 409 and "cannot arm" in refused.json()["detail"]
        stop = threading.Event()

        def heartbeats() -> None:  # what an open operator WebSocket does
            while not stop.wait(0.2):
                gateway.bus.heartbeat("operator")

        beating = threading.Thread(target=heartbeats, daemon=True)
        gateway.bus.heartbeat("operator")
        beating.start()
        try:
            wait_until(lambda: client.post("/api/arm").status_code == 200, TIMEOUT, "arming")
            assert client.get("/api/status").json()["system_mode"] == "armed"
            assert client.post("/api/disarm").json() == {
                "success": True,
                "state": "idle",
                "scenario": None,
                "valves": None,
                "bits": None,
            }
        finally:
            stop.set()
            beating.join()


def test_save_sensor_buffer_then_recordings(gateway: Gateway) -> None:
    with gateway.client() as client:
        saved = client.post("/api/save_sensor_buffer")
        assert saved.status_code == 200, saved.text
        name = saved.json()["file"]
        files = client.get("/api/parquet_files").json()
        assert files[0]["name"] == name  # newest first
        assert files[-1]["name"] == gateway.synthetic
        assert all(f["name"].endswith(".parquet") for f in files)  # notes.txt is not listed
        assert all(f["size"] > 0 and f["path"].endswith(f["name"]) for f in files)
        data = client.get(f"/api/parquet_data/{name}", params={"limit": 5}).json()
    assert data["rowCount"] > 0 and data["columns"][:3] == ["timestamp", "seq", "session"]
    assert len(data["data"]["seq"]) == min(5, data["rowCount"])


def test_parquet_data_windows_columns_and_reduction(gateway: Gateway) -> None:
    old = gateway.synthetic
    with gateway.client(VIEWER) as client:
        whole = client.get(f"/api/parquet_data/{old}", params={"limit": 100_000, "columns": "seq,P5"}).json()
        window = client.get(
            f"/api/parquet_data/{old}", params={"offset": 100, "limit": 10, "columns": "seq,P5"}
        )
        reduced = client.get(f"/api/parquet_data/{old}", params={"points": 40, "columns": "timestamp,seq,P5"})
        unknown = client.get(f"/api/parquet_data/{old}", params={"columns": "seq,NOPE"})
    rows = whole["rowCount"]
    assert len(whole["data"]["P5"]) == rows and whole["reduced"] is False
    assert window.json()["columns"] == ["seq", "P5"]
    assert window.json()["data"]["seq"] == whole["data"]["seq"][100:110]
    body = reduced.json()
    assert body["reduced"] is True and len(body["data"]["P5"]) == 40
    p5 = [v for v in whole["data"]["P5"] if v is not None]
    assert max(v for v in body["data"]["P5"] if v is not None) == max(p5)  # spikes survive
    assert min(v for v in body["data"]["P5"] if v is not None) == min(p5)
    assert (
        body["data"]["seq"][0] == whole["data"]["seq"][0]
        and body["data"]["seq"][-1] == whole["data"]["seq"][-1]
    )
    assert unknown.status_code == 422


def test_parquet_data_answers_are_bounded(gateway: Gateway) -> None:
    old = gateway.synthetic
    with gateway.client(VIEWER) as client:
        everything = client.get(f"/api/parquet_data/{old}", params={"limit": 100_000})
        page = client.get(f"/api/parquet_data/{old}", params={"limit": MAX_CELLS // 25})
        repeated = client.get(f"/api/parquet_data/{old}", params={"limit": 10, "columns": "P1," * 1000})
        too_long = client.get(f"/api/parquet_data/{old}", params={"columns": "P1," * 2000})
    assert everything.status_code == 422
    assert "page with offset" in everything.json()["detail"]
    assert page.status_code == 200 and len(page.json()["data"]["seq"]) == MAX_CELLS // 25
    assert repeated.status_code == 200 and repeated.json()["columns"] == ["P1"]
    assert too_long.status_code == 422


def test_heavy_reads_beyond_the_bound_are_refused_not_queued() -> None:
    slots = ReadSlots(1)
    with slots.take():
        with pytest.raises(HTTPException) as busy, slots.take():
            pass
        assert busy.value.status_code == 503 and busy.value.headers == {"Retry-After": "1"}
    with slots.take():  # released
        assert slots.refused == 1


@pytest.mark.parametrize(
    "name",
    [
        "..%2F..%2Fetc%2Fpasswd",
        "..%2Fdata%2F{synthetic}",
        "%2E%2E%2F%2E%2E%2Fdata%2F{synthetic}",
        "notes.txt",
        "{synthetic}%00.txt",
        "..",
        "sensor_log_20990101_000000_0.parquet",
    ],
)
def test_parquet_data_only_serves_recordings_of_the_data_dir(gateway: Gateway, name: str) -> None:
    with gateway.client(VIEWER) as client:
        response = client.get("/api/parquet_data/" + name.format(synthetic=gateway.synthetic))
    assert response.status_code == 404, response.text


def test_hold_resume_and_alarms(gateway: Gateway) -> None:
    stop = threading.Event()

    def heartbeats() -> None:  # what an open operator WebSocket does: a running sequence needs them
        while not stop.wait(0.2):
            gateway.bus.heartbeat("operator")

    beating = threading.Thread(target=heartbeats, daemon=True)
    gateway.bus.heartbeat("operator")
    beating.start()
    try:
        with gateway.client() as client:
            nothing = client.post("/api/hold")
            assert nothing.status_code == 409 and nothing.json()["detail"] == "no sequence is running"
            assert client.post("/api/scenario/o2cleaning").status_code == 200
            held = client.post("/api/hold", json={"reason": "pad check"})
            assert held.status_code == 200, held.text
            assert held.json()["scenario"] == "o2cleaning"
            assert client.post("/api/hold").json()["detail"].startswith("sequence o2cleaning is already held")
            assert client.post("/api/resume").json()["success"] is True
            assert client.post("/api/resume").status_code == 409  # not held
            alarms = client.get("/api/alarms")
            assert alarms.status_code == 200 and isinstance(alarms.json()["alarms"], list)
            unknown = client.post("/api/alarms/999/ack")
            assert unknown.status_code == 409 and unknown.json()["detail"].startswith("no alarm 999")
            assert client.post("/api/alarms/0/ack").status_code == 422
            assert client.post(f"/api/alarms/{10**30}/ack").status_code == 422
            wait_until(lambda: client.get("/api/status").json()["system_mode"] == "idle", TIMEOUT, "the end")
    finally:
        stop.set()
        beating.join()
    with gateway.client(VIEWER) as viewer:
        assert viewer.get("/api/alarms").status_code == 200
        assert viewer.post("/api/hold").status_code == 403


def test_scenarios_and_abort(gateway: Gateway) -> None:
    with gateway.client() as client:
        assert client.post("/api/scenario/nope").status_code == 404
        started = client.post("/api/scenario/o2cleaning")
        assert started.status_code == 200, started.text
        assert started.json()["scenario"] == "o2cleaning" and started.json()["success"] is True
        refused = client.post("/api/scenario/preburning")  # needs armed
        assert refused.status_code == 409
        emergency = client.post("/api/scenario/emergency")  # the abort sequence: an abort
        assert emergency.status_code == 200 and emergency.json()["state"] == "aborting"
        assert client.post("/api/abort").json()["state"] == "aborting"  # idempotent
        assert client.post("/api/valves", json={"valves": [0] * 9}).status_code == 409  # aborting


# -- no services, legacy mode ----------------------------------------------------------------------


def test_a_service_down_is_503_never_200(lonely: Gateway) -> None:
    with lonely.client(None) as client:  # RCS_AUTH=off: the existing frontend sends no token
        status = client.get("/api/status").json()
        assert status["status"] == "degraded" and status["services"]["gateway"] == "online"
        health = client.get("/api/health")
        assert health.status_code == 503 and health.json()["status"] == "failing"
        reasons = {p["component"]: p["reason"] for p in health.json()["problems"]}
        assert reasons["acquisition"] == "acquisition is offline (never seen on the broker)", reasons
        assert {"actuation", "logger", "telemetry"} <= reasons.keys() and "gateway" not in reasons
        assert health.json()["problems"] == status["problems"]
        for method, path, body in (
            ("POST", "/api/valves", {"valves": [0] * 9}),
            ("POST", "/api/abort", None),
            ("POST", "/api/save_sensor_buffer", None),
            ("GET", "/api/buffer_status", None),
            ("GET", "/api/history", None),
        ):
            response = client.request(method, path, json=body)
            assert response.status_code == 503, (path, response.text)
            assert response.json()["detail"]
        sensors = client.get("/api/sensors").json()
    assert sensors["t"] is None and sensors["sensor_data"]["timestamp"].endswith("Z")
    assert (
        sensors["sensor_data"]["errors"] == 17
    )  # every measured channel missing: P1..P8, 8 temperatures, THRUST


# -- before the test: tare and checklist ---------------------------------------------------------


def test_tare_and_checklist_over_rest(gateway: Gateway) -> None:
    with gateway.client() as client, gateway.client(VIEWER) as viewer:
        for body, problem in (
            ({"channels": ["NOPE"]}, "body.channels: 1 unknown channels"),
            ({"channels": ["ISP"]}, "body.channels: ISP derived on the host"),
            ({"channels": []}, "body.channels: List should have at least 1 item"),
            (
                {"channels": ["THRUST"], "seconds": 0},
                "body.seconds: Input should be greater than or equal to 0.1",
            ),
            (
                {"channels": ["THRUST"], "seconds": 31},
                "body.seconds: Input should be less than or equal to 30",
            ),
            ({"channels": ["THRUST"], "clear": 1}, "body.clear: Input should be a valid boolean"),
            ({"channels": ["THRUST"], "extra": 1}, "body.extra: Extra inputs are not permitted"),
        ):
            refused = client.post("/api/tare", json=body)
            assert refused.status_code == 422, body
            assert refused.json()["detail"].startswith(problem), refused.json()
        assert viewer.post("/api/tare", json={"channels": ["THRUST"]}).status_code == 403

        # a tare only while idle (an earlier test's abort sequence may still be running)
        wait_until(lambda: client.get("/api/status").json()["system_mode"] == "idle", TIMEOUT, "idle")
        tared = client.post("/api/tare", json={"channels": ["THRUST"], "seconds": 0.5})
        assert tared.status_code == 200, tared.text
        answer = tared.json()
        assert answer["success"] is True and answer["channels"] == ["THRUST"] and answer["samples"] > 0
        assert answer["tare"]["THRUST"]["by"] == "operator" and answer["tare"]["THRUST"]["unit"] == "N"
        wait_until(
            lambda: "THRUST" in ((gateway.bus.latest(topics.TELEMETRY_META) or {}).get("tare") or {}),
            TIMEOUT,
            "the tare in the telemetry meta",
        )
        cleared = client.post("/api/tare", json={"channels": ["THRUST"], "clear": True})
        assert cleared.status_code == 200 and "THRUST" not in cleared.json()["tare"]

        checklist = viewer.get("/api/checklist")
        assert checklist.status_code == 200, checklist.text
        items = checklist.json()["items"]
        assert [i["id"] for i in items] == ["stm32", "valves-closed"]  # tests/processes.py's checklist
        assert set(items[0]) == {"id", "label", "kind", "ok", "reason", "tare"} and items[0]["ok"] is True
        assert isinstance(checklist.json()["ok"], bool) and isinstance(checklist.json()["ts"], float)


# -- test runs -------------------------------------------------------------------------------------

REPORT_TIMEOUT = 180.0  # the report is a process of its own: slow to start on a loaded machine


def test_runs_start_list_stop_report_and_download_over_rest_and_rcs_ctl(
    gateway: Gateway, broker: Broker
) -> None:
    with gateway.client() as client, gateway.client(VIEWER) as viewer:
        # an abort of an earlier test over first: a run during an abort ends `aborted`
        wait_until(lambda: client.get("/api/status").json()["system_mode"] == "idle", TIMEOUT, "idle")
        assert viewer.post("/api/runs", json={"name": "x"}).status_code == 403
        assert client.post("/api/runs", json={"name": ""}).status_code == 422
        assert client.post("/api/runs", json={"name": "x", "extra": 1}).status_code == 422
        started = client.post("/api/runs", json={"name": "Leak check", "notes": "before the hot fire"})
        assert started.status_code == 200, started.text
        run = started.json()["run"]
        run_id = run["id"]
        assert run_id.endswith("-leak-check") and run["active"] is True and run["operators"] == ["operator"]
        again = client.post("/api/runs", json={"name": "again"})
        assert again.status_code == 409 and again.json()["detail"] == f"run {run_id} is active: stop it first"
        wait_until(
            lambda: [r["id"] for r in viewer.get("/api/runs").json()][:1] == [run_id],
            TIMEOUT,
            "the active run",
        )
        assert viewer.get(f"/api/runs/{run_id}").json()["active"] is True
        assert viewer.get(f"/api/runs/{run_id}/report").status_code == 404  # not recorded yet
        wrong = client.post("/api/runs/20200101T000000Z-nothing/stop")
        assert wrong.status_code == 409 and "is not active" in wrong.json()["detail"]
        stopped = client.post(f"/api/runs/{run_id}/stop")
        assert stopped.status_code == 200 and stopped.json()["run"]["result"] == "stopped"

        def recorded() -> bool:  # run.json written (an active run has no sample count)
            return "samples" in viewer.get(f"/api/runs/{run_id}").json()

        wait_until(recorded, TIMEOUT, "run.json")
        listed = viewer.get("/api/runs").json()
        assert listed[0]["id"] == run_id and listed[0]["samples"] > 0 and "config_yaml" not in listed[0]
        samples = viewer.get(f"/api/runs/{run_id}/samples")
        assert samples.status_code == 200 and samples.content.startswith(b"PAR1")

        def reported() -> bool:
            return bool(viewer.get(f"/api/runs/{run_id}").json()["report"]["status"] != "pending")

        wait_until(reported, REPORT_TIMEOUT, "the report")
        page = viewer.get(f"/api/runs/{run_id}/report")
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html") and run_id in page.text

        for bad in ("..%2F..%2Fetc", "20200101T000000Z-nothing", "x" * 81, "20200101T000000Z-..."):
            for path in (f"/api/runs/{bad}", f"/api/runs/{bad}/report", f"/api/runs/{bad}/samples"):
                answer = viewer.get(path)
                assert answer.status_code in (404, 422), (path, answer.status_code)
                assert "etc" not in answer.text
        assert (
            viewer.get("/api/runs/20200101T000000Z-nothing").json()["detail"]
            == "no run 20200101T000000Z-nothing"
        )

    # rcs-ctl: start, list, show, stop
    operator = broker.settings("operator")
    started_ctl, _ = _ctl(operator, "run", "start", "Cold flow", "--notes", "from the terminal").communicate(
        timeout=TIMEOUT
    )
    assert b"started" in started_ctl, started_ctl.decode()
    with gateway.client(VIEWER) as viewer:
        active = viewer.get("/api/runs").json()[0]
        assert active["active"] is True and active["notes"] == "from the terminal"
    listed_ctl, _ = _ctl(operator, "run", "list").communicate(timeout=TIMEOUT)
    assert active["id"].encode() in listed_ctl and run_id.encode() in listed_ctl
    stopping = _ctl(operator, "run", "stop", active["id"])
    stopped_ctl, _ = stopping.communicate(timeout=TIMEOUT)
    assert stopping.returncode == 0 and b"stopped (stopped)" in stopped_ctl, stopped_ctl.decode()
    shown, _ = _ctl(operator, "run", "show", run_id).communicate(timeout=TIMEOUT)
    assert b"config_sha256" in shown and b"config_yaml" not in shown
    refused = _ctl(operator, "run", "stop")
    output, _ = refused.communicate(timeout=TIMEOUT)
    assert refused.returncode == 1 and b"no run is active" in output
