"""The compose deployment's broker (mosquitto/stand.conf) with certificates from deploy/certs.sh: TLS
with the stand CA, refused without it, and no anonymous client on either listener.

The config is the deployment's own, its container paths and ports rewritten to a temp dir and free
loopback ports; Mosquitto is the system's, as for every broker test.
"""

from __future__ import annotations

import os
import pwd
import queue
import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from services.common import topics
from services.common.mqtt import Message, MqttClient
from services.common.settings import PROJECT_ROOT, GatewaySettings, MqttSettings
from services.devstack import credentials
from services.devstack.broker import BASE_ACL, broker_answers, free_port, mosquitto_binary
from tests.conftest import wait_until

STAND_CONF = PROJECT_ROOT / "mosquitto" / "stand.conf"
CERTS = PROJECT_ROOT / "deploy" / "certs.sh"
HOST = "127.0.0.1"
TIMEOUT = 10.0

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


@dataclass(frozen=True)
class StandBroker:
    plain_port: int
    tls_port: int
    ca: Path
    passwords: dict[str, str]

    def settings(self, user: str, *, tls: bool) -> MqttSettings:
        return MqttSettings(
            host=HOST,
            port=self.tls_port if tls else self.plain_port,
            username=user,
            password=SecretStr(self.passwords[user]),
            tls_ca_file=self.ca if tls else None,
        )


def _tls_handshake(port: int, context: ssl.SSLContext) -> str | None:
    with (
        socket.create_connection((HOST, port), timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as wrapped,
    ):
        return wrapped.version()


def _tls_listening(port: int, ca: Path) -> bool:
    try:
        return _tls_handshake(port, ssl.create_default_context(cafile=str(ca))) is not None
    except OSError:
        return False


@pytest.fixture(scope="module")
def stand_broker() -> Iterator[StandBroker]:
    # Not pytest's tmp_path: its parent is private to root, which mosquitto's own user cannot enter.
    with tempfile.TemporaryDirectory(prefix="rcs-stand-broker-") as name:
        yield from _run_stand_broker(Path(name))


def _run_stand_broker(directory: Path) -> Iterator[StandBroker]:
    subprocess.run([str(CERTS), str(directory / "tls")], check=True, capture_output=True)
    passwords = credentials.generate(directory / "passwd", (*credentials.USERS, *credentials.READERS))
    (directory / "acl").write_text(BASE_ACL.read_text())
    plain_port = free_port()
    tls_port = next(port for port in iter(free_port, None) if port != plain_port)
    config = (
        STAND_CONF.read_text()
        .replace("listener 1883", f"listener {plain_port} {HOST}")
        .replace("listener 8883", f"listener {tls_port} {HOST}")
        .replace("/mosquitto/tls/", f"{directory}/tls/")
        .replace("/mosquitto/passwd", f"{directory}/passwd")
        .replace("/mosquitto/acl", f"{directory}/acl")
    )
    if os.geteuid() == 0:  # mosquitto drops to its own user before reading the files
        account = pwd.getpwnam("mosquitto")
        for path in (
            directory,
            directory / "tls",
            *directory.glob("tls/*"),
            directory / "passwd",
            directory / "acl",
        ):
            os.chown(path, account.pw_uid, account.pw_gid)
        config += "\nuser mosquitto\n"
    (directory / "mosquitto.conf").write_text(config)
    with (directory / "mosquitto.log").open("wb") as log:
        process = subprocess.Popen(
            [mosquitto_binary(), "-c", str(directory / "mosquitto.conf")], stdout=log, stderr=log
        )
    try:
        wait_until(lambda: _tls_listening(tls_port, directory / "tls" / "ca.crt"), TIMEOUT, "TLS listener")
        yield StandBroker(plain_port, tls_port, directory / "tls" / "ca.crt", passwords)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_service_with_the_stand_ca_connects_over_tls_and_receives(stand_broker: StandBroker) -> None:
    received: queue.Queue[Message] = queue.Queue()
    reader = MqttClient(stand_broker.settings("reader", tls=True), "reader")
    writer = MqttClient(stand_broker.settings("acquisition", tls=False), "acquisition")
    reader.subscribe(topics.TELEMETRY, received.put)
    try:
        reader.start()
        writer.start()
        assert reader.wait_connected(TIMEOUT), "no TLS connection with the stand CA"
        assert writer.wait_connected(TIMEOUT)
        writer.publish(topics.TELEMETRY, b"over tls", qos=1)
        assert received.get(timeout=TIMEOUT).payload == b"over tls"
    finally:
        reader.stop()
        writer.stop()


def test_a_client_without_the_stand_ca_is_refused(stand_broker: StandBroker) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_handshake(stand_broker.tls_port, ssl.create_default_context())


def test_no_anonymous_client_on_the_deployment_broker(stand_broker: StandBroker) -> None:
    assert not broker_answers(HOST, stand_broker.plain_port, timeout=TIMEOUT)
    login = MqttClient(stand_broker.settings("reader", tls=False), "reader")
    try:
        login.start()
        assert login.wait_connected(TIMEOUT), "the same broker lets a named user in"
    finally:
        login.stop()


def test_the_gateways_https_needs_both_certificate_and_key() -> None:
    with pytest.raises(ValueError, match="set both or neither"):
        GatewaySettings(tls_cert_file=Path("gateway.crt"))
    assert GatewaySettings(tls_cert_file=Path("gateway.crt"), tls_key_file=Path("gateway.key")).tls_key_file
