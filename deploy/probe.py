"""The deployment check's probes: run on the host, inside the stack's network namespace (nsenter by
deploy/check.sh), i.e. outside every container, as a client on the stand network would be.

    python deploy/probe.py SECRETS_DIR telemetry [--seconds 5] [--rate 10000]
    python deploy/probe.py SECRETS_DIR tls
    python deploy/probe.py SECRETS_DIR valve
    python deploy/probe.py SECRETS_DIR metric PORT NAME      (prints the value)

SECRETS_DIR is the deployment's secrets/ (deploy/setup.sh): the `reader` login, the gateway's
operator token and the stand CA. Each probe prints one line and exits 1 when its check fails.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from pydantic import SecretStr

from services.common import topics
from services.common.healthcheck import scrape
from services.common.mqtt import Message, MqttClient
from services.common.settings import MqttSettings
from services.common.telemetry import decode_batch
from services.devstack.broker import broker_answers

HOST = "127.0.0.1"
TLS_PORT = 8883  # the broker's TLS listener (mosquitto/stand.conf)
PLAIN_PORT = 1883
GATEWAY_PORT = 5001
TIMEOUT_S = 10.0
IDLE_SAFE_VALVES = [0, 0, 1, 0, 0, 0, 0, 0, 0]  # PURGE1 open: allowed in idle (config/stand.yaml)


class ProbeFailedError(Exception):
    pass


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs if not key.startswith("#")}


def reader_settings(secrets: Path) -> MqttSettings:
    login = env_file(secrets / "reader.env")
    return MqttSettings(
        host=HOST,
        port=TLS_PORT,
        username=login["RCS_MQTT_USERNAME"],
        password=SecretStr(login["RCS_MQTT_PASSWORD"]),
        tls_ca_file=secrets / "tls" / "ca.crt",
    )


class SeqChecker:
    """Telemetry batches as they arrive: counts samples and every break of contiguous `seq`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.samples = 0
        self.batches = 0
        self.breaks: list[str] = []
        self.rates: set[float] = set()
        self._next: tuple[str, int] | None = None

    def on_message(self, message: Message) -> None:
        batch = decode_batch(message.payload)
        with self.lock:
            if self._next is not None and (batch.session, batch.seq) != self._next:
                self.breaks.append(f"expected {self._next}, got ({batch.session}, {batch.seq})")
            self._next = (batch.session, batch.next_seq)
            self.samples += batch.n
            self.batches += 1
            self.rates.add(batch.rate_hz)


def telemetry(secrets: Path, seconds: float, rate: float) -> str:
    """Over TLS as `reader`: `seconds` of telemetry at `rate` Hz with contiguous seq."""
    checker = SeqChecker()
    client = MqttClient(reader_settings(secrets), "reader", client_id=f"rcs-deploy-check-{time.time_ns()}")
    client.subscribe(topics.TELEMETRY, checker.on_message)
    client.start()
    try:
        if not client.wait_connected(TIMEOUT_S):
            raise ProbeFailedError(f"reader could not connect over TLS to {HOST}:{TLS_PORT}")
        with checker.lock:
            checker.samples = checker.batches = 0
        started = time.monotonic()
        time.sleep(seconds)  # a measurement window, not synchronisation
        elapsed = time.monotonic() - started
    finally:
        client.stop()
    with checker.lock:
        received = checker.samples / elapsed
        if checker.breaks:
            raise ProbeFailedError(f"seq not contiguous: {checker.breaks[:3]}")
        if received < 0.95 * rate:
            raise ProbeFailedError(f"{received:.0f} samples/s received, expected {rate:.0f}")
        return f"{received:.0f} samples/s over {elapsed:.1f} s, {checker.batches} batches, seq contiguous"


def tls(secrets: Path) -> str:
    """The stand CA is required (a client with the system's CAs alone is refused), and no anonymous
    client gets in on either listener."""
    try:
        with (
            socket.create_connection((HOST, TLS_PORT), timeout=TIMEOUT_S) as raw,
            ssl.create_default_context().wrap_socket(raw, server_hostname=HOST),
        ):
            raise ProbeFailedError("TLS handshake succeeded without the stand CA")
    except ssl.SSLCertVerificationError:
        pass
    context = ssl.create_default_context(cafile=str(secrets / "tls" / "ca.crt"))
    with (
        socket.create_connection((HOST, TLS_PORT), timeout=TIMEOUT_S) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as wrapped,
    ):
        version = wrapped.version()
    if broker_answers(HOST, PLAIN_PORT, timeout=TIMEOUT_S):
        raise ProbeFailedError("the broker accepted an anonymous client")
    return f"{version} with the stand CA; refused without it; anonymous refused"


def valve(secrets: Path) -> str:
    """A valve command through the gateway (HTTPS, operator token), acknowledged by the STM32."""
    token = env_file(secrets / "tokens.env")["RCS_OPERATOR_TOKEN"]
    context = ssl.create_default_context(cafile=str(secrets / "tls" / "ca.crt"))
    answers = []
    for pattern in (IDLE_SAFE_VALVES, [0] * len(IDLE_SAFE_VALVES)):
        request = urllib.request.Request(
            f"https://{HOST}:{GATEWAY_PORT}/api/valves",
            data=json.dumps({"valves": pattern, "who": "deploy-check"}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=context) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ProbeFailedError(f"valves {pattern}: HTTP {exc.code} {exc.read().decode()}") from exc
        if not answer.get("success") or answer.get("valves") != pattern:
            raise ProbeFailedError(f"valves {pattern}: {answer}")
        answers.append(answer["bits"])
    return f"valves acknowledged by the STM32 through the gateway (bits {answers})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("secrets", type=Path)
    commands = parser.add_subparsers(dest="probe", required=True)
    stream = commands.add_parser("telemetry")
    stream.add_argument("--seconds", type=float, default=5.0)
    stream.add_argument("--rate", type=float, default=10_000.0)
    commands.add_parser("tls")
    commands.add_parser("valve")
    metric = commands.add_parser("metric")
    metric.add_argument("port", type=int)
    metric.add_argument("name")
    args = parser.parse_args()
    try:
        if args.probe == "telemetry":
            print(telemetry(args.secrets, args.seconds, args.rate))
        elif args.probe == "tls":
            print(tls(args.secrets))
        elif args.probe == "valve":
            print(valve(args.secrets))
        else:
            print(scrape(args.port)[args.name])
    except (ProbeFailedError, OSError, KeyError, ValueError) as exc:
        print(f"{args.probe}: FAILED: {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
