"""The deployment check's probes: run on the host, inside the stack's network namespace (nsenter by
deploy/check.sh), i.e. outside every container, as a client on the stand network would be.

    python deploy/probe.py SECRETS_DIR telemetry [--seconds 5] [--rate 10000]
    python deploy/probe.py SECRETS_DIR tls
    python deploy/probe.py SECRETS_DIR valve
    python deploy/probe.py SECRETS_DIR recording FILE...
    python deploy/probe.py SECRETS_DIR metric PORT NAME      (prints the value)

SECRETS_DIR is the deployment's secrets/ (deploy/setup.sh): the `reader` and `operator` logins, the
gateway's operator token and the stand CA. Each probe prints one line and exits 1 when its check fails.

Samples the (emulated) STM32 never delivered are not the deployment's loss: acquisition counts them
(`lost_samples_total`, device counter gaps) and its history never had them. On a CPU-starved machine
the emulator loses some. The telemetry and recording probes therefore pass a seq gap only when
acquisition says it lost those samples at the source, and say how many.
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
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from services.analyze import continuity
from services.analyze.load import KEY_COLUMNS, open_recording, scan
from services.common import topics
from services.common.healthcheck import scrape
from services.common.mqtt import Message, MqttClient
from services.common.rpc import RpcClient, RpcError, RpcTimeout
from services.common.settings import MqttSettings
from services.common.telemetry import decode_batch
from services.devstack.broker import broker_answers

HOST = "127.0.0.1"
TLS_PORT = 8883  # the broker's TLS listener (mosquitto/stand.conf)
PLAIN_PORT = 1883
GATEWAY_PORT = 5001
ACQUISITION_METRICS = 9101
SOURCE_LOST = "rcs_acquisition_lost_samples_total"
TIMEOUT_S = 10.0
VALVE_ATTEMPTS = 3  # an acknowledgement missed under CPU starvation is retried, and said
IDLE_SAFE_VALVES = [0, 0, 1, 0, 0, 0, 0, 0, 0]  # PURGE1 open: allowed in idle (config/stand.yaml)


class ProbeFailedError(Exception):
    pass


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs if not key.startswith("#")}


def tls_settings(secrets: Path, user: str) -> MqttSettings:
    login = env_file(secrets / f"{user}.env")
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
        self.missing = 0
        self.rates: set[float] = set()
        self._next: tuple[str, int] | None = None

    def on_message(self, message: Message) -> None:
        batch = decode_batch(message.payload)
        with self.lock:
            if self._next is not None and (batch.session, batch.seq) != self._next:
                self.breaks.append(f"expected {self._next}, got ({batch.session}, {batch.seq})")
                self.missing += batch.seq - self._next[1] if batch.session == self._next[0] else 0
            self._next = (batch.session, batch.next_seq)
            self.samples += batch.n
            self.batches += 1
            self.rates.add(batch.rate_hz)


def telemetry(secrets: Path, seconds: float, rate: float) -> str:
    """Over TLS as `reader`: `seconds` of telemetry at `rate` Hz with contiguous seq."""
    checker = SeqChecker()
    client = MqttClient(
        tls_settings(secrets, "reader"), "reader", client_id=f"rcs-deploy-check-{time.time_ns()}"
    )
    lost_before = scrape(ACQUISITION_METRICS)[SOURCE_LOST]
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
    source_lost = int(scrape(ACQUISITION_METRICS)[SOURCE_LOST] - lost_before)
    with checker.lock:
        received = checker.samples / elapsed
        produced = (checker.samples + checker.missing) / elapsed
        if checker.missing > source_lost or (checker.breaks and not checker.missing):
            raise ProbeFailedError(
                f"seq not contiguous ({checker.missing} samples missing, the STM32 lost {source_lost}): "
                f"{checker.breaks[:3]}"
            )
        if produced < 0.95 * rate:
            raise ProbeFailedError(f"{produced:.0f} samples/s produced, expected {rate:.0f}")
        contiguity = (
            "seq contiguous"
            if not checker.breaks
            else f"seq contiguous but for {checker.missing} samples the emulated STM32 lost at the source"
        )
        return f"{received:.0f} samples/s over {elapsed:.1f} s, {checker.batches} batches, {contiguity}"


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
    answers, missed = [], []
    for pattern in (IDLE_SAFE_VALVES, [0] * len(IDLE_SAFE_VALVES)):
        request = urllib.request.Request(
            f"https://{HOST}:{GATEWAY_PORT}/api/valves",
            data=json.dumps({"valves": pattern, "who": "deploy-check"}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        for attempt in range(1, VALVE_ATTEMPTS + 1):
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=context) as response:
                    answer = json.loads(response.read())
                break
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode()
                if exc.code != 409 or "did not acknowledge" not in detail or attempt == VALVE_ATTEMPTS:
                    raise ProbeFailedError(f"valves {pattern}: HTTP {exc.code} {detail}") from exc
                missed.append(detail)
        if not answer.get("success") or answer.get("valves") != pattern:
            raise ProbeFailedError(f"valves {pattern}: {answer}")
        answers.append(answer["bits"])
    retried = f"; {len(missed)} acknowledgement(s) missed and retried: {missed[0]}" if missed else ""
    return f"valves acknowledged by the STM32 through the gateway (bits {answers}){retried}"


def recording(secrets: Path, files: list[Path]) -> str:
    """Continuous by seq, or every gap is one acquisition's history never held (lost at the source)."""
    recordings = [open_recording(path) for path in files]
    sessions = continuity.check(continuity.read_keys(scan(recordings, list(KEY_COLUMNS))), largest=10**6)
    if not sessions:
        raise ProbeFailedError("no samples recorded")
    samples = sum(s.samples for s in sessions)
    if any(s.duplicates for s in sessions):
        raise ProbeFailedError(f"duplicates: {[(s.session, s.duplicates) for s in sessions]}")
    gaps = [(s.session, gap) for s in sessions for gap in s.largest_gaps]
    if not gaps:
        return f"{samples} samples in {len(files)} file(s), continuous"
    client = MqttClient(
        tls_settings(secrets, "operator"), "operator", client_id=f"rcs-deploy-check-{time.time_ns()}"
    )
    rpc = RpcClient(client)
    client.start()
    try:
        if not client.wait_connected(TIMEOUT_S):
            raise ProbeFailedError("operator could not connect to ask acquisition's history")
        for session, gap in gaps:
            held = rpc.call(
                topics.ACQ_HISTORY, {"seq_from": gap.after_seq + 1, "seq_to": gap.next_seq}, timeout=TIMEOUT_S
            )
            if held["session"] != session or held["first_seq"] is None or held["first_seq"] > gap.after_seq:
                raise ProbeFailedError(f"gap after seq {gap.after_seq} of {session}: acquisition cannot tell")
            if held["n"]:
                raise ProbeFailedError(
                    f"lost by the deployment: {held['n']} samples after seq {gap.after_seq}"
                )
    finally:
        rpc.close()
        client.stop()
    missing = sum(gap.missing for _, gap in gaps)
    return (
        f"{samples} samples in {len(files)} file(s), continuous but for {missing} samples in {len(gaps)} "
        "gaps "
        "that the emulated STM32 lost at the source"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("secrets", type=Path)
    commands = parser.add_subparsers(dest="probe", required=True)
    stream = commands.add_parser("telemetry")
    stream.add_argument("--seconds", type=float, default=5.0)
    stream.add_argument("--rate", type=float, default=10_000.0)
    commands.add_parser("tls")
    commands.add_parser("valve")
    recorded = commands.add_parser("recording")
    recorded.add_argument("files", type=Path, nargs="+")
    metric = commands.add_parser("metric")
    metric.add_argument("port", type=int)
    metric.add_argument("name")
    args = parser.parse_args()
    probes: dict[str, Callable[[], object]] = {
        "telemetry": lambda: telemetry(args.secrets, args.seconds, args.rate),
        "tls": lambda: tls(args.secrets),
        "valve": lambda: valve(args.secrets),
        "recording": lambda: recording(args.secrets, args.files),
        "metric": lambda: scrape(args.port)[args.name],
    }
    try:
        print(probes[args.probe]())
    except (ProbeFailedError, OSError, KeyError, ValueError, RpcTimeout, RpcError) as exc:
        print(f"{args.probe}: FAILED: {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
