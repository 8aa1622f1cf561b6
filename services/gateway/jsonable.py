"""Decoded MessagePack values made JSON-safe, for REST answers and WebSocket messages alike."""

from __future__ import annotations

import base64
import math
from typing import Any


def jsonable(value: Any, *, tag_bytes: bool = False) -> Any:
    """`value` with NaN/±inf as None and bytes as base64: plain text (REST's `/api/events`), or
    `{"$bytes": <base64>}` with `tag_bytes` (the WebSocket's JSON messages, docs/protocol.md)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v, tag_bytes=tag_bytes) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, tag_bytes=tag_bytes) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        text = base64.b64encode(bytes(value)).decode("ascii")
        return {"$bytes": text} if tag_bytes else text
    return value
