"""Recording routes: the logger's Parquet files in the data directory and their rows."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response

from services.gateway import recordings
from services.gateway.deps import GatewayDep, Viewer, invalid
from services.gateway.models import BUSY, Detail, ParquetData, ParquetFile
from services.gateway.routes.telemetry import MAX_POINTS

MAX_RAW_ROWS = 100_000
DEFAULT_RAW_ROWS = 10_000
MAX_COLUMNS_QUERY = 4096  # characters of `columns`: every channel name of a stand, comma-separated

router = APIRouter(tags=["recordings"])


@router.get("/api/parquet_files")
def parquet_files(_: Viewer, gateway: GatewayDep) -> list[ParquetFile]:
    """The logger's recordings in the data directory, newest first (listed in a worker thread:
    a large directory on an SD card must not hold up the telemetry stream)."""
    return [ParquetFile(**asdict(info)) for info in recordings.list_files(gateway.settings.data_dir)]


@router.get(
    "/api/parquet_data/{filename}",
    response_model=ParquetData,
    responses={404: {"model": Detail, "description": "not a recording of the data directory"}, **BUSY},
)
def parquet_data(
    _: Viewer,
    gateway: GatewayDep,
    filename: str,
    *,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int | None, Query(ge=1, le=MAX_RAW_ROWS)] = None,
    columns: Annotated[
        str | None, Query(max_length=MAX_COLUMNS_QUERY, description="comma-separated; default: all")
    ] = None,
    points: Annotated[int | None, Query(ge=2, le=MAX_POINTS)] = None,
) -> Response:
    """Rows of a recording (`timestamp` ISO-8601 UTC, NaN as null).

    Without `points`: rows `offset … offset+limit` (limit default 10000, at most 100000). With
    `points`: the window `offset … offset+limit` (default: to the end of the file) as at most
    `points` rows, two per bucket of equal row count: its minimum then its maximum of every
    channel, at the bucket's first and last timestamp and seq. An answer holds at most
    `gateway.max_answer_cells` cells (rows × columns): ask more and it is 422; page with `offset`.
    """
    try:
        path = recordings.resolve(gateway.settings.data_dir, filename)
    except recordings.BadQueryError as exc:  # traversal, other files: they are no recordings
        raise HTTPException(404, f"no such recording: {exc}") from exc
    except FileNotFoundError as exc:
        raise HTTPException(404, "no such recording") from exc
    wanted = list(dict.fromkeys(c.strip() for c in columns.split(",") if c.strip())) if columns else None
    rows_limit = limit if limit is not None or points is not None else DEFAULT_RAW_ROWS
    with gateway.heavy.take():  # reading and encoding: what a read costs in memory
        try:
            rows = recordings.read_rows(
                path,
                offset=offset,
                limit=rows_limit,
                columns=wanted,
                points=points,
                max_cells=gateway.settings.gateway.max_answer_cells,
            )
        except recordings.TooLargeError as exc:
            raise invalid("query", "limit", str(exc)) from exc
        except recordings.BadQueryError as exc:
            raise invalid("query", "columns", str(exc)) from exc
        except FileNotFoundError as exc:  # removed by retention meanwhile
            raise HTTPException(404, "no such recording") from exc
        body = {
            "columns": rows.columns,
            "rowCount": rows.row_count,
            "offset": rows.offset,
            "reduced": rows.reduced,
            "data": rows.data,
        }
        # Built here rather than validated through the model: up to max_answer_cells cells.
        return Response(json.dumps(body, allow_nan=False), media_type="application/json")
