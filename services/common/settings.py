"""Settings: `config/stand.yaml` describes the stand, `RCS_*` environment variables override it.

Nested keys map to environment variables by their first underscore: `RCS_MQTT_HOST` sets
`mqtt.host`, `RCS_STM32_PORT` sets `stm32.port`, `RCS_DATA_DIR` sets `data_dir`. The YAML file is
`RCS_CONFIG` if set, else `config/stand.yaml` at the project root.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = PROJECT_ROOT / "config" / "stand.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSettings(_Section):
    host: str = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    keepalive_s: int = Field(15, ge=5)
    max_queued_messages: int = Field(1000, ge=1, description="outgoing queue bound while disconnected")
    tls: bool = Field(False, description="connect over TLS, checked against the system's CAs")
    tls_ca_file: Path | None = Field(
        None, description="connect over TLS, checked against this CA (implies tls)"
    )

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.tls_ca_file is not None


class Stm32Settings(_Section):
    port: str | None = None
    vid_pids: tuple[str, ...] = ("0483:374B", "0483:374E", "0483:374F", "0483:3753", "0483:5740")
    baudrate: int = 2_000_000
    legacy_baudrate: int = 230_400

    def baud_rates(self) -> tuple[int, ...]:
        """The rates to open the port at, tried in turn until a protocol is detected."""
        if self.protocol == "binary":
            return (self.baudrate,)
        if self.protocol == "text":
            return (self.legacy_baudrate,)
        return tuple(dict.fromkeys((self.baudrate, self.legacy_baudrate)))

    protocol: Literal["auto", "binary", "text"] = "auto"
    detect_timeout_s: float = Field(3.0, gt=0)
    heartbeat_ms: int = Field(100, gt=0, lt=500)
    reconnect_s: float = Field(0.5, gt=0)
    emulator: Literal["python", "firmware"] = Field(
        "python", description="the emulated board `make run` starts: Python, or the C core of firmware/"
    )
    silent_after_s: float = Field(0.5, gt=0, description="no frame for this long: the device is silent")


class AcquisitionSettings(_Section):
    rate_hz: float = Field(10_000.0, gt=0)
    batch_ms: int = Field(10, ge=1, le=1000)
    ring_seconds: float = Field(600.0, gt=0)
    metrics_port: int = Field(9101, ge=0, le=65535, description="0 disables the /metrics endpoint")

    @property
    def ring_capacity(self) -> int:
        return int(self.rate_hz * self.ring_seconds)


class Channel(_Section):
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    unit: str
    description: str = ""
    calibration: tuple[float, ...] | None = Field(
        None, description="polynomial on raw ADC counts, ascending powers; absent = derived on the host"
    )

    @property
    def measured(self) -> bool:
        return self.calibration is not None


class GasOrifice(_Section):
    upstream: str
    downstream: str
    temperature: str
    discharge_coefficient: float = Field(gt=0, le=1)
    diameter_mm: float = Field(gt=0)
    gas_constant: float = Field(gt=0)


class LiquidOrifice(_Section):
    upstream: str
    downstream: str
    discharge_coefficient: float = Field(gt=0, le=1)
    diameter_mm: float = Field(gt=0)
    density: float = Field(gt=0)


class DerivedSettings(_Section):
    g0: float = 9.80665
    min_flow_kg_s: float = Field(0.001, gt=0)
    gox_orifice: GasOrifice
    fuel_orifice: LiquidOrifice


ValveRole = Literal["isolation", "run", "igniter", "purge", "relief"]


class Valve(_Section):
    name: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    role: ValveRole


class ArduinoSettings(_Section):
    port: str | None = None
    vid_pids: tuple[str, ...] = ("2341:0043", "2A03:0043", "1A86:7523")
    baudrate: int = 115_200
    boot_timeout_s: float = Field(4.0, gt=0, description="opening the port resets the Uno (DTR)")
    reconnect_s: float = Field(1.0, gt=0)


class Motor(_Section):
    id: int = Field(ge=1, le=2)
    name: str
    description: str = ""


class MotorSettings(_Section):
    """The existing step-motor firmware's behaviour (docs: shared fixtures README)."""

    limit_deg: float = Field(1727.5, gt=0, description="position is clamped to +-limit")
    boot_position_deg: float = -1727.5
    deg_per_step: float = Field(1.775, gt=0)
    speed_deg_s: float = Field(177.0, gt=0)
    min_interval_ms: int = Field(500, ge=0, description="the firmware merges commands closer than this")
    timeout_margin_s: float = Field(2.0, gt=0, description="added to the expected move time")
    motors: tuple[Motor, ...] = (Motor(id=1, name="MOTOR1"), Motor(id=2, name="MOTOR2"))

    def move_time_s(self, angle_deg: float) -> float:
        """The longest a relative move of `angle_deg` may take (at `speed_deg_s`, plus the margin)."""
        return abs(angle_deg) / self.speed_deg_s + self.timeout_margin_s


SystemState = Literal["idle", "armed", "running", "aborting"]


class Step(_Section):
    valves: str = Field(pattern=r"^[01]+$", description="pattern in valve order, '1' = open")
    wait_ms: int = Field(0, ge=0, description="delay before the next step")


class Sequence(_Section):
    description: str = ""
    requires_armed: bool = False
    abort: bool = False
    steps: tuple[Step, ...] = Field(min_length=1)


class Interlock(_Section):
    """Refuses a valve pattern (manual or sequenced) that opens these valves while not armed.

    `valves` names valves or roles (lowercase); `match: any` trips when any of them would be open,
    `all` only when all would be open together.
    """

    name: str
    reason: str
    valves: tuple[str, ...] = Field(min_length=1)
    match: Literal["any", "all"] = "any"
    requires_armed: bool = True


class Redline(_Section):
    channel: str
    above: float | None = None
    below: float | None = None
    persistence_ms: float = Field(10.0, ge=0)
    states: tuple[SystemState, ...] = ("armed", "running")

    @model_validator(mode="after")
    def _one_limit(self) -> Redline:
        if (self.above is None) == (self.below is None):
            raise ValueError(f"red-line on {self.channel}: give exactly one of 'above' or 'below'")
        return self


class ActuationSettings(_Section):
    ack_timeout_ms: int = Field(250, gt=0, description="the STM32 must acknowledge a valve write within")
    command_expiry_s: float = Field(3.0, gt=0, le=10, description="MQTT v5 expiry of every command")
    operator_timeout_s: float = Field(2.0, gt=0, description="deadman: operator heartbeats")
    telemetry_stale_ms: int = Field(500, gt=0, description="deadman: newest telemetry older than this")
    command_queue: int = Field(
        32, ge=1, le=10_000, description="commands waiting for a worker; beyond it refused 'busy'"
    )
    metrics_port: int = Field(9102, ge=0, le=65535)


class LoggerSettings(_Section):
    flush_s: float = Field(1.0, gt=0, le=10, description="data older than this is on disk (crash-readable)")
    rotate_s: float = Field(120.0, gt=0, description="a Parquet file per this many seconds of recording")
    rotate_bytes: int = Field(512 * 1024**2, gt=0, description="...or when the open segment passes this")
    row_group_rows: int = Field(100_000, ge=100_000)
    compression_level: int = Field(3, ge=1, le=22, description="zstd")
    retention_max_bytes: int = Field(50 * 1024**3, gt=0, description="oldest files deleted beyond this total")
    retention_max_age_days: float = Field(90.0, gt=0)
    repair_page_samples: int = Field(50_000, gt=0, le=50_000)
    memory_limit_bytes: int = Field(1024**3, gt=0, description="held in memory while the disk refuses writes")
    behind_after_s: float = Field(5.0, gt=0, description="oldest unrecorded telemetry older: behind")
    metrics_port: int = Field(9103, ge=0, le=65535)


class GatewaySettings(_Section):
    secrets_file: Path | None = Field(None, description="named accounts, hashed tokens: written by rcs-users")
    cors_origins: tuple[str, ...] = ("http://localhost:3000", "http://localhost:5173")
    sensor_rate_hz: float = Field(30.0, gt=0, le=200, description="sensor_data pushes per second per client")
    display_max_hz: float = Field(60.0, gt=0, le=500)
    client_queue_frames: int = Field(256, ge=8, description="per-client bound; the oldest frames go first")
    command_timeout_s: float = Field(3.0, gt=0, le=10)
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="larger request bodies: 413, never read")
    max_ws_message_bytes: int = Field(
        64 * 1024, ge=1024, description="larger WebSocket messages: closed 1009"
    )
    max_answer_cells: int = Field(
        500_000, ge=1000, description="rows x columns of one /api/parquet_data answer (page with offset)"
    )
    heavy_reads: int = Field(2, ge=1, description="recordings and history reads at once; more: 503")
    connection_command_rate_per_s: float = Field(20.0, gt=0, description="commands per WebSocket connection")
    connection_command_burst: int = Field(40, ge=1, description="...of which at once")
    token_command_rate_per_s: float = Field(50.0, gt=0, description="commands per token (REST and WebSocket)")
    token_command_burst: int = Field(100, ge=1, description="...of which at once")
    stale_after_s: float = Field(1.0, gt=0, description="no telemetry batch for this long: stale")
    tls_cert_file: Path | None = Field(None, description="serve HTTPS with this certificate (chain)")
    tls_key_file: Path | None = Field(None, description="...and this private key; both or neither")

    @model_validator(mode="after")
    def _tls_pair(self) -> GatewaySettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(
                "gateway.tls_cert_file and gateway.tls_key_file go together: set both or neither"
            )
        return self


class EmulatorSettings(_Section):
    gox_supply_bar: float = 45.0
    fuel_supply_bar: float = 30.0
    n2_supply_bar: float = 20.0
    ambient_degc: float = 20.0
    noise_fraction: float = Field(0.004, ge=0)


# The channels every protocol and every consumer relies on (the legacy firmware's 22 fields).
DERIVED_CHANNELS = ("ISP", "D1", "D2", "IMPULSE", "VELOCITY")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RCS_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
        frozen=True,
    )

    stand_name: str = "rcs"
    data_dir: Path = Path("data")
    # the gateway's, as operators know them: RCS_HTTP_PORT, RCS_AUTH, RCS_OPERATOR_TOKEN, RCS_VIEWER_TOKEN
    http_port: int = Field(5001, ge=1, le=65535)
    auth: Literal["on", "off"] = Field("on", description="off: legacy frontend mode, no tokens (logged)")
    operator_token: SecretStr | None = None
    viewer_token: SecretStr | None = None
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    metrics_host: str = Field("127.0.0.1", description="address of the services' /metrics endpoints")
    mqtt: MqttSettings = MqttSettings()
    stm32: Stm32Settings = Stm32Settings()
    acquisition: AcquisitionSettings = AcquisitionSettings()
    channels: tuple[Channel, ...]
    derived: DerivedSettings
    valves: tuple[Valve, ...]
    arduino: ArduinoSettings = ArduinoSettings()
    motors: MotorSettings = MotorSettings()
    actuation: ActuationSettings = ActuationSettings()
    logger: LoggerSettings = LoggerSettings()
    gateway: GatewaySettings = GatewaySettings()
    sequences: dict[str, Sequence] = {}
    interlocks: tuple[Interlock, ...] = ()
    redlines: tuple[Redline, ...] = ()
    emulator: EmulatorSettings = EmulatorSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = Path(os.environ.get("RCS_CONFIG", DEFAULT_CONFIG))
        if not yaml_file.is_file():
            raise FileNotFoundError(f"stand configuration not found: {yaml_file} (set RCS_CONFIG)")
        return (
            init_settings,
            env_settings,
            YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file),
        )

    @field_validator("channels")
    @classmethod
    def _channels_unique(cls, channels: tuple[Channel, ...]) -> tuple[Channel, ...]:
        names = [c.name for c in channels]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate channel names: {duplicates}")
        return channels

    @field_validator("valves")
    @classmethod
    def _valves_unique(cls, valves: tuple[Valve, ...]) -> tuple[Valve, ...]:
        names = [v.name for v in valves]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate valve names in {names}")
        if not 1 <= len(valves) <= 16:
            raise ValueError("the STM32 protocol carries 1 to 16 valves")
        return valves

    @model_validator(mode="after")
    def _derived_inputs_exist(self) -> Settings:
        measured = {c.name for c in self.channels if c.measured}
        names = {c.name for c in self.channels}
        missing = [n for n in DERIVED_CHANNELS if n not in names]
        if missing:
            raise ValueError(f"channels must include the derived channels {missing}")
        clash = [n for n in DERIVED_CHANNELS if n in measured]
        if clash:
            raise ValueError(f"derived channels must not have a calibration: {clash}")
        if "THRUST" not in measured:
            raise ValueError("THRUST must be a measured channel (ISP and IMPULSE derive from it)")
        gox, fuel = self.derived.gox_orifice, self.derived.fuel_orifice
        for ref in (gox.upstream, gox.downstream, gox.temperature, fuel.upstream, fuel.downstream):
            if ref not in measured:
                raise ValueError(f"derived.*_orifice refers to {ref!r}, which is not a measured channel")
        return self

    @model_validator(mode="after")
    def _safety_config_consistent(self) -> Settings:
        names, roles = set(self.valve_names), {v.role for v in self.valves}
        for rule in self.interlocks:
            unknown = [v for v in rule.valves if v not in names and v not in roles]
            if unknown:
                raise ValueError(f"interlock {rule.name!r} refers to unknown valves or roles {unknown}")
        for line in self.redlines:
            if line.channel not in self.channel_names:
                raise ValueError(f"red-line refers to unknown channel {line.channel!r}")
        for name, sequence in self.sequences.items():
            for step in sequence.steps:
                if len(step.valves) != len(self.valves):
                    raise ValueError(
                        f"sequence {name!r}: step {step.valves!r} has {len(step.valves)} digits, "
                        f"expected {len(self.valves)} (one per valve)"
                    )
        aborts = [name for name, sequence in self.sequences.items() if sequence.abort]
        if len(aborts) != 1:
            raise ValueError(f"exactly one sequence must be the abort sequence (abort: true), found {aborts}")
        kept_closed = self.valves_with_roles("isolation", "igniter")
        for step in self.sequences[aborts[0]].steps:
            if any(step.valves[i] == "1" for i in kept_closed):
                raise ValueError(
                    f"abort sequence {aborts[0]!r} must close every isolation valve and the igniter from its "
                    f"first step on and never open them (step {step.valves})"
                )
        return self

    def valves_with_roles(self, *roles: str) -> tuple[int, ...]:
        """Indexes (= bit positions) of the valves with any of these roles."""
        return tuple(i for i, v in enumerate(self.valves) if v.role in roles)

    @cached_property
    def abort_sequence_name(self) -> str:
        return next(name for name, sequence in self.sequences.items() if sequence.abort)

    @cached_property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.channels)

    @cached_property
    def measured_channels(self) -> tuple[Channel, ...]:
        """The channels the STM32 samples, in the order of a binary SAMPLES block."""
        return tuple(c for c in self.channels if c.measured)

    @cached_property
    def valve_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.valves)


def load_settings() -> Settings:
    """Read stand.yaml and the environment; raises pydantic.ValidationError with every problem."""
    return Settings()
