"""The telemetry contract's codec: round trips, and clear errors for anything malformed."""

from __future__ import annotations

import contextlib

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from services.common.codec import WireFormatError
from services.common.telemetry import TelemetryBatch, decode_batch, encode_batch

channel_names = st.lists(st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,8}", fullmatch=True), min_size=1, max_size=24)


@st.composite
def batches(draw: st.DrawFn) -> TelemetryBatch:
    channels = tuple(draw(channel_names))
    n = draw(st.integers(1, 200))
    return TelemetryBatch(
        session=draw(st.text(min_size=1, max_size=30)),
        seq=draw(st.integers(0, 2**62)),
        rate_hz=draw(st.floats(1, 1e6)),
        channels=channels,
        t=draw(hnp.arrays(np.float64, n, elements=st.floats(0, 4e9))),
        data=draw(hnp.arrays(np.float32, (n, len(channels)), elements=st.floats(width=32, allow_nan=True))),
    )


@given(batches())
def test_round_trip_is_exact(batch: TelemetryBatch) -> None:
    decoded = decode_batch(encode_batch(batch))
    assert (decoded.session, decoded.seq, decoded.n, decoded.channels) == (
        batch.session,
        batch.seq,
        batch.n,
        batch.channels,
    )
    assert decoded.rate_hz == batch.rate_hz
    np.testing.assert_array_equal(decoded.t, batch.t)
    np.testing.assert_array_equal(decoded.data, batch.data)  # NaN == NaN here
    assert decoded.next_seq == batch.seq + batch.n


def test_wire_layout_is_the_documented_one() -> None:
    batch = TelemetryBatch(
        "s", 7, 10_000.0, ("A", "B"), np.array([1.5, 2.5]), np.array([[1, 2], [3, 4]], "f4")
    )
    message = msgpack.unpackb(encode_batch(batch))
    assert set(message) == {"v", "session", "seq", "n", "rate_hz", "channels", "t", "data"}
    assert message["v"] == 1 and message["n"] == 2 and message["seq"] == 7
    assert message["t"] == np.array([1.5, 2.5], "<f8").tobytes()
    assert message["data"] == np.array([1, 2, 3, 4], "<f4").tobytes()  # sample-major


def _valid() -> dict[str, object]:
    return {
        "v": 1,
        "session": "s",
        "seq": 0,
        "n": 2,
        "rate_hz": 10.0,
        "channels": ["A"],
        "t": bytes(16),
        "data": bytes(8),
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"v": 2}, "version"),
        ({"seq": -1}, "seq"),
        ({"n": 0}, "n > 0"),
        ({"n": True}, "'n'"),
        ({"channels": []}, "channels"),
        ({"channels": [1]}, "channels"),
        ({"t": bytes(15)}, "'t' has 15 bytes"),
        ({"data": bytes(4)}, "'data' has 4 bytes"),
        ({"session": None}, "session"),
    ],
)
def test_malformed_fields_are_named(change: dict[str, object], message: str) -> None:
    payload = msgpack.packb(_valid() | change)
    with pytest.raises(WireFormatError, match=message):
        decode_batch(payload)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_wire_format_error(payload: bytes) -> None:
    with contextlib.suppress(WireFormatError):
        decode_batch(payload)


def test_not_a_map_is_rejected() -> None:
    with pytest.raises(WireFormatError, match="map"):
        decode_batch(msgpack.packb([1, 2, 3]))
