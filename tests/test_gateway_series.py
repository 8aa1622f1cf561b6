"""A recording or a run over a time range for plots (min/max in buckets of equal time) and as CSV:
services/gateway/series.py and its routes, on Parquet files written in the logger's format."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.common import recording
from services.common import runs as layout
from services.common.settings import Settings, load_settings
from services.gateway import series
from services.gateway.app import create_app
from services.gateway.auth import Auth
from services.gateway.bus import Bus

RATE = 1000.0
T0 = datetime(2026, 12, 2, 1, 0, tzinfo=UTC).timestamp()
CHANNELS = ["P1", "P5"]
GAP = (3000, 4000)  # rows (seq) lost: a second with no sample
SPIKE = 5123  # one sample of P5 far above the rest
TOKEN = "viewer-token-0123456789"
RUN_ID = "20261202T010000Z-cold-flow"


def _write(path: Path, rows: int = 10_000, row_group: int = 1500) -> None:
    """P1 = seq, P5 = 1 except SPIKE (100) and NaN every 7th sample; seq GAP missing."""
    seq = np.array([s for s in range(rows) if not GAP[0] <= s < GAP[1]], dtype=np.uint64)
    t = T0 + seq / RATE
    p5 = np.ones(len(seq), dtype=np.float32)
    p5[seq % 7 == 0] = np.nan
    p5[seq == SPIKE] = 100.0
    schema = recording.telemetry_schema(CHANNELS)
    table = pa.table(
        {
            "timestamp": pa.array((t * 1e6).astype(np.int64), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "seq": pa.array(seq),
            "session": pa.array(["s1"] * len(seq)).dictionary_encode().cast(schema.field("session").type),
            "P1": pa.array(seq.astype(np.float32)),
            "P5": pa.array(p5),
        },
        schema=schema,
    )
    with pq.ParquetWriter(path, schema, **recording.write_options(schema, 3)) as writer:
        writer.write_table(table, row_group_size=row_group)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    _write(tmp_path / recording.parquet_name(datetime.fromtimestamp(T0, UTC), 0))
    run = layout.run_dir(tmp_path, RUN_ID)
    run.mkdir(parents=True)
    _write(run / layout.SAMPLES, rows=2000)
    (run / layout.RUN_JSON).write_text(json.dumps({"id": RUN_ID, "name": "Cold flow", "started_at": T0}))
    return tmp_path


@pytest.fixture
def client(data_dir: Path) -> Iterator[TestClient]:
    base = load_settings()
    settings: Settings = base.model_copy(
        update={
            "auth": "on",
            "viewer_token": SecretStr(TOKEN),
            "data_dir": data_dir,
            "gateway": base.gateway.model_copy(update={"max_answer_cells": 10_000}),
        }
    )
    # No `with`: the lifespan (the bus) is not needed to read files.
    client = TestClient(create_app(settings, Bus(settings), Auth(settings)))
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    yield client


def _recording(data_dir: Path) -> Path:
    (path,) = data_dir.glob("sensor_log_*.parquet")
    return path


def test_buckets_hold_each_span_s_min_and_max_and_a_gap_is_null(data_dir: Path) -> None:
    found = series.reduce(
        _recording(data_dir), channels=None, start=None, end=None, points=100, max_cells=10_000
    )
    assert found.channels == CHANNELS
    assert found.first == pytest.approx(T0) and found.last == pytest.approx(T0 + 9.999)
    assert found.n_source == 9000 and len(found.t) == 100
    width = (found.end - found.start) / 100
    seq = np.array([s for s in range(10_000) if not GAP[0] <= s < GAP[1]])
    t = T0 + seq / RATE
    for i, start in enumerate(found.t):
        inside = seq[(t >= start) & ((t < start + width) if i < 99 else (t <= found.end))]
        if not len(inside):  # the lost second: no sample, no value
            assert found.min["P1"][i] is None and found.max["P5"][i] is None
            continue
        assert found.min["P1"][i] == inside.min() and found.max["P1"][i] == inside.max()
        assert found.max["P5"][i] == (100.0 if SPIKE in inside else 1.0), "the spike survives, NaN ignored"
    assert sum(v is None for v in found.min["P1"]) == 10  # the second of the gap, in 0.1 s buckets


def test_a_zoom_reads_only_its_span_and_never_splits_samples_into_empty_buckets(data_dir: Path) -> None:
    path = _recording(data_dir)
    zoomed = series.reduce(path, channels=["P5"], start=T0 + 5.0, end=T0 + 5.2, points=1000, max_cells=10_000)
    assert zoomed.channels == ["P5"] and zoomed.n_source == 201
    # about two samples a bucket (at the file's mean rate, its gap included): finer would be empty
    assert 50 < len(zoomed.t) <= 100
    assert None not in zoomed.max["P5"]
    assert max(v for v in zoomed.max["P5"] if v is not None) == 100.0


def test_csv_is_the_span_s_rows_with_a_header(data_dir: Path) -> None:
    path = _recording(data_dir)
    text = b"".join(series.csv_chunks(path, channels=["P5"], start=T0 + 2.9985, end=T0 + 4.0005)).decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["timestamp", "seq", "session", "P5"]
    assert [int(r[1]) for r in rows[1:]] == [2999, 4000]  # the samples on both sides of the gap
    assert rows[1][0] == "2026-12-02 01:00:02.999000Z" and rows[1][2] == "s1"
    empty = b"".join(series.csv_chunks(path, channels=None, start=T0 + 3.2, end=T0 + 3.4)).decode()
    assert empty.strip() == '"timestamp","seq","session","P1","P5"'


def test_routes_answer_series_csv_and_parquet(client: TestClient, data_dir: Path) -> None:
    name = _recording(data_dir).name
    answer = client.get(f"/api/parquet_files/{name}/series", params={"channels": "P5", "points": 50})
    assert answer.status_code == 200 and answer.json()["n_source"] == 9000
    assert len(answer.json()["min"]["P5"]) == 50
    run = client.get(f"/api/runs/{RUN_ID}/series", params={"points": 10})
    assert run.status_code == 200 and run.json()["n_source"] == 2000
    text = client.get(f"/api/runs/{RUN_ID}/csv", params={"channels": "P1", "end": T0 + 0.0095})
    assert text.headers["content-type"].startswith("text/csv")
    assert f'filename="{RUN_ID}-samples.csv"' in text.headers["content-disposition"]
    assert len(text.text.strip().splitlines()) == 1 + 10
    whole = client.get(f"/api/parquet_files/{name}/download")
    assert pq.read_table(io.BytesIO(whole.content)).num_rows == 9000


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/api/parquet_files/..%2F..%2Fetc%2Fpasswd/series", 404, "not found"),
        ("/api/parquet_files/sensor_log_20990101_000000_0.parquet/csv", 404, "not found"),
        (f"/api/runs/{RUN_ID}-nothing/series", 404, "not found"),
        ("/api/runs/..%2F..%2Fetc/csv", 404, "not found"),
        ("/api/runs/.hidden/csv", 404, "not a run id"),
        ("/api/parquet_files/{name}/series?channels=P5,NOPE", 422, "1 unknown channels"),
        ("/api/parquet_files/{name}/csv?channels=<script>", 422, "1 unknown channels"),
        ("/api/parquet_files/{name}/series?start=nan", 422, "finite number"),
        ("/api/parquet_files/{name}/series?points=1", 422, "greater than or equal to 2"),
        ("/api/parquet_files/{name}/series?start=2&end=1", 422, "end is before start"),
        ("/api/parquet_files/{name}/series?points=5000", 422, "cells per answer"),
    ],
)
def test_bad_requests_are_one_line_never_the_input(
    client: TestClient, data_dir: Path, path: str, status: int, words: str
) -> None:
    answer = client.get(path.replace("{name}", _recording(data_dir).name))
    assert answer.status_code == status, answer.text[:300]
    detail = answer.json()["detail"]
    assert (
        words.lower() in detail.lower()
        and "<script>" not in detail
        and "NOPE" not in detail
        and "\n" not in detail
    )


def test_events_filter_by_kind_and_person(client: TestClient) -> None:
    bus: Bus = client.app.state.gateway.bus  # type: ignore[attr-defined]
    for event in (
        {"ts": 1.0, "kind": "command", "who": "alice", "command": "arm"},
        {"ts": 2.0, "kind": "state", "service": "actuation", "old": "idle", "new": "armed"},
        {"ts": 3.0, "kind": "command", "who": "bob", "command": "valves"},
        {"ts": 4.0, "kind": ["odd"], "who": {"not": "text"}},
    ):
        bus._events.append(event)  # what the bus keeps of rcs/events, without a broker
    kinds = client.get("/api/events", params={"kind": "command"}).json()["events"]
    assert [e["who"] for e in kinds] == ["bob", "alice"]
    alice = client.get("/api/events", params={"who": "alice"}).json()["events"]
    assert [e["command"] for e in alice] == ["arm"]
    assert (
        client.get("/api/events", params={"kind": "command", "who": "bob", "limit": 1}).json()["events"][0][
            "ts"
        ]
        == 3.0
    )
    assert len(client.get("/api/events").json()["events"]) == 4
