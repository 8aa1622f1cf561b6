"""rcs-healthcheck SERVICE [--port N] [--https]: is the rcs service on this host (or in this
container) doing its job?

Exit 0 when healthy, 1 with one line saying why not. docker-compose.yml runs it as each container's
healthcheck; anything else may too (systemd, monitoring). It asks the service itself, on loopback,
at its default port unless `--port` says otherwise (`*.metrics_port`, `http_port` of the config):

    acquisition  :9101/metrics: the STM32 link is up and telemetry is flowing (samples counted recently)
    actuation    :9102/metrics: the motor Arduino is connected
    logger       :9103/metrics: the disk accepts writes and telemetry is being recorded
    gateway      :5001/api/health: answers and is connected to the broker (`--https`: over TLS)

It imports nothing but the standard library and reads no configuration: it runs every few seconds in
every container, on a Raspberry Pi.

"Flowing" compares a counter with its value at the previous run, remembered in a small state file
(`--state-dir`, default the temp dir): stale when it has not grown for `--max-age` seconds. The first
run after a start has nothing to compare with and only checks the rest.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

TIMEOUT_S = 5.0


class UnhealthyError(Exception):
    """Why the service is not healthy (one line)."""


def scrape(port: int) -> dict[str, float]:
    """The unlabelled samples of http://127.0.0.1:<port>/metrics by name (rcs metrics have no labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT_S) as response:
        lines = response.read().decode().splitlines()
    samples = (line.split(" ") for line in lines if line and not line.startswith("#") and "{" not in line)
    return {fields[0]: float(fields[1]) for fields in samples if len(fields) == 2}


def _gauge(metrics: Mapping[str, float], name: str) -> float:
    if name not in metrics:
        raise UnhealthyError(f"metric {name} missing")
    return metrics[name]


@dataclass(frozen=True)
class Progress:
    """A counter that must keep growing; its last value and when it last changed, in `path`."""

    path: Path
    max_age_s: float

    def check(self, name: str, value: float, now: float) -> None:
        try:
            previous = json.loads(self.path.read_text())
            last, changed_at = float(previous["value"]), float(previous["changed_at"])
        except (OSError, ValueError, KeyError, TypeError):
            last, changed_at = None, now
        if value != last:
            changed_at = now
        self.path.write_text(json.dumps({"value": value, "changed_at": changed_at}))
        if now - changed_at > self.max_age_s:
            raise UnhealthyError(f"{name} has not grown for {now - changed_at:.0f} s (stale telemetry)")


@dataclass(frozen=True)
class Target:
    port: int
    https: bool
    progress: Progress


def acquisition(target: Target) -> None:
    metrics = scrape(target.port)
    if _gauge(metrics, "rcs_acquisition_stm32_connected") != 1:
        raise UnhealthyError("STM32 not connected")
    target.progress.check("samples", _gauge(metrics, "rcs_acquisition_samples_total"), time.time())


def actuation(target: Target) -> None:
    if _gauge(scrape(target.port), "rcs_actuation_arduino_connected") != 1:
        raise UnhealthyError("motor Arduino not connected")


def logger(target: Target) -> None:
    metrics = scrape(target.port)
    if _gauge(metrics, "rcs_logger_disk_ok") != 1:
        raise UnhealthyError("disk error: recordings cannot be written")
    target.progress.check("samples written", _gauge(metrics, "rcs_logger_samples_written_total"), time.time())


def gateway(target: Target) -> None:
    url = f"{'https' if target.https else 'http'}://127.0.0.1:{target.port}/api/health"
    # Its own certificate on loopback: liveness is checked here, not identity.
    context = ssl._create_unverified_context() if target.https else None
    with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=context) as response:
        health = json.loads(response.read())
    if not health.get("broker_connected"):
        raise UnhealthyError("gateway not connected to the broker")


CHECKS: dict[str, tuple[Callable[[Target], None], int]] = {
    "acquisition": (acquisition, 9101),
    "actuation": (actuation, 9102),
    "logger": (logger, 9103),
    "gateway": (gateway, 5001),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rcs-healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("service", choices=sorted(CHECKS))
    parser.add_argument(
        "--port", type=int, help="the service's metrics (gateway: HTTP) port if not the default"
    )
    parser.add_argument("--https", action="store_true", help="the gateway serves HTTPS")
    parser.add_argument("--max-age", type=float, default=30.0, help="s a progress counter may stand still")
    parser.add_argument("--state-dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)
    check, default_port = CHECKS[args.service]
    progress = Progress(args.state_dir / f"rcs-health-{args.service}.json", args.max_age)
    try:
        check(Target(args.port or default_port, args.https, progress))
    except (UnhealthyError, OSError, ValueError) as exc:
        print(f"{args.service}: unhealthy: {exc}")
        sys.exit(1)
    print(f"{args.service}: healthy")


if __name__ == "__main__":
    main()
