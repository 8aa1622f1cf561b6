"""Test-run routes (docs/protocol.md, Test runs): start and stop through actuation, the command
authority; the recorded runs read from the data directory the logger writes (services/common/runs.py),
plus the active run of actuation's retained `rcs/state/run`."""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from fastapi import Request as HttpRequest
from fastapi.responses import FileResponse, JSONResponse

from services.common import runs as layout
from services.common import topics
from services.gateway.deps import Gateway, GatewayDep, Operator, Viewer
from services.gateway.models import (
    BUSY,
    LIMITED,
    NOT_FOUND,
    REFUSED,
    UNANSWERED,
    Run,
    RunEvents,
    RunIn,
    RunOut,
)

router = APIRouter(tags=["runs"])
ANSWERS = REFUSED | UNANSWERED | LIMITED
EVENTS_MAX_BYTES = 8 * 1024 * 1024  # a run's events answered at most (hours of a busy stand)
RunId = Annotated[str, Path(max_length=80, description="e.g. 20261202T014501Z-hotfire")]


@router.post("/api/runs", responses=ANSWERS)
async def start_run(body: RunIn, identity: Operator, request: HttpRequest, gateway: GatewayDep) -> RunOut:
    """Start a run (409 while another is active)."""
    result = await gateway.command(
        "actuation",
        topics.actuation("run_start"),
        identity,
        request,
        {"name": body.name, "notes": body.notes},
    )
    return RunOut(success=True, run=Run(**result["run"], active=True))


@router.post("/api/runs/{run_id}/stop", responses=ANSWERS)
async def stop_run(run_id: RunId, identity: Operator, request: HttpRequest, gateway: GatewayDep) -> RunOut:
    """Stop the active run `run_id` (409 if it is not the active one); the logger then writes its files."""
    result = await gateway.command(
        "actuation", topics.actuation("run_stop"), identity, request, {"id": run_id}
    )
    return RunOut(success=True, run=Run(**result["run"]))


@router.get("/api/runs")
def list_runs(_: Viewer, gateway: GatewayDep) -> list[Run]:
    """The active run (if any) and every recorded run, newest first."""
    recorded = [Run(**run) for run in layout.list_runs(FsPath(gateway.settings.data_dir))]
    active = _active(gateway)
    if active is None or any(run.id == active.id for run in recorded):
        return recorded
    return [active, *recorded]


@router.api_route("/api/runs", methods=["OPTIONS", "PUT", "PATCH", "DELETE"], include_in_schema=False)
def runs_other_methods() -> JSONResponse:
    """405 naming both methods of /api/runs (Starlette would name only the first route's)."""
    return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": "GET, POST"})


@router.get("/api/runs/{run_id}", responses=NOT_FOUND)
def get_run(run_id: RunId, _: Viewer, gateway: GatewayDep) -> Run:
    """One run: its run.json without the copy of stand.yaml (or, while active, what actuation says)."""
    run = layout.read_run(FsPath(gateway.settings.data_dir), _valid(run_id))
    if run is not None:
        return Run(**layout.summary(run))
    active = _active(gateway)
    if active is not None and active.id == run_id:
        return active
    raise HTTPException(404, f"no run {run_id}")


@router.get(
    "/api/runs/{run_id}/report",
    response_class=FileResponse,
    responses={200: {"content": {"text/html": {}}}, **NOT_FOUND},
)
def run_report(run_id: RunId, _: Viewer, gateway: GatewayDep) -> FileResponse:
    """The run's report (HTML), once the logger has had it made."""
    return _file(gateway, run_id, layout.REPORT, "text/html; charset=utf-8", "report")


@router.get("/api/runs/{run_id}/events", responses=NOT_FOUND | BUSY)
def run_events(run_id: RunId, _: Viewer, gateway: GatewayDep) -> RunEvents:
    """The run's events (its events.jsonl, also while it records), in order, as the console marks them
    on its plots; `notes` says what could not be read."""
    directory = layout.run_dir(FsPath(gateway.settings.data_dir), _valid(run_id))
    if not directory.is_dir():
        raise HTTPException(404, f"no run {run_id}")
    notes: list[str] = []
    with gateway.heavy.take():  # up to EVENTS_MAX_BYTES read and decoded
        events = layout.read_events(directory / layout.EVENTS, notes, max_bytes=EVENTS_MAX_BYTES)
        return RunEvents(events=events, notes=notes)


@router.get(
    "/api/runs/{run_id}/samples",
    response_class=FileResponse,
    responses={200: {"content": {"application/vnd.apache.parquet": {}}}, **NOT_FOUND},
)
def run_samples(run_id: RunId, _: Viewer, gateway: GatewayDep) -> FileResponse:
    """The run's samples.parquet (pre-trigger window included)."""
    return _file(gateway, run_id, layout.SAMPLES, "application/vnd.apache.parquet", "samples")


def _file(gateway: Gateway, run_id: str, name: str, media_type: str, what: str) -> FileResponse:
    directory = layout.run_dir(FsPath(gateway.settings.data_dir), _valid(run_id))
    run = layout.read_run(FsPath(gateway.settings.data_dir), run_id)
    if run is None:
        raise HTTPException(404, f"no recorded run {run_id}")
    path = directory / name
    if not path.is_file():
        report = run.get("report") or {}
        why = report.get("reason") or report.get("status") or "not generated"
        raise HTTPException(404, f"no {what} for run {run_id}: {why}" if what == "report" else f"no {what}")
    filename = f"{run_id}-{name}"
    return FileResponse(path, media_type=media_type, filename=filename if what != "report" else None)


def _valid(run_id: str) -> str:
    if not layout.valid_id(run_id):
        raise HTTPException(404, "not a run id (e.g. 20261202T014501Z-hotfire)")
    return run_id


def _active(gateway: Gateway) -> Run | None:
    active = (gateway.bus.latest(topics.STATE_RUN) or {}).get("active")
    return Run(**active, active=True) if isinstance(active, dict) else None
