"""Legacy text protocol: the documented line, any float syntax, any chunking, garbage."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.acquisition.text_protocol import (
    MAX_LINE_BYTES,
    MAX_SPREAD_S,
    EngineeringBlock,
    TextAck,
    TextDecoder,
    TextMessage,
    encode_go_safe,
    encode_valves,
)
from services.common.settings import load_settings

FIXTURE_LINE = (Path(__file__).parent / "fixtures" / "stm32_text_line.txt").read_bytes()
DOCUMENTED = {
    "P1": 12.5, "P2": 15.3, "P3": 18.2, "P4": 20.1, "P5": 22.5, "P6": 25.0, "P7": 28.3, "P8": 30.1,
    "T1": 25.0, "T2": 27.5, "T3": 30.0, "T4": 32.5, "T5": 35.0, "T6": 37.5, "Tbogaz1": 1200.5,
    "THRUST": 1250.5, "ISP": 285.3, "Tbogaz2": 1300.2, "D1": 15.5, "D2": 12.3, "IMPULSE": 50000.0,
    "VELOCITY": 2500.0,
}  # fmt: skip
SETTINGS = load_settings()
NAMES = SETTINGS.channel_names
FORMATS: tuple[Callable[[float], str], ...] = (
    repr,
    "{:e}".format,
    "{:g}".format,
    "{:.3f}".format,
    "{:+.12g}".format,
    "{:E}".format,
)


def sample_line(values: list[str], names: tuple[str, ...] = NAMES) -> bytes:
    return (" | ".join(f"{n}: {v}" for n, v in zip(names, values, strict=True)) + "\n").encode()


def blocks(messages: list[TextMessage]) -> list[EngineeringBlock]:
    return [m for m in messages if isinstance(m, EngineeringBlock)]


def all_values(messages: list[TextMessage]) -> np.ndarray:
    found = [b.values for b in blocks(messages)]
    return np.concatenate(found) if found else np.empty((0, len(NAMES)), np.float32)


def events(messages: list[TextMessage]) -> list[tuple[object, ...]]:
    """Acknowledgements with the number of samples before each: the order, independent of blocks."""
    out: list[tuple[object, ...]] = []
    seen = 0
    for m in messages:
        if isinstance(m, EngineeringBlock):
            seen += len(m.values)
        else:
            out.append((m.ok, m.text, seen))
    return out


def test_the_documented_fixture_line_parses() -> None:
    assert FIXTURE_LINE.count(b"\n") == 1 and FIXTURE_LINE.endswith(b"\n")
    assert tuple(DOCUMENTED) == NAMES
    decoder = TextDecoder(SETTINGS)
    (block,) = decoder.feed(FIXTURE_LINE, 1000.0)
    assert isinstance(block, EngineeringBlock)
    assert block.values.shape == (1, 22) and block.values.dtype == np.float32
    assert dict(zip(NAMES, block.values[0].tolist(), strict=True)) == {
        k: float(np.float32(v)) for k, v in DOCUMENTED.items()
    }
    assert block.t.tolist() == [1000.0]
    assert decoder.stats.samples == 1 and decoder.stats.bad_lines == 0


def test_crlf_surrounding_spaces_and_split_lines_are_tolerated() -> None:
    line = b"  " + FIXTURE_LINE.rstrip(b"\n").replace(b" | ", b"  |\t") + b"  \r\n"
    decoder = TextDecoder(SETTINGS)
    assert decoder.feed(line[:100], 1.0) == []
    out = decoder.feed(line[100:] + line, 2.0)
    np.testing.assert_array_equal(all_values(out), np.array([list(DOCUMENTED.values())] * 2, np.float32))
    assert decoder.stats.bad_lines == 0


@given(
    st.lists(
        st.lists(st.tuples(st.floats(width=64), st.sampled_from(FORMATS)), min_size=22, max_size=22),
        min_size=1,
        max_size=20,
    )
)
def test_any_float_syntax_round_trips(rows: list[list[tuple[float, Callable[[float], str]]]]) -> None:
    texts = [[fmt(x) for x, fmt in row] for row in rows]
    with np.errstate(over="ignore"):
        expected = np.array([[float(t) for t in row] for row in texts]).astype(np.float32)
    decoder = TextDecoder(SETTINGS)
    out = decoder.feed(b"".join(sample_line(row) for row in texts), 5.0)
    np.testing.assert_array_equal(all_values(out), expected)
    assert decoder.stats.bad_lines == 0


def mixed_stream(n: int) -> bytes:
    rng = np.random.default_rng(n)
    lines: list[bytes] = []
    for i in range(n):
        lines.append(sample_line([repr(float(v)) for v in rng.normal(100, 50, len(NAMES))]))
        if i % 7 == 3:
            lines.append(b"ACK: Valves:010000000\r\n" if i % 2 else b"NACK: bad pattern\n")
        if i % 11 == 5:
            lines += [b"INFO: armed\n", b"\n", b"P1: 1 | P2: oops\n", b"\x00\xff garbage\n"]
    return b"".join(lines)


STREAM = mixed_stream(60)


@given(st.lists(st.integers(0, len(STREAM)), max_size=30))
def test_chunk_boundaries_do_not_matter(cuts: list[int]) -> None:
    whole = TextDecoder(SETTINGS)
    reference = whole.feed(STREAM, 1.0)
    chunked = TextDecoder(SETTINGS)
    bounds = [0, *sorted(cuts), len(STREAM)]
    out: list[TextMessage] = []
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        out += chunked.feed(STREAM[a:b], 2.0 + i)
    np.testing.assert_array_equal(all_values(out), all_values(reference))
    assert events(out) == events(reference)
    assert chunked.stats == whole.stats


def test_garbage_is_counted_and_acks_and_info_are_recognised() -> None:
    decoder = TextDecoder(SETTINGS)
    out = decoder.feed(STREAM, 1.0)
    stats = decoder.stats
    assert stats.samples == 60 and len(all_values(out)) == 60
    assert stats.bad_lines == 2 * 5 and stats.info_lines == 2 * 5  # INFO and blank lines
    acks = [m for m in out if isinstance(m, TextAck)]
    assert stats.acks == len(acks) == 9
    assert TextAck(ok=True, text="Valves:010000000") in acks
    assert TextAck(ok=False, text="bad pattern") in acks
    assert events(out)[0] == (True, "Valves:010000000", 4)


def test_wrong_channel_names_or_count_are_bad_lines() -> None:
    decoder = TextDecoder(SETTINGS)
    values = ["1"] * len(NAMES)
    renamed = (*NAMES[:-1], "SPEED")
    out = decoder.feed(sample_line(values, renamed) + sample_line(values[:-1], NAMES[:-1]), 1.0)
    assert out == [] and decoder.stats.bad_lines == 2


def test_an_overlong_line_is_dropped_and_counted() -> None:
    decoder = TextDecoder(SETTINGS)
    assert decoder.feed(b"x" * (MAX_LINE_BYTES + 1), 1.0) == []
    assert decoder.feed(b"more of the same line\n" + FIXTURE_LINE, 2.0) != []
    assert decoder.stats.overlong_lines == 1 and decoder.stats.bad_lines == 1
    assert decoder.stats.samples == 1


def test_timestamps_spread_evenly_ending_at_receive_time() -> None:
    decoder = TextDecoder(SETTINGS)
    decoder.feed(FIXTURE_LINE, 100.0)
    (block,) = blocks(decoder.feed(FIXTURE_LINE * 4, 100.02))
    np.testing.assert_allclose(block.t, [100.005, 100.01, 100.015, 100.02])
    (block,) = blocks(decoder.feed(FIXTURE_LINE * 2, 500.0))  # after a silence: spread at most MAX_SPREAD_S
    np.testing.assert_allclose(block.t, [500.0 - MAX_SPREAD_S / 2, 500.0])


def test_valve_commands() -> None:
    n = len(SETTINGS.valves)
    assert n == 9
    assert encode_valves(0b10, n) == b"Valves:010000000\n"  # bit 1 = GOX1
    assert encode_valves(1 << 8 | 1, n) == b"Valves:100000001\n"
    assert encode_go_safe(n) == b"Valves:000000000\n"
    with pytest.raises(ValueError):
        encode_valves(1 << n, n)
