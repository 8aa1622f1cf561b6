"""rcs-ctl, the operator's command line, as a person runs it: a child process logged in as `operator`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

from services.common import topics
from services.common.codec import unpack_map
from services.common.mqtt import Message, MqttClient
from services.common.settings import PROJECT_ROOT, MqttSettings
from tests.conftest import wait_until

TIMEOUT = 20.0


def _ctl(mqtt: MqttSettings, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, RCS_MQTT_HOST=mqtt.host, RCS_MQTT_PORT=str(mqtt.port))
    env["RCS_MQTT_USERNAME"] = mqtt.username or ""
    env["RCS_MQTT_PASSWORD"] = mqtt.password.get_secret_value() if mqtt.password else ""
    return subprocess.Popen(
        [sys.executable, "-m", "services.ctl", *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_hold_sends_operator_heartbeats_until_ctrl_c(mqtt_as: Callable[[str], MqttSettings]) -> None:
    seen: list[dict[str, object]] = []
    lock = threading.Lock()

    def on_heartbeat(message: Message) -> None:
        with lock:
            seen.append(unpack_map(message.payload))

    observer = MqttClient(mqtt_as("gateway"), "test-heartbeat-observer")
    observer.subscribe(topics.OPERATOR_HEARTBEAT, on_heartbeat)
    observer.start()
    process: subprocess.Popen[bytes] | None = None
    try:
        assert observer.wait_connected(10)
        process = _ctl(mqtt_as("operator"), "hold", "--who", "test-person")
        wait_until(lambda: len(seen) >= 3, TIMEOUT, "three heartbeats from rcs-ctl hold")
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, output.decode()
        with lock:
            assert {h["who"] for h in seen} == {"test-person"}
            assert all(isinstance(h["ts"], float) for h in seen)
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        observer.stop()
