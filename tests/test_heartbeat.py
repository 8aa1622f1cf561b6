"""What counts as an operator heartbeat (services/common/heartbeat.py): a map with a name and a fresh time."""

from __future__ import annotations

import pytest

from services.common.codec import pack
from services.common.heartbeat import BadHeartbeatError, Heartbeat, parse_heartbeat

NOW = 1_800_000_000.0
SKEW = 2.0


def test_a_well_formed_fresh_heartbeat_counts() -> None:
    assert parse_heartbeat(pack({"who": "alice", "ts": NOW - 1.5}), NOW, SKEW) == Heartbeat(
        "alice", NOW - 1.5
    )
    assert parse_heartbeat(pack({"who": "alice", "ts": int(NOW)}), NOW, SKEW).ts == NOW


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"", "undecodable"),
        (b"\xc1", "undecodable"),
        (pack({"ts": NOW}), "who"),
        (pack({"who": "", "ts": NOW}), "who"),
        (pack({"who": "  ", "ts": NOW}), "who"),
        (pack({"who": 7, "ts": NOW}), "who"),
        (pack({"who": "x" * 201, "ts": NOW}), "who"),
        (pack({"who": "alice"}), "ts"),
        (pack({"who": "alice", "ts": True}), "ts"),
        (pack({"who": "alice", "ts": float("nan")}), "ts"),
        (pack({"who": "alice", "ts": "now"}), "ts"),
        (pack({"who": "alice", "ts": NOW - 2.5}), "stale"),
        (pack({"who": "alice", "ts": NOW + 2.5}), "stale"),
        (pack({"who": "alice", "ts": 0}), "stale"),
    ],
)
def test_anything_else_is_no_heartbeat(payload: bytes, kind: str) -> None:
    with pytest.raises(BadHeartbeatError) as refused:
        parse_heartbeat(payload, NOW, SKEW)
    assert refused.value.kind == kind
