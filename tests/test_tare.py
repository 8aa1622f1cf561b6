"""Tare in acquisition: the offsets the sample path subtracts (and the untared values recovered from a
ring buffer whatever tares happened in the window), the request's checks, and the file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from services.acquisition.binary_protocol import RawBlock
from services.acquisition.ring_buffer import RingBuffer
from services.acquisition.samples import SamplePath
from services.acquisition.tare import Offsets, TareBook
from services.acquisition.tare_file import TareEntry, TareFileError, load, save
from services.common.rpc import RpcError
from services.common.settings import Settings, load_settings

RATE_HZ = 1000.0


@pytest.fixture
def stand(tmp_path: Path) -> Settings:
    return load_settings().model_copy(update={"data_dir": tmp_path})


def raw_block(settings: Settings, counter: int, n: int, counts: int = 2048) -> RawBlock:
    m = len(settings.measured_channels)
    return RawBlock(
        counter=counter,
        t_us=int(counter * 1e6 / RATE_HZ),
        rate_hz=RATE_HZ,
        raw=np.full((n, m), counts, dtype=np.uint16),
    )


def fill(path: SamplePath, settings: Settings, start: int, blocks: int, n: int = 100) -> int:
    for i in range(blocks):
        assert path.append(raw_block(settings, start + i * n, n))
    return start + blocks * n


def test_offsets_apply_from_the_next_block_and_the_untared_values_are_recovered(stand: Settings) -> None:
    ring = RingBuffer(10_000, len(stand.channels))
    path = SamplePath(stand, ring)
    p7 = stand.channel_names.index("P7")
    isp_inputs = stand.channel_names.index("THRUST")
    counter = fill(path, stand, 0, 5)
    raw_p7 = float(ring.last_seconds(1.0, 10).data[-1, p7])  # 2048 counts: 50.01 bar
    offsets = np.zeros(len(stand.channels))
    offsets[p7], offsets[isp_inputs] = 40.0, 10.0
    path.offsets.set(offsets)
    counter = fill(path, stand, counter, 5)
    offsets[p7] = 50.0
    path.offsets.set(offsets)
    fill(path, stand, counter, 5)

    samples = ring.last_seconds(10.0, ring.capacity)
    assert len(samples.seq) == 1500
    published = samples.data[:, p7]
    assert np.allclose(published[:500], raw_p7) and np.allclose(published[500:1000], raw_p7 - 40.0)
    assert np.allclose(published[1000:], raw_p7 - 50.0, atol=1e-4)
    untared = path.offsets.untared(samples, [p7, isp_inputs])
    assert np.allclose(untared[:, 0], raw_p7, atol=1e-4)  # whatever tare each sample had


def test_derived_channels_derive_from_tared_inputs(stand: Settings) -> None:
    ring = RingBuffer(1000, len(stand.channels))
    path = SamplePath(stand, ring)
    impulse, thrust = stand.channel_names.index("IMPULSE"), stand.channel_names.index("THRUST")
    fill(path, stand, 0, 2)
    thrust_before = float(ring.last_seconds(1.0, 1).data[-1, thrust])
    offsets = np.zeros(len(stand.channels))
    offsets[thrust] = thrust_before
    path.offsets.set(offsets)
    end = fill(path, stand, 200, 3)
    samples = ring.last_seconds(1.0, 1000)
    assert abs(float(samples.data[-1, thrust])) < 1e-3
    tail = samples.data[samples.seq >= end - 250, impulse]  # no more thrust: no more impulse
    assert np.ptp(tail) < 1e-3


def book(
    stand: Settings, ring: RingBuffer, offsets: Offsets, path: SamplePath | None = None
) -> tuple[TareBook, list[int]]:
    """A TareBook on `ring`; `path`: the sample path filling it (None: nothing ever received)."""
    changes: list[int] = []
    tare = TareBook(
        stand, ring, offsets, lambda: changes.append(1), lambda: None if path is None else path.appended_at
    )
    tare.load()
    return tare, changes


def test_the_tare_request_zeroes_from_the_ring_and_persists(stand: Settings) -> None:
    ring = RingBuffer(10_000, len(stand.channels))
    path = SamplePath(stand, ring)
    tare, changes = book(stand, ring, path.offsets, path)
    now = time.time()
    start = int(now * RATE_HZ) - 1000  # samples stamped up to now (the device clock is anchored at first)
    fill(path, stand, start, 10)
    request = {"login": "actuation", "who": "alice", "channels": ["P7", "P7"], "seconds": 0.5}
    result = tare.tare(request)
    assert result["channels"] == ["P7"] and changes == [1]
    entry = result["tare"]["P7"]
    assert entry["by"] == "alice" and entry["unit"] == "bar" and entry["seconds"] == 0.5
    assert abs(entry["offset"] - 50.01) < 0.01 and entry["samples"] > 400
    assert json.loads(stand.tare_file.read_text())["channels"]["P7"] == entry
    again, _ = book(stand, RingBuffer(10, len(stand.channels)), Offsets(len(stand.channels)))
    assert again.meta() == tare.meta()  # read back at the next start

    cleared = tare.tare({"login": "actuation", "channels": ["P7"], "clear": True})
    assert cleared["tare"] == {} and cleared["samples"] == 0
    assert json.loads(stand.tare_file.read_text())["channels"] == {}


@pytest.mark.parametrize(
    ("request_", "problem"),
    [
        ({"login": "gateway", "channels": ["P7"]}, "only actuation may tare"),
        ({"login": "actuation", "channels": []}, "non-empty list"),
        ({"login": "actuation", "channels": ["NOPE"]}, "unknown channels"),
        ({"login": "actuation", "channels": ["ISP"]}, "derived on the host"),
        ({"login": "actuation", "channels": ["P7"], "seconds": 0}, "'seconds' must be within"),
        ({"login": "actuation", "channels": ["P7"], "seconds": float("nan")}, "'seconds' must be a number"),
        ({"login": "actuation", "channels": ["P7"], "clear": 1}, "'clear' must be true or false"),
        ({"login": "actuation", "channels": ["P7"]}, "no samples received: is the STM32 connected"),
    ],
)
def test_bad_tare_requests_are_refused(stand: Settings, request_: dict[str, object], problem: str) -> None:
    ring = RingBuffer(1000, len(stand.channels))
    tare, changes = book(stand, ring, Offsets(len(stand.channels)))
    with pytest.raises(RpcError, match=problem):
        tare.tare(dict(request_))
    assert changes == [] and not stand.tare_file.exists()


def test_the_file_round_trips_and_a_bad_one_is_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "tare.json"
    entries = {"THRUST": TareEntry(1.5, "N", 1.0, "alice", 2.0, 20000)}
    save(path, entries)
    assert load(path, frozenset({"THRUST"})) == entries
    assert load(tmp_path / "none.json", frozenset()) == {}
    bad = {
        "{": "not JSON",
        '{"v": 2}': 'expected a map with "v": 1',
        '{"v": 1, "channels": {"ISP": {}}}': "channels.ISP: not a measured channel",
        '{"v": 1, "channels": {"THRUST": {"offset": 1}}}': "channels.THRUST: expected the keys",
    }
    for text, problem in bad.items():
        path.write_text(text)
        with pytest.raises(TareFileError) as error:
            load(path, frozenset({"THRUST"}))
        assert str(error.value).startswith(f"{path}: ") and problem in str(error.value)
        assert "\n" not in str(error.value)


def test_a_bad_file_leaves_every_channel_untared_and_says_so(
    stand: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    stand.tare_file.write_text("garbage")
    offsets = Offsets(len(stand.channels))
    tare, _ = book(stand, RingBuffer(10, len(stand.channels)), offsets)
    assert tare.meta() == {} and tare.load_error is not None
    assert f"tare file ignored, every channel untared: {stand.tare_file}: not JSON" in caplog.text
