"""Settings: stand.yaml as data, RCS_* variables override it, bad configuration is refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from services.common.settings import DEFAULT_CONFIG, Stm32Settings, load_settings


def test_shipped_stand_has_the_22_legacy_channels_and_9_valves() -> None:
    settings = load_settings()
    assert settings.channel_names == (
        *(f"P{i}" for i in range(1, 9)),
        *(f"T{i}" for i in range(1, 7)),
        "Tbogaz1",
        "THRUST",
        "ISP",
        "Tbogaz2",
        "D1",
        "D2",
        "IMPULSE",
        "VELOCITY",
    )
    assert [c.name for c in settings.measured_channels] == [
        *(f"P{i}" for i in range(1, 9)),
        *(f"T{i}" for i in range(1, 7)),
        "Tbogaz1",
        "THRUST",
        "Tbogaz2",
    ]
    assert settings.valve_names == (
        "RELIEF1",
        "GOX1",
        "PURGE1",
        "PURGE2",
        "FUEL1",
        "RELIEF2",
        "GOX2",
        "FUEL2",
        "IGNITION",
    )
    assert settings.acquisition.ring_capacity == 6_000_000


def test_environment_overrides_the_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RCS_MQTT_HOST", "broker.local")
    monkeypatch.setenv("RCS_MQTT_PORT", "1884")
    monkeypatch.setenv("RCS_MQTT_USERNAME", "acq")
    monkeypatch.setenv("RCS_MQTT_PASSWORD", "s3cret")
    monkeypatch.setenv("RCS_STM32_PORT", "/dev/ttyACM3")
    monkeypatch.setenv("RCS_DATA_DIR", "/srv/rcs")
    monkeypatch.setenv("RCS_ACQUISITION_BATCH_MS", "20")
    settings = load_settings()
    assert (settings.mqtt.host, settings.mqtt.port, settings.mqtt.username) == ("broker.local", 1884, "acq")
    assert settings.mqtt.password is not None and settings.mqtt.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.stm32.port == "/dev/ttyACM3"
    assert settings.data_dir == Path("/srv/rcs")
    assert settings.acquisition.batch_ms == 20
    assert settings.stm32.heartbeat_ms == 100  # untouched keys keep the YAML's value


def _write_config(tmp_path: Path, edit: dict[str, object]) -> Path:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text()) | edit
    path = tmp_path / "stand.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("edit", "complaint"),
    [
        ({"channels": [{"name": "P1", "unit": "bar", "calibration": [0, 1]}] * 2}, "duplicate channel"),
        ({"derived": {"gox_orifice": {}, "fuel_orifice": {}}}, "gox_orifice"),
        ({"mqtt": {"port": 70000}}, "port"),
        ({"stm32": {"protocol": "morse"}}, "protocol"),
        ({"stm32": {"heartbeat_ms": 600}}, "heartbeat_ms"),
        ({"valves": []}, "valves"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_configuration_is_refused_with_the_key_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: dict[str, object], complaint: str
) -> None:
    monkeypatch.setenv("RCS_CONFIG", str(_write_config(tmp_path, edit)))
    with pytest.raises(ValidationError, match=complaint):
        load_settings()


def test_missing_config_file_says_which(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RCS_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        load_settings()


def test_baud_rates_follow_the_protocol() -> None:
    assert Stm32Settings(protocol="binary").baud_rates() == (2_000_000,)
    assert Stm32Settings(protocol="text").baud_rates() == (230_400,)
    assert Stm32Settings(protocol="auto").baud_rates() == (2_000_000, 230_400)
    assert Stm32Settings(protocol="auto", baudrate=230_400).baud_rates() == (230_400,)
