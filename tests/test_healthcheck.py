"""rcs-healthcheck, the containers' healthcheck: against a real /metrics endpoint, and its memory of
a progress counter between runs (telemetry age)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.registry import CollectorRegistry

from services.common.healthcheck import Progress, UnhealthyError, main
from services.common.metrics import register_stats, start_metrics_server, stop_metrics_server
from services.devstack.broker import free_port

ACQUISITION = {"samples_total": 100.0, "stm32_connected": 1.0}


@pytest.fixture
def acquisition_metrics() -> Iterator[tuple[int, dict[str, float]]]:
    """A real /metrics endpoint serving acquisition's gauges from a dict the test changes."""
    values = dict(ACQUISITION)
    registry = CollectorRegistry()
    register_stats("acquisition", lambda: values, registry)
    port = start_metrics_server(free_port(), "127.0.0.1", registry)
    assert port is not None
    yield port, values
    stop_metrics_server(port)


def run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exited:
        main(args)
        raise SystemExit(0)
    return int(exited.value.code or 0)


def test_acquisition_is_healthy_while_connected_and_flowing(
    acquisition_metrics: tuple[int, dict[str, float]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port, _ = acquisition_metrics
    assert run(["acquisition", "--port", str(port), "--state-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "acquisition: healthy"


def test_acquisition_without_its_stm32_is_unhealthy(
    acquisition_metrics: tuple[int, dict[str, float]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port, values = acquisition_metrics
    values["stm32_connected"] = 0.0
    assert run(["acquisition", "--port", str(port), "--state-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().out.strip() == "acquisition: unhealthy: STM32 not connected"


def test_actuation_without_its_arduino_is_unhealthy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = CollectorRegistry()
    register_stats("actuation", lambda: {"armed": 0.0, "arduino_connected": 0.0}, registry)
    port = start_metrics_server(free_port(), "127.0.0.1", registry)
    assert port is not None
    try:
        assert run(["actuation", "--port", str(port), "--state-dir", str(tmp_path)]) == 1
    finally:
        stop_metrics_server(port)
    assert capsys.readouterr().out.strip() == "actuation: unhealthy: motor Arduino not connected"


def test_a_service_that_does_not_answer_is_unhealthy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["logger", "--port", str(free_port()), "--state-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().out.startswith("logger: unhealthy: ")


def test_a_counter_standing_still_longer_than_max_age_is_stale(tmp_path: Path) -> None:
    progress = Progress(tmp_path / "state.json", max_age_s=30.0)
    progress.check("samples", 5.0, now=1000.0)  # first run: nothing to compare with
    progress.check("samples", 5.0, now=1029.0)  # still within max age
    with pytest.raises(UnhealthyError, match="has not grown for 31 s"):
        progress.check("samples", 5.0, now=1031.0)
    progress.check("samples", 6.0, now=1032.0)  # flowing again
