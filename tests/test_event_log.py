"""EventLog: odd fields survive, daily files, crash safety under SIGKILL, failed writes kept for retry."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack
import pytest

from services.common.codec import unpack_map
from services.logger.events import EventLog, event_line, read_events, recent_lines

DAY1 = datetime(2026, 3, 1, 12, tzinfo=UTC).timestamp()
DAY2 = datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def open_files(directory: Path) -> set[str]:
    """Names of the files under `directory` this process holds open."""
    names = set()
    for fd in os.listdir("/proc/self/fd"):
        with_target = Path("/proc/self/fd", fd)
        try:
            target = Path(os.readlink(with_target))
        except OSError:
            continue
        if target.parent == directory:
            names.add(target.name)
    return names


def test_odd_fields_round_trip(tmp_path: Path) -> None:
    payload = msgpack.packb(
        {
            "ts": DAY1,
            "service": "actuation",
            "kind": "command",
            "blob": b"\x00\xff\n",
            "values": [1, -2.5, None, True, "Türkçe\u2028ş", b"", 2**64 - 1],
            "nested": {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "deeper": {"x": [[]]}},
            b"raw key": 1,
            "ext": msgpack.ExtType(5, b"\x01\x02"),
            "when": msgpack.Timestamp(1, 500),
        },
        use_bin_type=True,
        datetime=False,
    )
    event = unpack_map(payload)  # as the logger gets it from the bus
    log = EventLog(tmp_path, clock=Clock(DAY1))
    log.append(event)
    log.append({"ts": DAY1, "odd": {1, 2}, "tuple": (1, 2)})  # in-process values
    log.flush()
    events = list(read_events(tmp_path / "events_20260301.jsonl"))
    assert events == [
        {
            "ts": DAY1,
            "service": "actuation",
            "kind": "command",
            "blob": {"$bytes": "AP8K"},
            "values": [1, -2.5, None, True, "Türkçe\u2028ş", {"$bytes": ""}, 2**64 - 1],
            "nested": {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity", "deeper": {"x": [[]]}},
            "$bytes:cmF3IGtleQ==": 1,
            "ext": {"$ext": 5, "$bytes": "AQI="},
            "when": {"$timestamp": [1, 500]},
        },
        {"ts": DAY1, "odd": {"$repr": "{1, 2}"}, "tuple": [1, 2]},
    ]
    assert (tmp_path / "events_20260301.jsonl").read_bytes().isascii()


def test_daily_files_by_event_time_else_receive_time(tmp_path: Path) -> None:
    clock = Clock(DAY1)
    log = EventLog(tmp_path, clock=clock)
    log.append({"ts": DAY1, "n": 1})
    log.append({"ts": DAY2, "n": 2})  # another day's event, e.g. a clock a little ahead
    log.append({"ts": DAY1, "n": 3})
    for n, insane in enumerate([None, "noon", math.nan, math.inf, 0, 1e20, True, DAY1 + 3 * 86_400], 4):
        log.append({"ts": insane, "n": n})  # filed by the receive time: day 1
    log.append({"n": 12})
    log.flush()
    assert open_files(tmp_path) == {"events_20260301.jsonl"}  # today's file stays open
    clock.now = DAY2
    log.append({"ts": DAY1 + 60, "n": 13})  # late, from yesterday
    log.append({"n": 14})
    log.flush()
    assert open_files(tmp_path) == {"events_20260302.jsonl"}  # yesterday's was closed
    day1 = list(read_events(tmp_path / "events_20260301.jsonl"))
    day2 = list(read_events(tmp_path / "events_20260302.jsonl"))
    assert [e["n"] for e in day1] == [1, 3, *range(4, 13), 13]
    assert [e["n"] for e in day2] == [2, 14]
    assert [e["ts"] for e in day1[2:5]] == [None, "noon", "NaN"]  # kept as they came
    clock.now = DAY2 + 86_400
    log.flush()  # nothing held: the day changed, so the open file is closed all the same
    assert open_files(tmp_path) == set()
    log.close()


CHILD = """
import sys
from pathlib import Path
from services.logger.events import EventLog

log = EventLog(Path(sys.argv[1]))
i = 0
while True:
    for _ in range(1 + i % 7):
        log.append({"ts": 1.7e9, "i": i, "pad": "x" * (i % 3000)})
        i += 1
    log.flush()
    print(i, flush=True)  # every event below i is on disk
"""


def test_sigkill_leaves_only_whole_flushed_lines(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert child.stdout is not None
    acknowledged = 0
    while acknowledged < 3000:
        line = child.stdout.readline()
        assert line, f"the child exited with {child.wait()}"
        acknowledged = int(line)
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    path = tmp_path / "events_20231114.jsonl"
    found = [event["i"] for event in read_events(path)]  # raises if a complete line does not parse
    assert found == list(range(len(found)))  # in order, none twice, none missing
    assert len(found) >= acknowledged
    # a new writer continues the file cleanly, whatever the kill left at its end
    log = EventLog(tmp_path)
    log.append({"ts": 1.7e9, "i": len(found)})
    log.close()
    again = [event["i"] for event in read_events(path)]
    assert again == list(range(len(found) + 1))
    assert path.read_bytes().endswith(b"\n")


def test_a_torn_last_line_is_skipped_then_cut(tmp_path: Path) -> None:
    path = tmp_path / "events_20260301.jsonl"
    path.write_bytes(b'{"i":0}\n{"i":1}\n{"i":2,"pad":"xx')
    assert [e["i"] for e in read_events(path)] == [0, 1]
    log = EventLog(tmp_path, clock=Clock(DAY1))
    log.append({"ts": DAY1, "i": 2})
    log.close()
    assert path.read_bytes() == b'{"i":0}\n{"i":1}\n{"ts":' + repr(DAY1).encode() + b',"i":2}\n'


def test_a_corrupt_complete_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "events_20260301.jsonl"
    path.write_bytes(b'{"i":0}\n{"i":\n{"i":2}\n')
    with pytest.raises(ValueError, match=r"events_20260301.jsonl:2: not JSON"):
        list(read_events(path))
    path.write_bytes(b"[1]\n")
    with pytest.raises(ValueError, match="not a JSON object"):
        list(read_events(path))


def test_a_failed_flush_keeps_the_events_for_the_next(tmp_path: Path) -> None:
    data_dir = tmp_path / "events"
    data_dir.write_text("a file where the directory should be")
    log = EventLog(data_dir, clock=Clock(DAY1), max_pending=3)
    log.append({"ts": DAY1, "n": 1})
    log.append({"ts": DAY1, "n": 2})
    with pytest.raises(OSError):
        log.flush()
    assert (log.pending, log.dropped) == (2, 0)
    log.append({"ts": DAY1, "n": 3})
    log.append({"ts": DAY1, "n": 4})  # beyond max_pending: the oldest goes
    assert (log.pending, log.dropped) == (3, 1)
    data_dir.unlink()
    log.flush()
    assert [e["n"] for e in read_events(data_dir / "events_20260301.jsonl")] == [2, 3, 4]
    assert (log.pending, log.dropped) == (0, 1)


def test_a_flush_failing_on_the_second_day_writes_the_first_once(tmp_path: Path) -> None:
    log = EventLog(tmp_path, clock=Clock(DAY2))
    (tmp_path / "events_20260302.jsonl").mkdir()  # day 2's file cannot be opened
    events: list[dict[str, Any]] = [{"ts": DAY1, "n": 1}, {"ts": DAY2, "n": 2}, {"ts": DAY2, "n": 3}]
    for event in events:
        log.append(event)
    with pytest.raises(IsADirectoryError):
        log.flush()
    assert log.pending == 2
    (tmp_path / "events_20260302.jsonl").rmdir()
    log.close()
    assert list(read_events(tmp_path / "events_20260301.jsonl")) == events[:1]
    assert list(read_events(tmp_path / "events_20260302.jsonl")) == events[1:]


def test_rejects_a_useless_bound(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_pending"):
        EventLog(tmp_path, max_pending=0)


def test_recent_lines_reads_the_tail_of_the_days_files_since_a_time(tmp_path: Path) -> None:
    """What a run recorder starting up takes from the files an earlier logger wrote."""
    log = EventLog(tmp_path, clock=Clock(DAY2))
    for ts in (DAY1 - 10, DAY1, DAY2 - 1, DAY2):
        log.append({"ts": ts, "kind": "x"})
    log.close()
    late = tmp_path / "events_20260302.jsonl"
    with late.open("ab") as file:  # odd lines, then a torn one: skipped
        file.write(b'[1]\n{"ts":"soon"}\nnot json\n{"ts":' + repr(DAY2 + 1).encode())
    lines = recent_lines(tmp_path, DAY1, DAY2 + 5, max_bytes=1 << 20)
    assert [ts for ts, _ in lines] == [DAY1, DAY2 - 1, DAY2]
    assert [line for _, line in lines] == [
        event_line({"ts": ts, "kind": "x"}) for ts in (DAY1, DAY2 - 1, DAY2)
    ]
    # at most max_bytes of each file: the line cut at its start is left out
    tail = recent_lines(tmp_path, DAY1 - 60, DAY1, max_bytes=len(event_line({"ts": DAY1, "kind": "x"})) + 3)
    assert [ts for ts, _ in tail] == [DAY1]
    assert recent_lines(tmp_path / "none", DAY1, DAY2, max_bytes=1 << 20) == []
