"""rcs-stack supervises: the whole stand (its own Mosquitto, the emulators behind real ptys, every
service) on free ports; the logger is killed with SIGKILL mid-recording. The stack restarts it and
says so on rcs/events and in its retained status, the rest of the stand keeps running (acquisition is
the same process), every sample ends up in Parquet exactly once (the killed logger's unflushed tail
comes back from acquisition's ring buffer), and Ctrl-C still stops everything cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import SecretStr

from services.common import topics
from services.common.codec import WireFormatError, unpack_map
from services.common.mqtt import Message, MqttClient
from services.common.rpc import RpcClient, RpcTimeout
from services.common.settings import PROJECT_ROOT, MqttSettings
from services.devstack.broker import free_port
from tests.conftest import wait_until
from tests.recordings import acquired_seqs, recorded_seqs

TIMEOUT = 60.0  # liveness bounds only


class Bus:
    """The stack's events and retained status, as the operator receives them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self.stack: dict[str, Any] = {}

    def on_event(self, message: Message) -> None:
        try:
            event = unpack_map(message.payload)
        except WireFormatError:
            return
        if event.get("service") == "stack":
            with self._lock:
                self.events.append(event)

    def on_status(self, message: Message) -> None:
        with self._lock:
            self.stack = unpack_map(message.payload)

    def kinds(self, name: str) -> list[str]:
        with self._lock:
            return [e["kind"] for e in self.events if e.get("name") == name]

    def service(self, name: str) -> dict[str, Any]:
        with self._lock:
            services: dict[str, dict[str, Any]] = self.stack.get("services", {})
            return services.get(name, {})


def _operator_login(path: Path, port: int) -> MqttSettings:
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return MqttSettings(
        host="127.0.0.1",
        port=port,
        username=values["RCS_MQTT_USERNAME"],
        password=SecretStr(values["RCS_MQTT_PASSWORD"]),
    )


def _call(rpc: RpcClient, topic: str) -> dict[str, Any] | None:
    try:
        return rpc.call(topic, {}, timeout=3)
    except RpcTimeout:
        return None


def test_a_killed_logger_is_restarted_the_stand_keeps_running_and_nothing_is_lost(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in ("RCS_MQTT_USERNAME", "RCS_MQTT_PASSWORD")}
    env |= {
        "RCS_MQTT_HOST": "127.0.0.1",
        "RCS_MQTT_PORT": str(port),
        "RCS_HTTP_PORT": str(free_port()),
        "RCS_DATA_DIR": str(data_dir),
        "RCS_ACQUISITION_METRICS_PORT": "0",
        "RCS_ACTUATION_METRICS_PORT": "0",
        "RCS_LOGGER_METRICS_PORT": "0",
        "RCS_ACQUISITION_RING_SECONDS": "60",
        "RCS_LOGGER_ROTATE_S": "4",
    }
    operator_env = PROJECT_ROOT / "run" / "operator.env"
    operator_env.unlink(missing_ok=True)
    log_path = tmp_path / "stack.log"
    with log_path.open("wb") as log_file:
        stack = subprocess.Popen(
            [sys.executable, "-m", "services.devstack"], env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    operator: MqttClient | None = None
    rpc: RpcClient | None = None
    bus = Bus()
    try:
        wait_until(lambda: operator_env.exists() or stack.poll() is not None, TIMEOUT, "the stack's broker")
        assert stack.poll() is None, log_path.read_text()
        operator = MqttClient(_operator_login(operator_env, port), "operator")
        operator.subscribe(topics.EVENTS, bus.on_event, qos=1)
        operator.subscribe(topics.status("stack"), bus.on_status, qos=1)
        rpc = RpcClient(operator)
        operator.start()
        assert operator.wait_connected(10)
        acq: dict[str, Any] = {}

        def acquired_beyond(seq: int) -> bool:
            nonlocal acq
            acq = _call(rpc, topics.ACQ_BUFFER_STATUS) or {}
            return (acq.get("last_seq") or 0) > seq

        wait_until(lambda: acquired_beyond(20_000), TIMEOUT, "acquisition to run")
        session = acq["session"]
        wait_until(lambda: bus.service("logger").get("state") == "running", TIMEOUT, "the stack's status")
        wait_until(lambda: _call(rpc, topics.LOGGER_STATUS) is not None, TIMEOUT, "the logger")
        acquisition_pid = bus.service("acquisition")["pid"]
        killed = bus.service("logger")["pid"]

        os.kill(killed, signal.SIGKILL)
        wait_until(lambda: "service_restarted" in bus.kinds("logger"), TIMEOUT, "the logger's restart")
        assert bus.kinds("logger")[:2] == ["service_exited", "service_restarted"], bus.events
        assert next(e for e in bus.events if e["kind"] == "service_exited")["code"] == -signal.SIGKILL
        wait_until(lambda: bus.service("logger").get("pid") not in (None, killed), TIMEOUT, "a new logger")
        assert bus.service("logger")["restarts"] == 1
        # the rest of the stand never stopped
        assert stack.poll() is None
        assert bus.service("acquisition") == {
            "state": "running",
            "pid": acquisition_pid,
            "restarts": 0,
            "exit_code": None,
        }

        # every sample exactly once, the killed logger's last (unflushed) second included
        wait_until(lambda: acquired_beyond(0), TIMEOUT, "acquisition")
        assert acq["session"] == session and acq["first_seq"] == 0, acq
        target = int(acq["last_seq"])

        def logged_through() -> bool:
            status = _call(rpc, topics.LOGGER_STATUS)
            if status is None or status["repair_pending"]:
                return False
            intervals = status["sessions"].get(session, [])
            return bool(intervals) and intervals[0][0] == 0 and intervals[-1][1] >= target

        wait_until(logged_through, TIMEOUT, f"the logger to hold 0..{target}")
        rpc.call(topics.LOGGER_SAVE, {}, timeout=30)
        seqs = recorded_seqs(data_dir, session)
        assert len(np.unique(seqs)) == len(seqs), "a sample was written twice"
        np.testing.assert_array_equal(seqs[seqs <= target], acquired_seqs(rpc, target))
    finally:
        if rpc is not None:
            rpc.close()
        if operator is not None:
            operator.stop()
        stack.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            code = stack.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stack.kill()
            code = stack.wait()
    assert code == 0, log_path.read_text()[-5000:]
    assert "stopped" in log_path.read_text()
