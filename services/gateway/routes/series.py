"""Review routes: a recording or a run's samples over a time range (min/max reduced) for plotting, and
downloads of either as Parquet or CSV."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import pyarrow.parquet as pq
from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.responses import FileResponse, StreamingResponse

from services.gateway import recordings, series
from services.gateway.deps import GatewayDep, Viewer, invalid
from services.gateway.models import BUSY, Detail
from services.gateway.routes.recordings import MAX_COLUMNS_QUERY
from services.gateway.routes.telemetry import MAX_POINTS

DEFAULT_POINTS = 1000
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Detail, "description": "no such recording or run"}
}
PARQUET = "application/vnd.apache.parquet"
CSV: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {}}}}
MAX_TIME = 1e11  # UNIX seconds: beyond year 5000, a bound that keeps arithmetic finite

router = APIRouter(tags=["review"])

Channels = Annotated[
    str | None, Query(max_length=MAX_COLUMNS_QUERY, description="comma-separated channel names; default: all")
]
Start = Annotated[float | None, Query(ge=0, le=MAX_TIME, allow_inf_nan=False, description="UNIX s")]
End = Annotated[float | None, Query(ge=0, le=MAX_TIME, allow_inf_nan=False, description="UNIX s")]
Points = Annotated[int, Query(ge=2, le=MAX_POINTS, description="buckets of equal time")]


def _recording(data_dir: Path, name: str) -> Path:
    return recordings.resolve(data_dir, name)


def _run(data_dir: Path, run_id: str) -> Path:
    return series.resolve_run(data_dir, run_id)


def _find(resolve: Callable[[Path, str], Path], gateway: GatewayDep, name: str) -> Path:
    try:
        return resolve(gateway.settings.data_dir, name)
    except recordings.BadQueryError as exc:  # traversal, other files: not ours to serve
        raise HTTPException(404, f"not found: {exc}") from exc
    except FileNotFoundError as exc:
        raise HTTPException(404, "not found") from exc


def _wanted(channels: str | None) -> list[str] | None:
    return list(dict.fromkeys(c.strip() for c in channels.split(",") if c.strip())) if channels else None


def _reduced(
    path: Path,
    gateway: GatewayDep,
    *,
    channels: str | None,
    start: float | None,
    end: float | None,
    points: int,
) -> Response:
    with gateway.heavy.take():
        try:
            found = series.reduce(
                path,
                channels=_wanted(channels),
                start=start,
                end=end,
                points=points,
                max_cells=gateway.settings.gateway.max_answer_cells,
            )
        except recordings.TooLargeError as exc:
            raise invalid("query", "points", str(exc)) from exc
        except recordings.BadQueryError as exc:
            raise invalid("query", "channels", str(exc)) from exc
        except FileNotFoundError as exc:  # removed by retention meanwhile
            raise HTTPException(404, "not found") from exc
        return Response(json.dumps(asdict(found), allow_nan=False), media_type="application/json")


def _csv(
    path: Path,
    gateway: GatewayDep,
    download_name: str,
    *,
    channels: str | None,
    start: float | None,
    end: float | None,
) -> Response:
    wanted = _wanted(channels)
    try:
        series.channels_of(pq.ParquetFile(path), wanted)  # a bad name is a 422 before streaming starts
    except recordings.BadQueryError as exc:
        raise invalid("query", "channels", str(exc)) from exc
    slot = ExitStack()
    slot.enter_context(gateway.heavy.take())  # held until the last chunk is sent (or the client left)

    def chunks() -> Iterator[bytes]:
        with slot:
            yield from series.csv_chunks(path, channels=wanted, start=start, end=end)

    headers = {"Content-Disposition": f'attachment; filename="{download_name}.csv"'}
    return StreamingResponse(chunks(), media_type="text/csv", headers=headers)


@router.get("/api/parquet_files/{filename}/series", responses=NOT_FOUND | BUSY)
def recording_series(
    _: Viewer,
    gateway: GatewayDep,
    filename: str,
    *,
    channels: Channels = None,
    start: Start = None,
    end: End = None,
    points: Points = DEFAULT_POINTS,
) -> Response:
    """`channels` of a recording from `start` to `end` (UNIX s; default its whole length) in
    `points` buckets of equal time: `{channels, first, last, start, end, n_source, t, min, max}`,
    `first`/`last` the recording's own ends; an empty bucket (a gap) is null."""
    path = _find(_recording, gateway, filename)
    return _reduced(path, gateway, channels=channels, start=start, end=end, points=points)


@router.get(
    "/api/parquet_files/{filename}/download",
    response_class=FileResponse,
    responses={200: {"content": {PARQUET: {}}}, **NOT_FOUND},
)
def recording_download(_: Viewer, gateway: GatewayDep, filename: str) -> FileResponse:
    """The recording's Parquet file as it is."""
    path = _find(_recording, gateway, filename)
    return FileResponse(path, media_type=PARQUET, filename=path.name)


@router.get("/api/parquet_files/{filename}/csv", responses=CSV | NOT_FOUND | BUSY)
def recording_csv(
    _: Viewer,
    gateway: GatewayDep,
    filename: str,
    *,
    channels: Channels = None,
    start: Start = None,
    end: End = None,
) -> Response:
    """The recording's rows from `start` to `end` (UNIX s, inclusive; default: all) as CSV, streamed:
    `timestamp` (UTC), `seq`, `session`, then `channels` (default: every channel)."""
    path = _find(_recording, gateway, filename)
    return _csv(path, gateway, path.stem, channels=channels, start=start, end=end)


@router.get("/api/runs/{run_id}/series", responses=NOT_FOUND | BUSY)
def run_series(
    _: Viewer,
    gateway: GatewayDep,
    run_id: str,
    *,
    channels: Channels = None,
    start: Start = None,
    end: End = None,
    points: Points = DEFAULT_POINTS,
) -> Response:
    """As `/api/parquet_files/{filename}/series`, for a run's samples
    (`data_dir/runs/<id>/samples.parquet`)."""
    path = _find(_run, gateway, run_id)
    return _reduced(path, gateway, channels=channels, start=start, end=end, points=points)


@router.get("/api/runs/{run_id}/csv", responses=CSV | NOT_FOUND | BUSY)
def run_csv(
    _: Viewer,
    gateway: GatewayDep,
    run_id: str,
    *,
    channels: Channels = None,
    start: Start = None,
    end: End = None,
) -> Response:
    """A run's samples as CSV, as `/api/parquet_files/{filename}/csv` (its Parquet file:
    `/api/runs/{run_id}/samples`)."""
    path = _find(_run, gateway, run_id)
    return _csv(path, gateway, f"{run_id}-samples", channels=channels, start=start, end=end)
