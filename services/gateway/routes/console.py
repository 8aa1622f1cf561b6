"""What the operator console needs besides the stand's state: who the token is, the stand's layout
(valves with roles, channels with limits, red-lines, the schematic) and where the recordings go."""

from __future__ import annotations

import shutil

from fastapi import APIRouter

from services.common import topics
from services.gateway.calls import CallFailedError, call_service
from services.gateway.deps import GatewayDep, Viewer
from services.gateway.models import (
    ConsoleChannel,
    ConsoleConfig,
    ConsoleRedline,
    ConsoleValve,
    Storage,
    WhoAmI,
)

router = APIRouter(tags=["console"])
CONFIRMED_ROLES = frozenset({"isolation", "igniter"})  # opening one asks the operator to confirm
SCHEMATIC = "/static/schematic.svg"


@router.get("/api/whoami")
async def whoami(identity: Viewer) -> WhoAmI:
    """The account of this token, as the audit trail names it."""
    return WhoAmI(login=identity.name, role=identity.role)


@router.get("/api/config")
async def config(_: Viewer, gateway: GatewayDep) -> ConsoleConfig:
    """The stand as config/stand.yaml describes it, for the console's schematic and limits."""
    settings = gateway.settings
    return ConsoleConfig(
        stand=settings.stand_name,
        valves=[
            ConsoleValve(name=v.name, role=v.role, confirm=v.role in CONFIRMED_ROLES) for v in settings.valves
        ],
        channels=[
            ConsoleChannel(
                name=c.name,
                unit=c.unit,
                description=c.description,
                warn_above=c.warn_above,
                warn_below=c.warn_below,
            )
            for c in settings.channels
        ],
        redlines=[
            ConsoleRedline(
                channel=r.channel,
                above=r.above,
                below=r.below,
                states=list(r.states),
                while_open=list(r.while_open),
            )
            for r in settings.redlines
        ],
        schematic=SCHEMATIC,
    )


@router.get("/api/storage")
async def storage(_: Viewer, gateway: GatewayDep) -> Storage:
    """Free space in the data directory (as the gateway sees it) and the logger's open file."""
    data_dir = gateway.settings.data_dir
    free: int | None = None
    total: int | None = None
    try:
        usage = shutil.disk_usage(data_dir)
        free, total = usage.free, usage.total
    except OSError:
        pass  # null: unreadable from here
    try:
        status = await call_service(gateway.bus, "logger", topics.LOGGER_STATUS, {})
    except CallFailedError as exc:
        return Storage(
            data_dir=str(data_dir),
            free_bytes=free,
            total_bytes=total,
            open_segment=None,
            disk_error=None,
            logger_reason=exc.reason,
        )
    segment = status.get("open_segment")
    error = status.get("disk_error")
    return Storage(
        data_dir=str(data_dir),
        free_bytes=free,
        total_bytes=total,
        open_segment=str(segment) if segment else None,
        disk_error=str(error) if error else None,
        logger_reason=None,
    )
