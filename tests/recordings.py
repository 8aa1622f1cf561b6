"""What the logger wrote, read with pyarrow directly rather than with the project's own readers, and
what acquisition's ring buffer holds to compare it with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from services.common import topics
from services.common.rpc import RpcClient


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


def last_recorded_seq(data_dir: Path) -> int:
    """The highest `seq` in `data_dir`'s files: the Parquet files, and the complete record batches of
    the open segments (`.arrows`) a killed logger leaves, as far as they can be read."""
    last = -1
    for path in data_dir.glob("sensor_log_*.parquet"):
        last = max(last, int(pq.read_table(path, columns=["seq"]).column("seq").to_numpy().max()))
    for path in data_dir.glob("sensor_log_*.arrows"):
        try:
            with pa.ipc.open_stream(path.read_bytes()) as segment:
                for batch in segment:
                    if batch.num_rows:
                        last = max(last, int(batch.column("seq").to_numpy().max()))
        except (pa.ArrowInvalid, OSError):
            pass  # a torn last batch: what came before it was counted
    return last


def acquired_seqs(rpc: RpcClient, up_to: int) -> npt.NDArray[np.int64]:
    """Every seq from 0 to `up_to` that acquisition's ring buffer holds (paged history requests)."""
    pages, seq_from = [], 0
    while seq_from <= up_to:
        reply = rpc.call(topics.ACQ_HISTORY, {"seq_from": seq_from, "seq_to": up_to + 1}, timeout=10)
        pages.append(np.frombuffer(reply["seq"], "<i8"))
        seq_from = int(reply["next_seq"])
    return np.concatenate(pages)
