"""Prometheus exposition: a /metrics HTTP endpoint and a collector that reads a service's counters.

Services keep plain counters (see `MqttStats`, `RpcServerStats`, ...) and hand a `read` function to
`register_stats`; the values are read at scrape time, so there is no bookkeeping on the hot path.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from services.common.logs import Throttled

log = logging.getLogger(__name__)
_throttled = Throttled(log)

_servers: dict[int, tuple[WSGIServer, threading.Thread]] = {}
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def start_metrics_server(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY
) -> int | None:
    """Serve /metrics on `addr:port` from a daemon thread; port 0 means disabled (returns None).

    Unauthenticated, so loopback by default (`metrics_host` in stand.yaml to let a scraper in).

    Returns the bound port. Raises OSError if the port is taken.
    """
    if port == 0:
        return None
    server, thread = start_http_server(port, addr, registry)
    _servers[server.server_port] = (server, thread)
    log.info("metrics on http://%s:%d/metrics", addr, server.server_port)
    return server.server_port


def stop_metrics_server(port: int) -> None:
    """Stop a server started by `start_metrics_server` (unknown ports are ignored)."""
    entry = _servers.pop(port, None)
    if entry is not None:
        server, thread = entry
        server.shutdown()
        server.server_close()
        thread.join()


def counters(stats: Any, prefix: str) -> dict[str, float]:
    """`{f"{prefix}_{field}_total": value}` for every field of a stats dataclass instance."""
    return {f"{prefix}_{name}_total": float(value) for name, value in dataclasses.asdict(stats).items()}


class _StatsCollector:
    """Turns `read()` into metric families at every scrape: `*_total` keys are counters, others gauges."""

    def __init__(self, prefix: str, read: Callable[[], Mapping[str, float]]) -> None:
        self._prefix = prefix
        self._read = read

    def describe(self) -> Iterable[Metric]:
        # Declaring no names keeps the registry from calling read() at registration time; the price is
        # that a clash with another collector's names is not detected.
        return []

    def collect(self) -> Iterable[Metric]:
        try:
            values = dict(self._read())
        except Exception:
            _throttled.warning(f"read:{self._prefix}", "reading %s stats failed", self._prefix, exc_info=True)
            return
        for key, value in sorted(values.items()):
            name = f"{self._prefix}_{_INVALID.sub('_', key)}"
            if key.endswith("_total"):
                # CounterMetricFamily strips "_total" from the family name and adds it back to the sample.
                yield CounterMetricFamily(name, f"{key} (counter)", value=value)
            else:
                yield GaugeMetricFamily(name, key, value=value)


def register_stats(
    service: str, read: Callable[[], Mapping[str, float]], registry: CollectorRegistry = REGISTRY
) -> Collector:
    """Expose `read()` as `rcs_<service>_<key>` metrics; undo with `registry.unregister(collector)`."""
    collector = _StatsCollector(f"rcs_{_INVALID.sub('_', service)}", read)
    registry.register(collector)
    return collector
