"""The audit trail on disk: every event of `rcs/events` as one JSON line, in daily files.

Files are `<data_dir>/events_<yyyymmdd>.jsonl`, named by the UTC day of the event's `ts` when that is
a sane UNIX time (a finite number from 2000-01-01 up to a day past the receive time), else by the
receive time. They are only ever appended to, one JSON object per line, and `flush()` returns once
the lines are on disk (fsync). A line torn by a crash (or by a failed write) has no newline: the
writer cuts it off the next time it opens that file, and `read_events` skips it meanwhile.

An event is kept field for field. MessagePack values that JSON lacks are mapped thus:

| MessagePack / Python              | JSON                                                      |
|-----------------------------------|-----------------------------------------------------------|
| bin (bytes)                       | `{"$bytes": "<base64, standard alphabet, padded>"}`       |
| float NaN, +inf, -inf             | the strings `"NaN"`, `"Infinity"`, `"-Infinity"`          |
| ext type                          | `{"$ext": <type code>, "$bytes": "<base64 of the data>"}` |
| timestamp ext                     | `{"$timestamp": [<seconds>, <nanoseconds>]}`              |
| map key that is bin               | `"$bytes:<base64>"`                                       |
| map key of another non-str type   | `str(key)`                                                |
| anything else (in-process callers)| `{"$repr": "<repr(value)>"}`                              |

Other values (str, int, finite float, bool, nil, arrays, maps) map as JSON does. Lines are ASCII
(`\\uXXXX` escapes), so nothing but `\\n` ever ends a line.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack

log = logging.getLogger(__name__)

DEFAULT_MAX_PENDING = 100_000
_EARLIEST_TS = 946_684_800.0  # 2000-01-01T00:00:00Z
_LATEST_AHEAD_S = 86_400.0
_TAIL_CHUNK = 4096


class EventLog:
    """Appends events to daily JSON Lines files; thread-safe (`append` never touches the disk)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self._dir = data_dir
        self._clock = clock
        self._max_pending = max_pending
        self._lock = threading.Lock()  # guards _pending and _dropped
        self._pending: deque[tuple[str, bytes]] = deque()  # (day, line with its newline)
        self._dropped = 0
        self._io_lock = threading.Lock()  # guards the open file
        self._fd: int | None = None
        self._fd_day: str | None = None

    def path_for(self, day: str) -> Path:
        """The file of a UTC day given as `yyyymmdd`."""
        return events_path(self._dir, day)

    def append(self, event: dict[str, Any]) -> None:
        """Hold `event` for the next `flush`; beyond `max_pending` held, the oldest is dropped."""
        day = _day(event.get("ts"), self._clock())
        with self._lock:
            self._pending.append((day, event_line(event)))
            self._trim()

    def flush(self) -> None:
        """Write every held event and fsync. On OSError the unwritten events stay held and it propagates."""
        with self._io_lock:
            with self._lock:
                batch = list(self._pending)
                self._pending.clear()
            done = 0
            try:
                while done < len(batch):
                    day = batch[done][0]
                    end = done
                    while end < len(batch) and batch[end][0] == day:
                        end += 1
                    self._write(day, b"".join(line for _, line in batch[done:end]))
                    done = end
            except OSError:
                with self._lock:
                    self._pending.extendleft(reversed(batch[done:]))
                    self._trim()
                raise
            if self._fd_day is not None and self._fd_day != _day(None, self._clock()):
                self._close()  # a new day began: yesterday's file is complete

    def close(self) -> None:
        """Flush, then close the open file (also when the flush fails)."""
        try:
            self.flush()
        finally:
            with self._io_lock:
                self._close()

    @property
    def pending(self) -> int:
        """Events held, not yet on disk."""
        with self._lock:
            return len(self._pending)

    @property
    def dropped(self) -> int:
        """Events dropped because more than `max_pending` were held (the disk refused them too long)."""
        with self._lock:
            return self._dropped

    def _trim(self) -> None:
        while len(self._pending) > self._max_pending:
            self._pending.popleft()
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.error("event log: %d events dropped, the disk refused them too long", self._dropped)

    def _write(self, day: str, data: bytes) -> None:
        fd = self._open(day)
        end = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):  # if this fails too, _open cuts the torn line later
                os.ftruncate(fd, end)  # the events are retried: leave no part of them behind
            self._close()
            raise

    def _open(self, day: str) -> int:
        if self._fd is not None and self._fd_day == day:
            return self._fd
        self._close()
        self._dir.mkdir(parents=True, exist_ok=True)
        path = self.path_for(day)
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            cut_torn_line(fd, path)
            if created:  # make the new directory entry durable too
                dir_fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError:
            os.close(fd)
            raise
        self._fd, self._fd_day = fd, day
        return fd

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd, self._fd_day = self._fd, None, None
            os.close(fd)


def event_line(event: dict[str, Any]) -> bytes:
    """One event as a line of an events file (the table in the module docstring), with its newline."""
    line = json.dumps(_json_value(event), ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return line.encode("ascii") + b"\n"


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    """The events of one file, in order; a torn last line (no newline) is skipped.

    Raises ValueError for a complete line that is not a JSON object: the writer never leaves one.
    """
    with path.open("rb") as file:
        for number, line in enumerate(file, 1):
            if not line.endswith(b"\n"):
                return
            try:
                event = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc}") from exc
            if not isinstance(event, dict):
                raise ValueError(f"{path}:{number}: not a JSON object")
            yield event


def events_path(data_dir: Path, day: str) -> Path:
    """The events file of a UTC day given as `yyyymmdd`."""
    return data_dir / f"events_{day}.jsonl"


def recent_lines(data_dir: Path, since: float, now: float, *, max_bytes: int) -> list[tuple[float, bytes]]:
    """`(ts, line)` of the events files' events with `since <= ts`, in file order, read from at most the
    last `max_bytes` of the files of the UTC days of `since` and `now`: what a previous logger wrote
    (a line that is not an event with a numeric ts is skipped)."""
    found: list[tuple[float, bytes]] = []
    for day in dict.fromkeys((_day(since, now), _day(now, now))):
        try:
            with events_path(data_dir, day).open("rb") as file:
                size = file.seek(0, os.SEEK_END)
                file.seek(max(0, size - max_bytes))
                lines = file.read().split(b"\n")
        except OSError:  # none that day (or unreadable: the run then has only what this logger sees)
            continue
        if size > max_bytes:
            lines = lines[1:]  # begins inside a line
        for line in lines[:-1]:  # the last is empty, or torn
            try:
                event = json.loads(line)
            except ValueError:
                continue
            ts = event.get("ts") if isinstance(event, dict) else None
            if isinstance(ts, int | float) and not isinstance(ts, bool) and ts >= since:
                found.append((float(ts), line + b"\n"))
    return found


def cut_torn_line(fd: int, path: Path) -> None:
    """Truncate the file after its last newline: what follows was never completely written."""
    size = os.fstat(fd).st_size
    end = size
    keep = 0
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            break
        end = start
    if keep < size:
        log.warning("%s: cutting a torn last line of %d bytes (a crash or failed write)", path, size - keep)
        os.ftruncate(fd, keep)


def _day(ts: Any, now: float) -> str:
    """The UTC day (`yyyymmdd`) of `ts` if it is a sane UNIX time, else of `now`."""
    sane = (
        isinstance(ts, int | float)
        and not isinstance(ts, bool)
        and math.isfinite(ts)
        and _EARLIEST_TS <= ts <= now + _LATEST_AHEAD_S
    )
    return datetime.fromtimestamp(ts if sane else now, UTC).strftime("%Y%m%d")


def _json_value(value: Any) -> Any:
    """`value` as JSON can hold it (the table in the module docstring)."""
    if value is None or isinstance(value, str | int):  # bool is an int
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": _b64(value)}
    if isinstance(value, dict):
        return {_json_key(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, msgpack.ExtType):  # a namedtuple: before the tuples
        return {"$ext": value.code, "$bytes": _b64(value.data)}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, msgpack.Timestamp):
        return {"$timestamp": [value.seconds, value.nanoseconds]}
    return {"$repr": repr(value)}


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bytes):
        return f"$bytes:{_b64(key)}"
    return str(key)


def _b64(data: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(data).decode("ascii")
