"""`rcs/telemetry/meta` (retained): what the telemetry batches carry (docs/protocol.md)."""

from __future__ import annotations

import time
from typing import Any

from services.common.settings import Settings
from services.common.telemetry import VERSION as TELEMETRY_VERSION


def telemetry_meta(
    settings: Settings, session: str, rate_hz: float, source: dict[str, Any], tare: dict[str, Any]
) -> dict[str, Any]:
    """The session, its rate and batch period, each channel's name, unit, description and kind
    (measured or derived), where the samples come from (device_state.source) and the tare offsets
    subtracted from them (tare.TareBook.meta)."""
    return {
        "v": TELEMETRY_VERSION,
        "session": session,
        "rate_hz": rate_hz,
        "batch_ms": settings.acquisition.batch_ms,
        "channels": [
            {
                "name": c.name,
                "unit": c.unit,
                "description": c.description,
                "kind": "measured" if c.measured else "derived",
            }
            for c in settings.channels
        ],
        "source": source,
        "tare": tare,
        "ts": time.time(),
    }
