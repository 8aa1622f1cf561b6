"""What a tare may name, for REST and WebSocket alike: measured channels of this stand (derived ones
are computed from the tared inputs, docs/safety.md §2.2)."""

from __future__ import annotations

from services.common.settings import Settings

MIN_SECONDS = 0.1  # as acquisition's bounds (services/acquisition/tare.py)
MAX_SECONDS = 30.0
DEFAULT_SECONDS = 2.0
TARE_WAIT_S = 10.0  # actuation asks acquisition, which averages up to 30 s of its ring buffer


def tare_channels_problem(settings: Settings, channels: list[str]) -> str | None:
    """Why `channels` cannot be tared (the names are not repeated: they may be anything), or None."""
    if not channels:
        return "'channels' must name at least one channel"
    measured = {c.name for c in settings.measured_channels}
    unknown = sum(1 for c in channels if c not in settings.channel_names)
    if unknown:
        return f"{unknown} unknown channels; measured channels: {', '.join(sorted(measured))}"
    derived = sorted({c for c in channels if c not in measured})
    if derived:
        return f"{', '.join(derived)} derived on the host: tare the channels they derive from"
    return None
