"""Settings: `config/stand.yaml` describes the stand, `RCS_*` environment variables override it.

Nested keys map to environment variables by their first underscore: `RCS_MQTT_HOST` sets
`mqtt.host`, `RCS_STM32_PORT` sets `stm32.port`, `RCS_DATA_DIR` sets `data_dir`. The YAML file is
`RCS_CONFIG` if set, else `config/stand.yaml` at the project root.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
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
    warn_above: float | None = Field(None, description="an alarm (no abort) beyond this")
    warn_below: float | None = None
    warn_persistence_ms: float = Field(50.0, ge=0, description="...for at least this long")

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


OnFailure = Literal["abort", "hold"]


class Condition(_Section):
    """A channel above or below a value, judged on the mean of each telemetry batch (10 ms)."""

    channel: str
    above: float | None = None
    below: float | None = None

    @model_validator(mode="after")
    def _one_limit(self) -> Condition:
        if (self.above is None) == (self.below is None):
            raise ValueError(f"condition on {self.channel}: give exactly one of 'above' or 'below'")
        return self

    def __str__(self) -> str:
        return (
            f"{self.channel} above {self.above:g}"
            if self.above is not None
            else f"{self.channel} below {self.below:g}"
        )

    def met(self, value: float) -> bool:
        return value > self.above if self.above is not None else value < self.below  # type: ignore[operator]


class Requirement(Condition):
    """Must hold when its step starts; else the sequence holds or aborts (`on_fail`)."""

    on_fail: OnFailure = "abort"


class WaitUntil(Condition):
    """The step ends once the condition holds; if it has not within `timeout_ms`, `on_timeout`."""

    timeout_ms: int = Field(gt=0)
    on_timeout: OnFailure = "abort"


class MotorMove(_Section):
    """Move a motor (by name) to `target_deg` or by `by_deg`, and wait until it has (or abort)."""

    motor: str
    target_deg: float | None = Field(None, allow_inf_nan=False)
    by_deg: float | None = Field(None, allow_inf_nan=False)
    timeout_ms: int = Field(gt=0)

    @model_validator(mode="after")
    def _one_move(self) -> MotorMove:
        if (self.target_deg is None) == (self.by_deg is None):
            raise ValueError(f"motor move of {self.motor}: give exactly one of 'target_deg' or 'by_deg'")
        return self


class Step(_Section):
    """One step: [require] -> [hold] -> valves -> [motor] -> wait (docs/safety.md §4)."""

    valves: str | None = Field(
        None, pattern=r"^[01]+$", description="whole pattern in valve order, '1' = open"
    )
    open: tuple[str, ...] = Field((), description="valves opened, the others as they are")
    close: tuple[str, ...] = Field((), description="valves closed, the others as they are")
    wait_ms: int = Field(0, ge=0, description="delay before the next step")
    wait_until: WaitUntil | None = None
    require: tuple[Requirement, ...] = ()
    hold: str | None = Field(None, min_length=1, description="stop here until an operator resumes")
    motor: MotorMove | None = None
    phase: str | None = Field(None, description="from this step on (until another names one)")
    t0: bool = Field(False, description="T-0 is when this step starts")

    @property
    def sets_valves(self) -> bool:
        return self.valves is not None or bool(self.open) or bool(self.close)

    def after(self, before: frozenset[str], valve_names: tuple[str, ...]) -> frozenset[str]:
        """The open valves after this step, from `before` (names)."""
        if self.valves is not None:
            return frozenset(n for n, bit in zip(valve_names, self.valves, strict=False) if bit == "1")
        return (before - set(self.close)) | set(self.open)


class Sequence(_Section):
    description: str = ""
    requires_armed: bool = False
    abort: bool = False
    procedure: bool = Field(
        False,
        description="ends idle with isolation valves and igniter confirmed closed; manual commands refused",
    )
    test: bool = Field(
        False, description="a test: starting it starts a run, which ends `runs.post_s` after it ended"
    )
    steps: tuple[Step, ...] = Field(min_length=1)

    def patterns(self, valve_names: tuple[str, ...]) -> tuple[frozenset[str] | None, ...]:
        """The open valves after each step that sets valves (None for the others), from all closed."""
        current: frozenset[str] = frozenset()
        out: list[frozenset[str] | None] = []
        for step in self.steps:
            if step.sets_valves:
                current = step.after(current, valve_names)
                out.append(current)
            else:
                out.append(None)
        return tuple(out)

    @property
    def t0_index(self) -> int | None:
        return next((i for i, step in enumerate(self.steps) if step.t0), None)


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
    states: tuple[SystemState, ...] = Field(("armed", "running"), description="active in these states...")
    phases: tuple[str, ...] = Field((), description="...or while a sequence is in one of these phases...")
    while_open: tuple[str, ...] = Field(
        (), description="...or while any of these valves (names/roles) may be open"
    )

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


class RunsSettings(_Section):
    pretrigger_s: float = Field(
        10.0, ge=0, le=300, description="a run's recording starts this long before it (ring buffer)"
    )
    post_s: float = Field(
        5.0, ge=0, le=600, description="a test procedure's run ends this long after the procedure"
    )
    report_timeout_s: float = Field(120.0, gt=0, le=3600, description="rcs-analyze report may take this long")


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


class ReportSettings(_Section):
    """What `rcs-analyze report` computes its figures from (docs/configuration.md, `report`)."""

    chamber_pressure: str = Field("P5", description="the channel whose rise above the threshold is the burn")
    thrust: str = "THRUST"
    ox_flow: str = Field("D1", description="oxidiser mass flow (kg/s), integrated to the oxidiser mass")
    fuel_flow: str = Field("D2", description="fuel mass flow (kg/s), integrated to the fuel mass")
    ignition_valve: str = Field("IGNITION", description="its opening starts the ignition delay")
    burn_threshold_bar: float | None = Field(
        None, gt=0, description="burning while chamber pressure is above this; None: the fraction below"
    )
    burn_threshold_fraction: float = Field(
        0.5, gt=0, lt=1, description="...of the burn's steady chamber pressure (its plateau, spikes left out)"
    )
    burn_min_bar: float = Field(2.0, ge=0, description="the fraction's threshold is never below this")
    burn_merge_s: float = Field(0.1, ge=0, description="dips below the threshold shorter than this")
    plot_channels: tuple[str, ...] = ("P5", "THRUST", "P1", "P3", "D1", "D2", "Tbogaz1")
    plot_points: int = Field(2000, ge=100, le=20000, description="min/max buckets per plot")


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
    http_host: str = Field("0.0.0.0", min_length=1, description="the address the gateway listens on")
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
    runs: RunsSettings = RunsSettings()
    gateway: GatewaySettings = GatewaySettings()
    sequences: dict[str, Sequence] = {}
    interlocks: tuple[Interlock, ...] = ()
    redlines: tuple[Redline, ...] = ()
    phases: tuple[str, ...] = (
        "countdown",
        "feed",
        "ignition",
        "mainstage",
        "shutdown",
        "purge",
        "vent",
        "safing",
    )
    emulator: EmulatorSettings = EmulatorSettings()
    report: ReportSettings = ReportSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = config_file()
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
    def _report_refers_to_the_stand(self) -> Settings:
        report, names = self.report, set(self.channel_names)
        fields = ("chamber_pressure", "thrust", "ox_flow", "fuel_flow")
        problems = [
            f"report.{key}: {getattr(report, key)!r} is not a channel"
            for key in fields
            if getattr(report, key) not in names
        ]
        unknown = [name for name in report.plot_channels if name not in names]
        if unknown:
            problems.append(f"report.plot_channels: {unknown} are not channels")
        if report.ignition_valve not in self.valve_names:
            problems.append(
                f"report.ignition_valve: {report.ignition_valve!r} is not a valve "
                f"(valves: {', '.join(self.valve_names)})"
            )
        if problems:
            raise ValueError("\n".join(f"{config_file()}: {p}" for p in problems))
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
        for line in self.redlines:
            unknown = [p for p in line.phases if p not in self.phases]
            if unknown:
                raise ValueError(
                    f"red-line on {line.channel} names unknown phases {unknown} (phases: {self.phases})"
                )
            unknown = [v for v in line.while_open if v not in names and v not in roles]
            if unknown:
                raise ValueError(
                    f"red-line on {line.channel}: while_open names unknown valves or roles {unknown}"
                )
        problems = [
            p for name, sequence in self.sequences.items() for p in self._sequence_problems(name, sequence)
        ]
        if problems:
            raise ValueError("\n".join(f"{config_file()}: {p}" for p in problems))
        if self.runs.pretrigger_s > self.acquisition.ring_seconds:
            raise ValueError(
                f"runs.pretrigger_s ({self.runs.pretrigger_s:g}) is longer than the ring buffer "
                f"(acquisition.ring_seconds {self.acquisition.ring_seconds:g})"
            )
        aborts = [name for name, sequence in self.sequences.items() if sequence.abort]
        if len(aborts) != 1:
            raise ValueError(f"exactly one sequence must be the abort sequence (abort: true), found {aborts}")
        danger = {self.valves[i].name for i in self.valves_with_roles("isolation", "igniter")}
        for after in self.sequences[aborts[0]].patterns(self.valve_names):
            if after is not None and after & danger:
                raise ValueError(
                    f"abort sequence {aborts[0]!r} must close every isolation valve and the igniter from its "
                    f"first step on and never open them (step opens {', '.join(sorted(after & danger))})"
                )
        return self

    def _sequence_problems(self, name: str, sequence: Sequence) -> list[str]:
        """Every problem of one sequence, one line each: `sequences.<name> step i/n: <problem>`."""
        problems: list[str] = []
        n = len(sequence.steps)
        channels, motors = set(self.channel_names), {m.name for m in self.motors.motors}
        t0 = [i for i, step in enumerate(sequence.steps) if step.t0]
        if len(t0) > 1:
            problems.append(f"sequences.{name}: t0 is set on {len(t0)} steps, at most one may be T-0")
        for i, step in enumerate(sequence.steps):
            where = f"sequences.{name} step {i + 1}/{n}"
            for problem in self._step_problems(step, channels, motors):
                problems.append(f"{where}: {problem}")
            past_t0 = bool(t0) and i >= t0[0]
            holds = [c for c in step.require if c.on_fail == "hold"]
            if past_t0 and (step.hold or holds or (step.wait_until and step.wait_until.on_timeout == "hold")):
                problems.append(
                    f"{where}: no hold at or after T-0 (the engine may be burning): abort instead"
                )
            if sequence.abort and (step.hold or step.require or step.wait_until or step.motor):
                problems.append(
                    f"{where}: the abort sequence only sets valves and waits (nothing may stop it)"
                )
        if sequence.test and sequence.abort:
            problems.append(f"sequences.{name}: the abort sequence cannot be a test (test: true)")
        if sequence.procedure:
            if not sequence.requires_armed:
                problems.append(f"sequences.{name}: a procedure must set requires_armed: true")
            danger = {self.valves[i].name for i in self.valves_with_roles("isolation", "igniter")}
            last = next(
                (p for p in reversed(sequence.patterns(self.valve_names)) if p is not None), frozenset()
            )
            if last & danger:
                problems.append(
                    f"sequences.{name}: a procedure must end with every isolation valve and the igniter "
                    f"closed (its last valves leave {', '.join(sorted(last & danger))} open)"
                )
        return problems

    def _step_problems(self, step: Step, channels: set[str], motors: set[str]) -> list[str]:
        problems: list[str] = []
        if step.valves is not None and (step.open or step.close):
            problems.append("give either a whole pattern 'valves' or 'open'/'close', not both")
        if step.valves is not None and len(step.valves) != len(self.valves):
            problems.append(
                f"pattern {step.valves!r} has {len(step.valves)} digits, expected {len(self.valves)} "
                f"(one per valve: {', '.join(self.valve_names)})"
            )
        unknown = [v for v in (*step.open, *step.close) if v not in self.valve_names]
        if unknown:
            problems.append(f"unknown valves {unknown} (valves: {', '.join(self.valve_names)})")
        both = sorted(set(step.open) & set(step.close))
        if both:
            problems.append(f"opens and closes {both} in the same step")
        if step.wait_ms and step.wait_until is not None:
            problems.append("give either 'wait_ms' or 'wait_until', not both")
        conditions: list[Condition] = [*step.require, *([step.wait_until] if step.wait_until else [])]
        for condition in conditions:
            if condition.channel not in channels:
                problems.append(f"condition on unknown channel {condition.channel!r}")
        if step.phase is not None and step.phase not in self.phases:
            problems.append(f"unknown phase {step.phase!r} (phases: {', '.join(self.phases)})")
        if step.motor is not None:
            if step.motor.motor not in motors:
                problems.append(f"unknown motor {step.motor.motor!r} (motors: {', '.join(sorted(motors))})")
            if step.motor.target_deg is not None and abs(step.motor.target_deg) > self.motors.limit_deg:
                problems.append(f"motor target {step.motor.target_deg} beyond +-{self.motors.limit_deg} deg")
        return problems

    @cached_property
    def warning_limits(self) -> tuple[Redline, ...]:
        """The channels' warning limits as limits that apply in every state (alarms, no abort)."""
        every: tuple[SystemState, ...] = ("idle", "armed", "running", "aborting")
        return tuple(
            Redline(channel=c.name, persistence_ms=c.warn_persistence_ms, states=every, **{side: value})
            for c in self.channels
            for side, value in (("above", c.warn_above), ("below", c.warn_below))
            if value is not None
        )

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


def config_file() -> Path:
    """The stand's YAML file: RCS_CONFIG, else config/stand.yaml."""
    return Path(os.environ.get("RCS_CONFIG", DEFAULT_CONFIG))


def load_settings() -> Settings:
    """Read stand.yaml and the environment; raises pydantic.ValidationError with every problem."""
    return Settings()


def describe_problems(error: ValidationError) -> str:
    """A configuration error as one line per problem: `<file>: <where>: <problem>`."""
    lines: list[str] = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"])
        where = re.sub(r"\.steps\.(\d+)", lambda m: f" step {int(m.group(1)) + 1}", where)
        message = str(problem["msg"]).removeprefix("Value error, ")
        for line in message.splitlines():
            if line.startswith(f"{config_file()}: "):
                lines.append(line)
            else:
                lines.append(f"{config_file()}: {where}: {line}" if where else f"{config_file()}: {line}")
    return "\n".join(lines)
