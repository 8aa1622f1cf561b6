"""Throttled logging, setup_logging's formats, and the Prometheus collector and endpoint."""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from services.common import metrics
from services.common.codec import pack, unpack_map
from services.common.logs import DropMalformed, Throttled, setup_logging
from services.common.metrics import counters, register_stats, start_metrics_server, stop_metrics_server
from services.common.mqtt import MqttStats
from services.devstack.broker import free_port


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttled_logs_the_first_occurrence_then_one_summary_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    throttled = Throttled(logging.getLogger("test.throttled"), interval_s=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.throttled"):
        for i in range(5):
            throttled.warning("crc", "bad CRC in frame %d", i)
        throttled.warning("other", "another problem")
        clock.now += 10.0
        throttled.warning("crc", "bad CRC in frame %d", 99)
        throttled.warning("crc", "bad CRC in frame %d", 100)
        clock.now += 10.0
        throttled.warning("crc", "bad CRC in frame %d", 101)

    messages = [r.getMessage() for r in caplog.records]
    assert messages[:2] == ["bad CRC in frame 0", "another problem"]
    assert messages[2].startswith("bad CRC in frame 99 (4 more since ")
    assert messages[3].startswith("bad CRC in frame 101 (1 more since ")
    assert len(messages) == 4


def test_drop_malformed_counts_each_bad_payload_and_logs_the_kind_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @dataclass
    class Stats:
        malformed_total: int = 0

    stats = Stats()
    decode = DropMalformed(stats, "malformed_total", Throttled(logging.getLogger("test.drop")))
    with caplog.at_level(logging.WARNING, logger="test.drop"):
        assert decode(unpack_map, pack({"a": 1}), "ack", "valve acknowledgement") == {"a": 1}
        assert decode(unpack_map, b"\xc1", "ack", "valve acknowledgement") is None
        assert decode(unpack_map, b"not msgpack", "ack", "valve acknowledgement") is None
    assert stats.malformed_total == 2
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and messages[0].startswith("ignored malformed valve acknowledgement: ")
    with pytest.raises(TypeError):
        DropMalformed(stats, "missing", Throttled(logging.getLogger("test.drop")))


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logger")
def test_setup_logging_tags_records_with_the_service(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("acquisition", "info", "text")
    logging.getLogger("test.text").info("port %s opened", "/dev/ttyACM0")
    text = capsys.readouterr().err
    assert "INFO" in text
    assert "acquisition test.text: port /dev/ttyACM0 opened" in text

    setup_logging("acquisition", "DEBUG", "json")  # replaces the text handler
    logging.getLogger("test.json").debug("gap of %d samples", 12)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["service"] == "acquisition"
    assert record["message"] == "gap of 12 samples"
    assert record["levelname"] == "DEBUG"

    with pytest.raises(ValueError, match="unknown log level"):
        setup_logging("acquisition", "LOUD")


def scrape(registry: CollectorRegistry) -> dict[str, tuple[str, float]]:
    """{sample name: (metric type, value)} as a Prometheus server would parse the exposition."""
    families = text_string_to_metric_families(generate_latest(registry).decode())
    return {sample.name: (family.type, sample.value) for family in families for sample in family.samples}


def test_collector_reads_counters_and_gauges_at_scrape_time() -> None:
    registry = CollectorRegistry()
    values = {"batches_total": 3.0, "ring_fill": 0.25}
    collector = register_stats("stm32-emulator", lambda: values, registry)

    assert scrape(registry) == {
        "rcs_stm32_emulator_batches_total": ("counter", 3.0),  # not "..._total_total"
        "rcs_stm32_emulator_ring_fill": ("gauge", 0.25),
    }

    values["batches_total"] = 5.0
    assert scrape(registry)["rcs_stm32_emulator_batches_total"] == ("counter", 5.0)

    registry.unregister(collector)
    assert scrape(registry) == {}


def test_counters_turns_a_stats_dataclass_into_total_keys() -> None:
    stats = MqttStats(published=7, dropped=1)
    assert counters(stats, "mqtt") == {
        "mqtt_published_total": 7.0,
        "mqtt_dropped_total": 1.0,
        "mqtt_received_total": 0.0,
        "mqtt_reconnects_total": 0.0,
        "mqtt_handler_errors_total": 0.0,
        "mqtt_refused_total": 0.0,
    }


def test_a_failing_read_skips_the_service_instead_of_failing_the_scrape() -> None:
    registry = CollectorRegistry()

    def broken() -> dict[str, float]:
        raise RuntimeError("ring not ready")

    register_stats("broken", broken, registry)
    register_stats("fine", lambda: {"up": 1.0}, registry)
    assert scrape(registry) == {"rcs_fine_up": ("gauge", 1.0)}


def test_http_endpoint_serves_the_registry_and_port_zero_disables_it() -> None:
    assert start_metrics_server(0) is None

    registry = CollectorRegistry()
    register_stats("http", lambda: {"requests_total": 2.0}, registry)
    port = start_metrics_server(free_port(), registry=registry)
    assert port is not None
    try:
        server, _ = metrics._servers[port]
        assert server.server_address[0] == "127.0.0.1", "unauthenticated: loopback unless configured"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
    finally:
        stop_metrics_server(port)
    assert "rcs_http_requests_total 2.0" in body
