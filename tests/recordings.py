"""What the logger wrote, read with pyarrow directly rather than with the project's own readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq


def recorded_seqs(data_dir: Path, session: str) -> npt.NDArray[np.uint64]:
    """Every `seq` of `session` in the Parquet files of `data_dir`, sorted (duplicates kept)."""
    files = sorted(data_dir.glob("sensor_log_*.parquet"))
    assert files, "no Parquet files were written"
    seqs = []
    for path in files:
        table = pq.read_table(path, columns=["seq", "session"])  # every file opens
        mask = np.asarray(table.column("session").to_pylist()) == session
        seqs.append(table.column("seq").to_numpy()[mask])
    return np.sort(np.concatenate(seqs))
