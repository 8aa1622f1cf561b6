"""MessagePack maps on the bus: packing, strict unpacking, and MQTT v5 publish properties."""

from __future__ import annotations

from typing import Any

import msgpack
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


class WireFormatError(ValueError):
    """A payload that is not a valid message of the contract; the text says what is wrong."""


def pack(message: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


def unpack_map(payload: bytes) -> dict[str, Any]:
    """Decode a MessagePack map, turning every failure into WireFormatError."""
    try:
        message = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise WireFormatError(f"not MessagePack: {exc}") from exc
    if not isinstance(message, dict):
        raise WireFormatError(f"expected a MessagePack map, got {type(message).__name__}")
    return message


def publish_properties(**values: Any) -> Properties:
    """MQTT v5 PUBLISH properties, e.g. `publish_properties(MessageExpiryInterval=2)`."""
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho leaves it unannotated
    for name, value in values.items():
        setattr(properties, name, value)
    return properties
