"""A synthetic run directory (services/analyze/run.py): a procedure of the stand (by default the hot
fire) carried out on the emulator's stand model (services/common/stand_physics.py), with its events
as the logger records them, and the ground truth of its burn.

The procedure's steps run as actuation runs them: valves set, fixed waits, `wait_until` judged on the
plant (its timeout's `abort` runs the abort sequence), phases and T-0. `require`, holds and motor moves
pass at once. With `abort_after_t0_s` a red-line trips that long after T-0 and the abort sequence ends
the burn. Samples get the emulator's sensor noise, the ADC's quantisation and the derived channels.

The truth: the burn is the time the plant burns (combustion latched), its impulse the integral of the
plant's noise-free thrust over the whole run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from services.analyze import run as run_dir
from services.analyze import writing
from services.analyze.load import to_micros
from services.common import recording
from services.common import runs as layout
from services.common.derived import Derivation
from services.common.settings import Sequence as StandSequence
from services.common.settings import Settings, Step, config_file
from services.common.stand_physics import QUANTITIES, Adc, Plant, PlantState, Sensors
from services.common.valve_pattern import parse_pattern

PLANT_BLOCK_S = 0.005  # as services/analyze/synth.py
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class RunPlan:
    start: datetime
    rate_hz: float = 1000.0
    before_s: float = 2.0  # idle before the procedure starts
    after_s: float = 2.0  # idle after it ends
    procedure: str = "hotfire"
    abort_after_t0_s: float | None = None
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)  # run.json fields beyond the generated ones


@dataclass(frozen=True, slots=True)
class Truth:
    burn_s: float
    impulse_ns: float  # ∫ noise-free thrust dt over the run
    ignition_unix_s: float | None  # when the plant began to burn
    t0_unix_s: float | None


class _Simulator:
    def __init__(self, settings: Settings, plan: RunPlan) -> None:
        self.settings = settings
        self.plan = plan
        self.names = settings.valve_names
        self.plant = Plant(self.names, settings.emulator)
        self.state: PlantState = self.plant.initial_state()
        self.dt = 1 / plan.rate_hz
        self.block = max(1, round(PLANT_BLOCK_S * plan.rate_hz))
        self.start_s = plan.start.timestamp()
        self.samples = 0
        self.blocks: list[FloatArray] = []
        self.burning: list[tuple[int, bool]] = []
        self.open: frozenset[str] = frozenset()
        self.events: list[dict[str, Any]] = []
        self.t0: float | None = None
        self.phase: str | None = None
        self.aborted = False

    @property
    def now(self) -> float:
        return self.start_s + self.samples * self.dt

    def event(self, kind: str, **fields: Any) -> None:
        """As the logger records actuation's events."""
        service = "actuation"
        self.events.append({"ts": self.now, "service": service, "kind": kind, **fields, "publisher": service})

    def set_valves(self, open_now: frozenset[str], cause: str) -> None:
        if open_now == self.open:
            return
        self.open = open_now
        bits = "".join("1" if n in open_now else "0" for n in self.names)
        self.event("valves", bits=bits, open=[n for n in self.names if n in open_now], cause=cause)

    def advance(self, seconds: float, until: Callable[[FloatArray], bool] | None = None) -> bool:
        """Run the plant `seconds` (whole blocks); True once `until(latest values)` held."""
        mask = parse_pattern([int(n in self.open) for n in self.names], len(self.names))
        stop = self.samples + round(seconds * self.plan.rate_hz)
        while self.samples < stop:
            k = min(self.block, stop - self.samples)
            self.state, values = self.plant.advance(self.state, mask, k, self.dt)
            self.burning.append((k, self.state.burning))
            self.blocks.append(values)
            self.samples += k
            if until is not None and until(values[-1]):
                return True
        return False

    def wait(self, seconds: float, until: Callable[[FloatArray], bool] | None = None) -> bool:
        """As `advance`, but a red-line planned at `abort_after_t0_s` trips on the way (then True)."""
        planned = self.plan.abort_after_t0_s
        if planned is not None and self.t0 is not None and not self.aborted:
            trip_at = self.t0 + planned
            if self.now + seconds >= trip_at:
                met = self.advance(max(0.0, trip_at - self.now), until)
                if met:
                    return True
                self.trip()
                return True
        return self.advance(seconds, until)

    def trip(self) -> None:
        value = float(self.state.x[QUANTITIES.index("P5")])
        self.event(
            "redline", channel="P5", limit=25.0, direction="above", value=value + 20.0, seq=self.samples
        )
        alarm = {"id": 1, "key": "redline P5 above 25", "kind": "redline", "channel": "P5"}
        self.event("alarm", alarm={**alarm, "state": "active-unacknowledged", "value": value + 20.0})
        self.event("state", old="running", new="aborting", reason="red-line: P5 above 25")
        self.aborted = True

    def run_sequence(self, name: str, sequence: StandSequence) -> None:
        steps = len(sequence.steps)
        self.phase = None
        for i, step in enumerate(sequence.steps):
            if self.aborted and not sequence.abort:
                return
            self.step(name, sequence, i, steps, step)

    def step(self, name: str, sequence: StandSequence, i: int, steps: int, step: Step) -> None:
        if step.t0:
            self.t0 = self.now
        if step.phase is not None:
            self.phase = step.phase
        fields = {"step": i + 1, "steps": steps, "phase": self.phase, "abort": sequence.abort}
        self.event("step", sequence=name, **fields, procedure=sequence.procedure, t0=self.t0, at=self.now)
        if step.sets_valves:
            self.set_valves(step.after(self.open, self.names), f"sequence {name} step {i + 1}/{steps}")
        if step.wait_until is not None:
            condition, column = step.wait_until, QUANTITIES.index(step.wait_until.channel)
            met = self.wait(condition.timeout_ms / 1000, lambda x: condition.met(float(x[column])))
            if not met and condition.on_timeout == "abort" and not self.aborted:
                self.event("state", old="running", new="aborting", reason=f"{condition} timed out")
                self.aborted = True
        elif step.wait_ms:
            self.wait(step.wait_ms / 1000)


def simulate(settings: Settings, plan: RunPlan) -> tuple[pa.Table, list[dict[str, Any]], Truth]:
    """The run's samples (telemetry schema), its events and the truth of its burn."""
    sim = _Simulator(settings, plan)
    sim.advance(plan.before_s)
    sim.event("state", old="idle", new="armed", reason="arm by tester")
    sim.event("command", command="sequence", who="tester", origin="mqtt", args={"name": plan.procedure})
    sim.event("state", old="armed", new="running", reason=f"sequence {plan.procedure}")
    sim.run_sequence(plan.procedure, settings.sequences[plan.procedure])
    if sim.aborted:
        abort = settings.abort_sequence_name
        sim.run_sequence(abort, settings.sequences[abort])
    sim.event("step", sequence=None)
    sim.event("state", old="aborting" if sim.aborted else "running", new="idle", reason="sequence done")
    sim.advance(plan.after_s)

    values = np.concatenate(sim.blocks)
    rng = np.random.default_rng(plan.seed)
    sensors = Sensors(settings.measured_channels, settings.emulator.noise_fraction)
    adc = Adc(settings.measured_channels)
    measured = adc.engineering(adc.counts(sensors.measure(values, rng)))
    seq = np.arange(len(values), dtype=np.int64)
    t_us = to_micros(plan.start) + np.rint(seq * (1e6 / plan.rate_hz)).astype(np.int64)
    rows = Derivation(settings).compute(t_us / 1e6, measured)
    session = f"{plan.start:%Y%m%dT%H%M%SZ}-{rng.bytes(3).hex()}"
    columns = [
        pa.array(t_us, pa.timestamp("us", tz="UTC")),
        pa.array(seq.astype(np.uint64)),
        pa.DictionaryArray.from_arrays(np.zeros(len(seq), dtype=np.int32), pa.array([session])),
        *(pa.array(rows[:, j]) for j in range(rows.shape[1])),
    ]
    table = pa.Table.from_arrays(columns, schema=recording.telemetry_schema(settings.channel_names))

    thrust = values[:, QUANTITIES.index("THRUST")]
    t = seq * sim.dt
    burn_blocks = [(k, burning) for k, burning in sim.burning]
    sizes = np.array([k for k, _ in burn_blocks])
    flags = np.array([b for _, b in burn_blocks])
    first = np.flatnonzero(flags)
    ignition = None if len(first) == 0 else sim.start_s + float(sizes[: first[0]].sum()) * sim.dt
    truth = Truth(
        burn_s=float(sizes[flags].sum()) * sim.dt,
        impulse_ns=float(np.sum(0.5 * (thrust[1:] + thrust[:-1]) * np.diff(t))),
        ignition_unix_s=ignition,
        t0_unix_s=sim.t0,
    )
    return table, sim.events, truth


def write(settings: Settings, plan: RunPlan, directory: Path) -> Truth:
    """The run as a run directory: run.json, samples.parquet (with `rcs.run`), events.jsonl."""
    table, events, truth = simulate(settings, plan)
    directory.mkdir(parents=True, exist_ok=True)
    config = config_file().read_text(encoding="utf-8")
    end = plan.start + timedelta(seconds=table.num_rows / plan.rate_hz)
    meta: dict[str, Any] = {
        "id": directory.name,
        "name": f"synthetic {plan.procedure}",
        "notes": "",
        "operators": ["tester"],
        "stand": settings.stand_name,
        "started_at": plan.start.astimezone(UTC).isoformat(),
        "ended_at": end.astimezone(UTC).isoformat(),
        "procedure": plan.procedure,
        "result": "aborted" if any(e["kind"] == "redline" for e in events) else "completed",
        "config_yaml": config,
        "config_sha256": hashlib.sha256(config.encode()).hexdigest(),
        "version": "synthetic",
        "tare": {},
        "pretrigger_s": plan.before_s,
        "rate_hz": plan.rate_hz,
        **plan.meta,
    }
    (directory / layout.RUN_JSON).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    session = table.column("session")[0].as_py()
    metadata = recording.recording_metadata(settings.channel_names, {session: [(0, table.num_rows - 1)]})
    schema = table.schema.with_metadata({**metadata, "rcs.run": json.dumps(meta)})
    rows = settings.logger.row_group_rows
    parts = (table.slice(offset, rows).cast(schema) for offset in range(0, table.num_rows, rows))
    writing.write_recording(parts, run_dir.samples_path(directory), schema, settings.logger)
    lines = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events)
    (directory / layout.EVENTS).write_text(lines, encoding="utf-8")
    return truth
