"""Who is who, end to end: the stand of tests/test_actuation_e2e.py (real Mosquitto with the project's
ACL, the STM32 and Arduino emulators behind real ptys, acquisition and actuation as processes) against
clients that guess ids, send garbage heartbeats or run `rcs-ctl` as a person does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from services.common import topics
from services.common.codec import pack, unpack_map
from services.common.mqtt import Message, MqttClient
from services.common.rpc import RpcError
from services.common.settings import PROJECT_ROOT, MqttSettings
from tests.conftest import wait_until
from tests.test_actuation_e2e import TIMEOUT, Stand, stand  # noqa: F401 - the fixture

SERVICES = ("acquisition", "actuation")


class Statuses:
    """Every message on `rcs/status/+` as it arrives, plus a marker topic to know all before it came."""

    def __init__(self, settings: MqttSettings) -> None:
        self._lock = threading.Lock()
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.markers: list[bytes] = []
        self.client = MqttClient(settings, "test-statuses", announce=False)
        self.client.subscribe("rcs/status/+", self._on_status, qos=1)
        self.client.subscribe("rcs/test/marker", lambda m: self._keep_marker(m.payload), qos=1)
        self.client.start()
        assert self.client.wait_connected(10)

    def _on_status(self, message: Message) -> None:
        if message.payload:
            with self._lock:
                self.seen.append((message.topic, unpack_map(message.payload)))

    def _keep_marker(self, payload: bytes) -> None:
        with self._lock:
            self.markers.append(payload)

    def sync(self, publisher: MqttClient, marker: bytes) -> None:
        """Return once everything the broker sent this observer before `marker` has arrived."""
        publisher.publish("rcs/test/marker", marker, qos=1)
        wait_until(lambda: marker in self.markers, TIMEOUT, "the marker")

    def offline(self, service: str) -> list[dict[str, Any]]:
        with self._lock:
            return [s for t, s in self.seen if t == topics.status(service) and s.get("state") == "offline"]

    def latest(self, service: str) -> dict[str, Any]:
        with self._lock:
            return next((s for t, s in reversed(self.seen) if t == topics.status(service)), {})


def _guessed_ids(statuses: Statuses, reply_topics: list[str]) -> list[str]:
    """Every id a client could work out from what it can read: the old `rcs-<service>-<host>-<pid>`
    scheme from the retained statuses, the login names, and the last level of observed reply topics."""
    ids = [topic.rsplit("/", 1)[1] for topic in reply_topics]
    for service in SERVICES:
        status = statuses.latest(service)
        ids += [service, f"rcs-{service}", f"rcs-{service}-{status['host']}-{status['pid']}"]
    return ids


def _connect_as(settings: MqttSettings, client_id: str) -> None:
    """Connect with `client_id` (anonymously when `settings` has no login), then disconnect."""
    client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    if settings.username is not None and settings.password is not None:
        client.username_pw_set(settings.username, settings.password.get_secret_value())
    client.connect(settings.host, settings.port)  # blocking: returns once CONNACK is read in loop
    client.loop_start()
    try:
        wait_until(client.is_connected, TIMEOUT, f"the broker to accept {client_id}")
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_client_guessing_a_service_client_id_disturbs_nothing(
    stand: Stand,  # noqa: F811 - the imported fixture
    mqtt_as: Callable[[str], MqttSettings],
    anonymous_mqtt_settings: MqttSettings,
) -> None:
    statuses = Statuses(mqtt_as("operator"))
    replies: list[str] = []
    stand.operator.subscribe(
        "rcs/rpc/#", lambda m: replies.append(getattr(m.properties, "ResponseTopic", "")), qos=1
    )
    try:
        online = lambda: all(statuses.latest(s).get("state") == "online" for s in SERVICES)  # noqa: E731
        wait_until(online, TIMEOUT, "the services online")
        assert stand.operator.wait_connected(TIMEOUT)
        stand.call("valves", valves="000000000")  # a request shows its reply topic to every reader
        wait_until(lambda: replies != [], TIMEOUT, "a request seen")
        for client_id in _guessed_ids(statuses, replies):
            for login in (anonymous_mqtt_settings, mqtt_as("operator")):
                _connect_as(login, client_id)
        statuses.sync(stand.operator, b"after the guesses")
        assert {s: statuses.offline(s) for s in SERVICES} == {s: [] for s in SERVICES}
        assert stand.system_state() == "idle"
        assert stand.call("valves", valves="000000000")["bits"] == "000000000"  # actuation still serves
    finally:
        statuses.client.stop()


def test_garbage_on_the_heartbeat_topic_is_no_operator(
    stand: Stand,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    garbage = [
        b"",
        b"\xc1",
        pack({"ts": 0.0}),
        pack({"who": "x"}),
        pack({"who": "", "ts": 1e9}),
        pack({"who": "old", "ts": 1.0}),
    ]
    for _ in range(3):
        for payload in garbage:
            stand.operator.publish(topics.OPERATOR_HEARTBEAT, payload, qos=1)
    reason = _refusal(lambda: stand.call("arm"))
    assert "no operator heartbeat" in reason
    assert stand.system_state() == "idle"
    log = (tmp_path / "actuation.log").read_text()
    assert log.count("ignored an operator heartbeat") == 4, log  # once per kind: undecodable, who, ts, stale


def _refusal(call: Callable[[], object]) -> str:
    try:
        call()
    except RpcError as exc:
        return str(exc)
    raise AssertionError("the command was accepted")


@contextmanager
def _ctl(mqtt: MqttSettings, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ, RCS_MQTT_HOST=mqtt.host, RCS_MQTT_PORT=str(mqtt.port))
    env["RCS_MQTT_USERNAME"] = mqtt.username or ""
    env["RCS_MQTT_PASSWORD"] = mqtt.password.get_secret_value() if mqtt.password else ""
    process = subprocess.Popen(
        [sys.executable, "-m", "services.ctl", *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def _run_ctl(mqtt: MqttSettings, *args: str) -> tuple[int, str]:
    with _ctl(mqtt, *args) as process:
        output, _ = process.communicate(timeout=TIMEOUT)
        return process.returncode, output.decode()


def test_rcs_ctl_arms_only_while_hold_runs_and_commands_leave_hold_online(
    stand: Stand,  # noqa: F811 - the imported fixture
    mqtt_as: Callable[[str], MqttSettings],
) -> None:
    operator = mqtt_as("operator")
    code, output = _run_ctl(operator, "arm", "--who", "alice")
    assert code == 1 and "no operator heartbeat" in output, output
    assert stand.system_state() == "idle"

    statuses = Statuses(operator)
    try:
        with _ctl(operator, "hold", "--who", "alice") as hold:
            wait_until(
                lambda: statuses.latest("operator").get("pid") == hold.pid, TIMEOUT, "hold's online status"
            )
            heard: list[bytes] = []
            stand.operator.subscribe(topics.OPERATOR_HEARTBEAT, lambda m: heard.append(m.payload))
            wait_until(lambda: len(heard) >= 2, TIMEOUT, "hold's heartbeats")
            code, output = _run_ctl(operator, "arm", "--who", "alice")
            assert code == 0, output
            assert stand.system_state() == "armed"
            code, output = _run_ctl(operator, "disarm", "--who", "alice")
            assert code == 0, output
            statuses.sync(stand.operator, b"after the commands")
            assert statuses.latest("operator")["state"] == "online"
            assert statuses.latest("operator")["pid"] == hold.pid
            hold.send_signal(signal.SIGINT)
            hold.wait(TIMEOUT)
        assert stand.system_state() == "idle"
    finally:
        statuses.client.stop()
