"""Binary protocol v1 host decoder: chunking, corruption, counter unwrapping, gaps, merging."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from cobs import cobs
from hypothesis import given
from hypothesis import strategies as st

from services.acquisition.binary_protocol import BinaryDecoder, BinaryMessage, RawBlock
from services.common.settings import load_settings
from services.common.stm32_wire import (
    AckResult,
    StatusFrame,
    ValveAckFrame,
    encode_heartbeat,
    encode_samples,
    encode_status,
    encode_valve_ack,
)

SETTINGS = load_settings()
N_CHANNELS = len(SETTINGS.measured_channels)
WRAP = 1 << 32


@dataclass(frozen=True)
class Samples:
    counter: int  # unwrapped; the wire carries it modulo 2**32
    raw: npt.NDArray[np.uint16]

    @property
    def t_us(self) -> int:
        return self.counter * 100


Item = Samples | StatusFrame | ValveAckFrame


def encode(item: Item) -> bytes:
    if isinstance(item, Samples):
        return encode_samples(item.counter % WRAP, item.t_us, item.raw)
    if isinstance(item, StatusFrame):
        return encode_status(item)
    return encode_valve_ack(item)


def status(rate_hz: int, last_cmd: int = 7) -> StatusFrame:
    return StatusFrame(1, rate_hz, N_CHANNELS, 0b10, 0x02, last_cmd, "rcs-test")


def samples(counter: int, n: int, seed: int = 0, n_channels: int = N_CHANNELS) -> Samples:
    raw = np.random.default_rng(seed).integers(0, 4096, (n, n_channels), dtype=np.uint16)
    return Samples(counter, raw)


@st.composite
def streams(draw: st.DrawFn) -> list[Item]:
    """Frames as a device sends them: counters from anywhere (crossing 2**32 at times), gaps now
    and then, STATUS and VALVE_ACK frames in between (each one unique, to tell them apart)."""
    counter = draw(st.one_of(st.integers(WRAP - 300, WRAP - 1), st.integers(0, WRAP - 1)))
    items: list[Item] = []
    for i in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["samples"] * 6 + ["status", "ack"]))
        if kind == "samples":
            if any(isinstance(item, Samples) for item in items):  # the first one is below 2**32
                counter += draw(st.sampled_from([0, 0, 0, 1, 37]))
            n = draw(st.integers(1, 30))
            items.append(samples(counter, n, seed=i))
            counter += n
        elif kind == "status":
            items.append(status(draw(st.sampled_from([10_000, 5_000])), last_cmd=i))
        else:
            items.append(ValveAckFrame(i, draw(st.integers(0, 0x1FF)), AckResult.APPLIED))
    return items


Key = tuple[object, ...]


def normalised(messages: Iterable[BinaryMessage]) -> list[Key]:
    """Comparable form: adjacent contiguous blocks merged (block boundaries depend on chunking)."""
    out: list[BinaryMessage] = []
    for m in messages:
        prev = out[-1] if out else None
        if (
            isinstance(m, RawBlock)
            and isinstance(prev, RawBlock)
            and prev.counter + len(prev.raw) == m.counter
        ):
            out[-1] = RawBlock(prev.counter, prev.t_us, prev.rate_hz, np.concatenate([prev.raw, m.raw]))
        else:
            out.append(m)
    return [
        ("block", m.counter, m.t_us, m.rate_hz, m.raw.shape, m.raw.tobytes())
        if isinstance(m, RawBlock)
        else (m,)
        for m in out
    ]


def expected(items: list[Item]) -> list[Key]:
    rate = SETTINGS.acquisition.rate_hz
    blocks: list[BinaryMessage] = []
    for item in items:
        if isinstance(item, Samples):
            blocks.append(RawBlock(item.counter, item.t_us, rate, item.raw))
        else:
            rate = item.rate_hz if isinstance(item, StatusFrame) else rate
            blocks.append(item)
    return normalised(blocks)


def feed_in_chunks(decoder: BinaryDecoder, stream: bytes, cuts: Iterable[int]) -> list[BinaryMessage]:
    bounds = [0, *sorted(cuts), len(stream)]
    out: list[BinaryMessage] = []
    for a, b in itertools.pairwise(bounds):
        out += decoder.feed(stream[a:b])
    return out


@given(streams(), st.lists(st.integers(0, 20_000), max_size=40))
def test_any_chunking_decodes_identically(items: list[Item], cuts: list[int]) -> None:
    stream = b"".join(encode(i) for i in items)
    decoder = BinaryDecoder(SETTINGS)
    out = feed_in_chunks(decoder, stream, (c % (len(stream) + 1) for c in cuts))
    assert normalised(out) == expected(items)
    stats = decoder.stats
    assert stats.crc_errors == stats.bad_frames == stats.counter_resets == 0
    jumps = [
        b.counter - a.counter - len(a.raw)
        for a, b in itertools.pairwise(i for i in items if isinstance(i, Samples))
    ]
    assert stats.counter_gaps == sum(j > 0 for j in jumps) and stats.lost_samples == sum(jumps)


Corruption = tuple[str, int, int]  # kind, position in the stream, byte or bit


@given(
    streams(),
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete"]), st.integers(0, 1 << 30), st.integers(0, 255)
        ),
        min_size=1,
        max_size=5,
    ),
    st.lists(st.integers(0, 20_000), max_size=10),
)
def test_corruption_costs_only_the_frames_it_touches(
    items: list[Item], corruptions: list[Corruption], cuts: list[int]
) -> None:
    encoded = [encode(i) for i in items]
    ends = list(itertools.accumulate(len(e) for e in encoded))  # one past each frame's delimiter
    stream = bytearray(b"".join(encoded))
    # Left intact: the first frame (the deframer counts no error before its first delimiter) and the
    # first SAMPLES frame (the one that sets the epoch the wire counter is unwrapped against).
    first_samples = next((k for k, item in enumerate(items) if isinstance(item, Samples)), 0)
    first_frame_end = ends[first_samples]
    touched: set[int] = set()
    positions = sorted(
        {
            (first_frame_end + pos % (len(stream) - first_frame_end + 1), kind, value)
            for kind, pos, value in corruptions
        },
        reverse=True,
    )
    for pos, kind, value in positions:  # from the end, so earlier positions stay valid
        if pos >= len(stream):
            continue
        frame = next(k for k, end in enumerate(ends) if pos < end)
        touched.add(frame)
        if kind == "flip":
            stream[pos] ^= 1 << value % 8
        elif kind == "insert":
            stream[pos:pos] = bytes([value])
        else:
            del stream[pos]
        if pos == ends[frame] - 1 and kind != "insert" and frame + 1 < len(items):
            touched.add(frame + 1)  # a damaged delimiter merges the next frame into this one
    stream += b"\x00"  # so that a damaged last delimiter does not leave the last frame pending

    decoder = BinaryDecoder(SETTINGS)
    out = feed_in_chunks(decoder, bytes(stream), (c % (len(stream) + 1) for c in cuts))

    rows: dict[int, bytes] = {}
    others: list[object] = []
    for m in out:
        if isinstance(m, RawBlock):
            rows.update((m.counter + i, m.raw[i].tobytes()) for i in range(len(m.raw)))
        else:
            others.append(m)
    survivors = 0
    for k, item in enumerate(items):
        if isinstance(item, Samples):
            came_out = all(rows.get(item.counter + i) == item.raw[i].tobytes() for i in range(len(item.raw)))
        else:
            came_out = item in others
            if came_out:
                others.remove(item)
        survivors += came_out
        assert came_out or k in touched, f"frame {k} was not touched by the corruption but was lost"
    stats = decoder.stats
    if survivors < len(items):
        assert stats.crc_errors + stats.bad_frames >= 1


def test_the_counter_unwraps_at_2_pow_32() -> None:
    decoder = BinaryDecoder(SETTINGS)
    out = decoder.feed(encode(samples(WRAP - 10, 10)) + encode(samples(WRAP, 5)))
    (block,) = out
    assert isinstance(block, RawBlock)
    assert block.counter == WRAP - 10 and len(block.raw) == 15
    (block,) = decoder.feed(encode(samples(WRAP + 5, 3)))
    assert isinstance(block, RawBlock) and block.counter == WRAP + 5
    assert decoder.stats.counter_gaps == 0


def test_gaps_start_a_new_block_and_count_lost_samples() -> None:
    decoder = BinaryDecoder(SETTINGS)
    starts = [(WRAP - 200, 10), (WRAP - 185, 5), (WRAP - 5, 5), (WRAP + 3, 2)]
    out = decoder.feed(b"".join(encode(samples(c, n)) for c, n in starts))
    assert [(b.counter, len(b.raw)) for b in out if isinstance(b, RawBlock)] == starts
    stats = decoder.stats
    assert stats.counter_gaps == 3 and stats.lost_samples == 5 + 175 + 3


def test_contiguous_frames_merge_into_one_block_per_feed() -> None:
    decoder = BinaryDecoder(SETTINGS)
    frames = [samples(1000 + 20 * i, 20, seed=i) for i in range(50)]
    (block,) = decoder.feed(b"".join(encode(f) for f in frames))
    assert isinstance(block, RawBlock)
    assert block.counter == 1000 and block.t_us == 100_000 and block.raw.dtype == np.uint16
    np.testing.assert_array_equal(block.raw, np.concatenate([f.raw for f in frames]))
    assert decoder.stats.samples == 1000


def test_status_sets_the_rate_and_splits_blocks() -> None:
    decoder = BinaryDecoder(SETTINGS)
    out = decoder.feed(encode(samples(0, 4)) + encode(status(2_000)) + encode(samples(4, 4)))
    assert [type(m) for m in out] == [RawBlock, StatusFrame, RawBlock]
    assert [m.rate_hz for m in out if isinstance(m, RawBlock)] == [SETTINGS.acquisition.rate_hz, 2_000.0]
    assert decoder.stats.counter_gaps == 0


def test_a_device_reset_restarts_the_counter_without_losses() -> None:
    decoder = BinaryDecoder(SETTINGS)
    out = decoder.feed(encode(samples(5_000, 10)) + encode(samples(0, 10)))
    assert [b.counter for b in out if isinstance(b, RawBlock)] == [5_000, 0]
    assert decoder.stats.counter_resets == 1 and decoder.stats.lost_samples == 0


def test_wrong_channel_count_and_host_frames_are_bad_frames() -> None:
    decoder = BinaryDecoder(SETTINGS)
    out = decoder.feed(
        encode(samples(0, 5))
        + encode(samples(5, 5, n_channels=N_CHANNELS - 1))
        + encode_heartbeat(3)  # a host -> device frame
        + cobs.encode(b"\x01junk\x00\x00")
        + b"\x00"  # wrong CRC
        + b"\x02\x01\x00"  # too short to hold a CRC
        + encode(samples(10, 5))
    )
    assert [(b.counter, len(b.raw)) for b in out if isinstance(b, RawBlock)] == [(0, 5), (10, 5)]
    stats = decoder.stats
    assert stats.bad_frames == 3 and stats.crc_errors == 1
    assert stats.counter_gaps == 1 and stats.lost_samples == 5
