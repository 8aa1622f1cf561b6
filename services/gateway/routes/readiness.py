"""Before the test: `POST /api/tare` (operator) and `GET /api/checklist` (viewer), both answered by
actuation (docs/safety.md §2.1-2.2): the tare only while idle, audited; the checklist as arming and
procedures judge it."""

from __future__ import annotations

from fastapi import APIRouter, Request

from services.common import topics
from services.gateway.deps import GatewayDep, Operator, Viewer, invalid
from services.gateway.models import LIMITED, REFUSED, UNANSWERED, Checklist, TareIn, TareOut
from services.gateway.tare_channels import TARE_WAIT_S, tare_channels_problem

router = APIRouter(tags=["before the test"])


@router.post("/api/tare", responses=REFUSED | UNANSWERED | LIMITED)
async def tare(body: TareIn, identity: Operator, request: Request, gateway: GatewayDep) -> TareOut:
    """Zero `channels` from the mean of their last `seconds` (idle only); `clear: true` removes their
    tare. 409 when refused (not idle, no recent samples), with the reason."""
    problem = tare_channels_problem(gateway.settings, body.channels)
    if problem is not None:
        raise invalid("body", "channels", problem)
    result = await gateway.command(
        "actuation",
        topics.actuation("tare"),
        identity,
        request,
        {"channels": body.channels, "seconds": body.seconds, "clear": body.clear},
        timeout=TARE_WAIT_S,
    )
    return TareOut(
        success=True,
        channels=result.get("channels") or body.channels,
        cleared=bool(result.get("cleared")),
        samples=int(result.get("samples") or 0),
        tare=result.get("tare") or {},
    )


@router.get("/api/checklist", responses=REFUSED | UNANSWERED)
async def checklist(_: Viewer, gateway: GatewayDep) -> Checklist:
    """Each go/no-go item's state and reason (config/stand.yaml `checklist`)."""
    return Checklist(**await gateway.call("actuation", topics.actuation("checklist"), {}))
