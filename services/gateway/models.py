"""The REST API's request and response models (and the error answers the routes declare)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.common import runs
from services.common.settings import ValveRole
from services.gateway.problems import Problem

Number = float | None


class Detail(BaseModel):
    detail: str


REFUSED: dict[int | str, dict[str, Any]] = {409: {"model": Detail, "description": "refused, with the reason"}}
UNANSWERED: dict[int | str, dict[str, Any]] = {
    503: {"model": Detail, "description": "the service (or the broker) did not answer"}
}
LIMITED: dict[int | str, dict[str, Any]] = {
    429: {"model": Detail, "description": "beyond the token's command rate limit (never queued)"}
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Detail, "description": "no such item"}}
BUSY: dict[int | str, dict[str, Any]] = {
    503: {"model": Detail, "description": "gateway.heavy_reads reads already running (Retry-After)"}
}


class Hello(BaseModel):
    message: str
    stand: str


class Status(BaseModel):
    system_mode: str = Field(
        description="actuation's state: idle, armed, running, aborting; unknown if unseen"
    )
    stm32_connected: bool
    arduino_connected: bool
    websocket_connections: int
    simulation_active: bool = Field(description="the STM32 link is the emulator")
    status: Literal["ok", "degraded"] = Field(description="degraded: `problems` is not empty")
    broker_connected: bool
    services: dict[str, Literal["online", "offline"]]
    problems: list[Problem] = Field(description="what is wrong now, each with its component and reason")
    lost_samples_total: int | None = Field(
        description="device samples that never arrived (unplugged, dropped frames); null if unknown"
    )


class SensorData(BaseModel):
    """The existing frontend's shape (see services/gateway/legacy.py for every mapping)."""

    pressures: list[Number]
    temperatures: list[Number]
    thrust: Number
    isp: Number
    oxygen_consumption: Number
    fuel_consumption: Number
    total_impulse: Number
    exhaust_velocity: Number
    p_chamber: Number
    debis: list[Number]
    kutlesel_debi: Number
    deltap2: Number
    adiabatic_temperature: Number
    errors: int
    timestamp: str


class Sensors(BaseModel):
    t: float | None = Field(description="UNIX time of the newest sample; null before the first")
    channels: dict[str, Number] = Field(description="newest value of every channel (NaN/inf: null)")
    sensor_data: SensorData


class ValvesIn(BaseModel):
    model_config = ConfigDict(strict=True)  # true/false are no 0/1 (nor "1"): as on MQTT

    valves: list[Annotated[int, Field(ge=0, le=1, json_schema_extra={"enum": [0, 1]})]] = Field(
        min_length=1, max_length=16, description="one 0/1 per valve of config/stand.yaml (9), 1 = open"
    )


class ValvesOut(BaseModel):
    success: bool
    valves: list[int]
    bits: str


class StepMotorIn(BaseModel):
    model_config = ConfigDict(strict=True)  # true is no motor 1 nor 1 degree

    motor_id: int = Field(ge=1, le=2, description="a configured motor (1 or 2)")
    angle: float = Field(allow_inf_nan=False, description="relative move in degrees")


class StepMotorOut(BaseModel):
    success: bool
    motor_id: int
    angle: float
    position_deg: float | None
    response: str


class CommandOut(BaseModel):
    success: bool
    state: str | None = None
    scenario: str | None = None
    valves: list[int] | None = None
    bits: str | None = None


class HoldIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("operator hold", min_length=1, max_length=200)


class Alarm(BaseModel):
    """One alarm of `rcs/state/alarms` (docs/protocol.md)."""

    id: int
    key: str
    kind: Literal["warning", "redline"]
    channel: str
    direction: Literal["above", "below"]
    limit: float
    value: float | None
    state: Literal["active-unacknowledged", "active-acknowledged", "cleared-unacknowledged"]
    raised_ts: float
    cleared_ts: float | None = None
    acknowledged_by: str | None = None
    acknowledged_ts: float | None = None


class Alarms(BaseModel):
    alarms: list[Alarm]
    ts: float | None = Field(description="when actuation published them; null before it has")


class SequenceStep(BaseModel):
    step: int = Field(description="1-based, as `step` of rcs/state/system's `sequence`")
    phase: str | None = Field(description="the phase it runs in (kept from an earlier step)")
    t0: bool = Field(description="T-0 is when this step starts")
    text: str = Field(description="what it does, in order: require, hold, valves, motor, wait")
    wait_ms: int | None = Field(description="its fixed wait; null when it waits for a condition")


class SequenceInfo(BaseModel):
    name: str
    description: str
    procedure: bool
    requires_armed: bool
    abort: bool = Field(description="the abort sequence: started by ABORT, never by `scenario`")
    steps: list[SequenceStep]


class Sequences(BaseModel):
    sequences: list[SequenceInfo]


class AckOut(BaseModel):
    success: bool
    acknowledged: int


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=runs.NAME_CHARS, description="the test's name (its id's slug)")
    notes: str = Field("", max_length=runs.NOTES_CHARS)


class Run(BaseModel):
    """A run: as in `rcs/state/run` while active; its run.json (without the copy of stand.yaml) once
    recorded (docs/protocol.md, Test runs)."""

    model_config = ConfigDict(extra="allow")
    id: str
    name: str
    notes: str = ""
    stand: str | None = None
    started_at: float
    ended_at: float | None = None
    started_by: str | None = None
    stopped_by: str | None = None
    procedure: str | None = None
    operators: list[str] = []
    result: str | None = Field(None, description="completed, aborted, cancelled, stopped, interrupted")
    active: bool = Field(False, description="still running (not yet recorded)")


class RunOut(BaseModel):
    success: bool
    run: Run


class SaveOut(BaseModel):
    success: bool
    file: str
    path: str
    size: int


class BufferStatus(BaseModel):
    session: str | None
    channels: list[str]
    capacity: int
    size: int
    fill: float
    first_seq: int | None
    last_seq: int | None
    memory_bytes: int


class History(BaseModel):
    session: str | None
    channels: list[str]
    n: int
    n_source: int
    seq_first: int | None
    seq_last: int | None
    t: list[float] = Field(description="UNIX time of each bucket's first sample")
    min: dict[str, list[Number]]
    max: dict[str, list[Number]]


class RunEvents(BaseModel):
    events: list[dict[str, Any]] = Field(description="the run's events.jsonl, in order")
    notes: list[str] = Field(description="what could not be read, and why (e.g. a line being written)")


class Events(BaseModel):
    events: list[dict[str, Any]] = Field(description="newest first; bytes as base64, NaN/inf as null")


class Health(BaseModel):
    status: Literal["ok", "failing"]
    broker_connected: bool
    problems: list[Problem]


class ParquetFile(BaseModel):
    name: str
    size: float = Field(description="KB")
    path: str


class ParquetData(BaseModel):
    columns: list[str]
    rowCount: int = Field(description="rows in the whole file")  # noqa: N815 - the existing frontend's name
    offset: int
    reduced: bool = Field(description="min/max buckets (`points`) rather than the rows themselves")
    data: dict[str, list[float | int | str | None]]


class TareIn(BaseModel):
    """`POST /api/tare` (docs/protocol.md, *Before the test*)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    channels: list[str] = Field(min_length=1, max_length=64, description="measured channels to zero")
    seconds: float = Field(
        2.0, ge=0.1, le=30.0, allow_inf_nan=False, description="the mean of the last seconds of samples"
    )
    clear: bool = Field(False, description="true: remove these channels' tare instead (`seconds` unused)")


class TareEntry(BaseModel):
    offset: float = Field(description="subtracted from every sample, in `unit`")
    unit: str
    at: float = Field(description="UNIX time it was taken")
    by: str = Field(description="who asked (the audited account)")
    seconds: float
    samples: int


class TareOut(BaseModel):
    success: bool
    channels: list[str] = Field(description="the channels of this request")
    cleared: bool
    samples: int = Field(description="samples averaged (0 for a clear)")
    tare: dict[str, TareEntry] = Field(description="every tared channel now, as in the telemetry meta")


class ChecklistItemState(BaseModel):
    id: str
    label: str
    kind: str = Field(description="the evaluator (docs/configuration.md, checklist)")
    ok: bool
    reason: str = Field(description="what was seen, for a pass as for a failure")
    tare: list[str] = Field(
        default_factory=list, description="channels a tare would make pass (`tare_recent` items; else none)"
    )


class Checklist(BaseModel):
    ok: bool = Field(description="every item passes: arming and procedures are not refused by it")
    items: list[ChecklistItemState]
    ts: float


class WhoAmI(BaseModel):
    login: str = Field(description="the account the token belongs to (what the audit trail records)")
    role: Literal["viewer", "operator"]


class ConsoleValve(BaseModel):
    name: str
    role: ValveRole
    confirm: bool = Field(description="the console asks for a confirmation before opening it")


class ConsoleChannel(BaseModel):
    name: str
    unit: str
    description: str
    warn_above: Number = None
    warn_below: Number = None


class ConsoleRedline(BaseModel):
    channel: str
    above: Number = None
    below: Number = None
    states: list[str]
    while_open: list[str]


class ConsoleConfig(BaseModel):
    stand: str
    valves: list[ConsoleValve] = Field(description="in valve order (the bit order of every pattern)")
    channels: list[ConsoleChannel]
    redlines: list[ConsoleRedline]
    schematic: str = Field(
        description="the stand's schematic (SVG): elements `valve-<name>`, `channel-<name>`"
    )


class Storage(BaseModel):
    data_dir: str
    free_bytes: int | None = Field(description="free space where the recordings go; null if unreadable")
    total_bytes: int | None
    open_segment: str | None = Field(description="the file the logger is writing; null if none or no answer")
    disk_error: str | None
    logger_reason: str | None = Field(description="why the logger's status is unknown; null when it answered")
