"""rcs-healthcheck SERVICE: is the rcs service on this host (or in this container) doing its job?

Exit 0 when healthy, 1 with one line saying why not. docker-compose.yml runs it as each container's
healthcheck; anything else may too (systemd, monitoring). It asks the service itself, on loopback:

    acquisition  /metrics: the STM32 link is up and telemetry is flowing (samples counted recently)
    actuation    /metrics answers (the process serves; it has no device-link gauge yet)
    logger       /metrics: the disk accepts writes and telemetry is being recorded
    gateway      /api/health: answers and is connected to the broker (HTTPS when gateway.tls_* set)

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

from prometheus_client.parser import text_string_to_metric_families

from services.common.settings import Settings, load_settings

TIMEOUT_S = 3.0


class UnhealthyError(Exception):
    """Why the service is not healthy (one line)."""


def scrape(port: int) -> dict[str, float]:
    """The samples of http://127.0.0.1:<port>/metrics by name (labels ignored: rcs metrics have none)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT_S) as response:
        text = response.read().decode()
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}


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


def acquisition(settings: Settings, progress: Progress) -> None:
    metrics = scrape(settings.acquisition.metrics_port)
    if _gauge(metrics, "rcs_acquisition_stm32_connected") != 1:
        raise UnhealthyError("STM32 not connected")
    progress.check("samples", _gauge(metrics, "rcs_acquisition_samples_total"), time.time())


def actuation(settings: Settings, progress: Progress) -> None:
    _gauge(scrape(settings.actuation.metrics_port), "rcs_actuation_armed")


def logger(settings: Settings, progress: Progress) -> None:
    metrics = scrape(settings.logger.metrics_port)
    if _gauge(metrics, "rcs_logger_disk_ok") != 1:
        raise UnhealthyError("disk error: recordings cannot be written")
    progress.check("samples written", _gauge(metrics, "rcs_logger_samples_written_total"), time.time())


def gateway(settings: Settings, progress: Progress) -> None:
    https = settings.gateway.tls_cert_file is not None
    url = f"{'https' if https else 'http'}://127.0.0.1:{settings.http_port}/api/health"
    # Its own certificate on loopback: names the stand's host, not 127.0.0.1; liveness, not identity.
    context = ssl._create_unverified_context() if https else None
    with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=context) as response:
        health = json.loads(response.read())
    if not health.get("broker_connected"):
        raise UnhealthyError("gateway not connected to the broker")


CHECKS: dict[str, Callable[[Settings, Progress], None]] = {
    "acquisition": acquisition,
    "actuation": actuation,
    "logger": logger,
    "gateway": gateway,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rcs-healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("service", choices=sorted(CHECKS))
    parser.add_argument("--max-age", type=float, default=30.0, help="s a progress counter may stand still")
    parser.add_argument("--state-dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)
    progress = Progress(args.state_dir / f"rcs-health-{args.service}.json", args.max_age)
    try:
        CHECKS[args.service](load_settings(), progress)
    except (UnhealthyError, OSError, ValueError) as exc:
        print(f"{args.service}: unhealthy: {exc}")
        sys.exit(1)
    print(f"{args.service}: healthy")


if __name__ == "__main__":
    main()
