"""A run's samples.parquet (services/logger/run_samples.py): written a row group at a time, readable
as a recording, and cut at the run's end even after later rows were written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from services.analyze.load import open_recording
from services.common.recording import read_intervals
from services.logger.run_samples import RunSamples

CHANNELS = ("P1", "THRUST")
RATE = 1000.0


def _append(samples: RunSamples, session: str, first_seq: int, n: int, t0: float) -> None:
    t = t0 + np.arange(n) / RATE
    data = np.column_stack([np.arange(n), np.arange(n) * 2]).astype(np.float32)
    samples.append(session, first_seq, t, data)


def test_rows_past_the_end_are_cut_from_the_file_already_written(tmp_path: Path) -> None:
    path = tmp_path / "samples.parquet"
    samples = RunSamples(path, CHANNELS, row_group_rows=1000, compression_level=1)
    _append(samples, "s1", 0, 2500, 1000.0)  # two row groups written, 500 rows held
    _append(samples, "s1", 2600, 1000, 1002.6)  # after a gap of 100 samples
    samples.cut_after(1003.0995)  # seq 2600..3099 stay
    assert (samples.rows, samples.first, samples.last) == (3000, ("s1", 0), ("s1", 3099))
    samples.close({"rcs.run": json.dumps({"id": "x"})})

    table = pq.read_table(path)
    seq = table.column("seq").to_numpy()
    assert len(seq) == 3000 and seq[0] == 0 and seq[-1] == 3099
    assert read_intervals(path) == {"s1": [(0, 2499), (2600, 3099)]}
    assert json.loads(pq.read_metadata(path).metadata[b"rcs.run"]) == {"id": "x"}
    assert open_recording(path).channels == CHANNELS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.parquet"]


def test_nothing_is_rewritten_when_no_row_is_past_the_end(tmp_path: Path) -> None:
    path = tmp_path / "samples.parquet"
    samples = RunSamples(path, CHANNELS, row_group_rows=1000, compression_level=1)
    _append(samples, "s1", 10, 1500, 1000.0)
    samples.cut_after(2000.0)
    samples.close({})
    assert pq.read_table(path).num_rows == 1500 and samples.last_t == 1000.0 + 1499 / RATE
