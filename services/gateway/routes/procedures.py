"""Procedure and alarm routes: the sequences and their steps, hold and resume a running sequence, the
alarms and their acknowledgement (docs/safety.md §4 and §6.1). Commands go to actuation like every
other; the alarms are its retained `rcs/state/alarms`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Request

from services.common import topics
from services.gateway.deps import GatewayDep, Operator, Viewer
from services.gateway.models import (
    LIMITED,
    REFUSED,
    UNANSWERED,
    AckOut,
    Alarms,
    CommandOut,
    HoldIn,
    SequenceInfo,
    Sequences,
)
from services.gateway.sequences import sequences_view

router = APIRouter(tags=["commands"])
ANSWERS = REFUSED | UNANSWERED | LIMITED


@router.get("/api/sequences", tags=["status"])
async def sequences(_: Viewer, gateway: GatewayDep) -> Sequences:
    """Every sequence of config/stand.yaml with its steps, as the console lists them (start one with
    `POST /api/scenario/{name}`; its progress is `sequence` of the system state)."""
    return Sequences(sequences=[SequenceInfo(**s) for s in sequences_view(gateway.settings)])


@router.post("/api/hold", responses=ANSWERS)
async def hold(
    identity: Operator, request: Request, gateway: GatewayDep, body: Annotated[HoldIn | None, Body()] = None
) -> CommandOut:
    """Hold the running sequence (procedure) before its next step until `resume`; refused after T-0."""
    reason = body.reason if body is not None else "operator hold"
    result = await gateway.command(
        "actuation", topics.actuation("hold"), identity, request, {"reason": reason}
    )
    return CommandOut(success=True, scenario=result.get("sequence"))


@router.post("/api/resume", responses=ANSWERS)
async def resume(identity: Operator, request: Request, gateway: GatewayDep) -> CommandOut:
    """Go on with a held sequence where it stopped."""
    result = await gateway.command("actuation", topics.actuation("resume"), identity, request)
    return CommandOut(success=True, scenario=result.get("sequence"))


@router.get("/api/alarms", tags=["status"])
async def alarms(_: Viewer, gateway: GatewayDep) -> Alarms:
    """Every alarm active, or cleared and not yet acknowledged (actuation's retained state)."""
    latest = gateway.bus.latest(topics.STATE_ALARMS) or {}
    return Alarms(alarms=list(latest.get("alarms") or []), ts=latest.get("ts"))


@router.post("/api/alarms/{alarm_id}/ack", responses=ANSWERS)
async def acknowledge(
    alarm_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    identity: Operator,
    request: Request,
    gateway: GatewayDep,
) -> AckOut:
    """Acknowledge an alarm (audited with your account); refused naming why."""
    await gateway.command("actuation", topics.actuation("ack"), identity, request, {"id": alarm_id})
    return AckOut(success=True, acknowledged=alarm_id)
