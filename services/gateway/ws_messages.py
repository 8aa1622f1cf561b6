"""The WebSocket's wire: client messages decoded (JSON text or MessagePack binary) and answers sent
in the client's own kind (text for text, binary for binary)."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import WebSocket

from services.common.codec import WireFormatError, unpack_map
from services.gateway.hub import encode_json, encode_msgpack


class BadMessageError(ValueError):
    """A client message that is not understood; the text goes back in an `error`."""


def decode_message(raw: str | bytes) -> dict[str, Any]:
    """A client message (JSON text or MessagePack binary) as a map with a string `type`."""
    if isinstance(raw, str):
        try:
            message = json.loads(raw)
        except ValueError as exc:
            raise BadMessageError(f"not JSON: {exc}") from exc
    else:
        try:
            message = unpack_map(raw)
        except WireFormatError as exc:
            raise BadMessageError(str(exc)) from exc
    if not isinstance(message, dict):
        raise BadMessageError(f"expected a map with a 'type', got {type(message).__name__}")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise BadMessageError("missing 'type'")
    return message


def number(message: dict[str, Any], key: str) -> float:
    """`message[key]` as a finite number (booleans are none)."""
    value = message.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadMessageError(f"'{key}' must be a finite number")
    return float(value)


def encode_like(message: dict[str, Any], like: str | bytes) -> str | bytes:
    """`message` as MessagePack if `like` (the client's message) was binary, else as JSON text."""
    return encode_msgpack(message) if isinstance(like, bytes) else encode_json(message)


async def receive(websocket: WebSocket) -> str | bytes | None:
    """The next data message, None when the client went away."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        return None
    text = message.get("text")
    if text is not None:
        return str(text)
    return bytes(message.get("bytes") or b"")


async def send(websocket: WebSocket, frame: str | bytes) -> None:
    """One frame, text or binary as it is."""
    if isinstance(frame, bytes):
        await websocket.send_bytes(frame)
    else:
        await websocket.send_text(frame)
