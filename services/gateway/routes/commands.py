"""Command routes: valves, motors, sequences, abort, arming and the logger's save. Each goes to its
service by MQTT request/response (services/gateway/deps.py: `Gateway.command`) and returns its verdict."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request

from services.common import topics
from services.common.settings import Settings
from services.gateway.calls import motor_timeout_s
from services.gateway.deps import GatewayDep, Operator, invalid
from services.gateway.models import (
    LIMITED,
    NOT_FOUND,
    REFUSED,
    UNANSWERED,
    CommandOut,
    Detail,
    SaveOut,
    StepMotorIn,
    StepMotorOut,
    ValvesIn,
    ValvesOut,
)

router = APIRouter(tags=["commands"])
ANSWERS = REFUSED | UNANSWERED | LIMITED


def _command_out(result: dict[str, Any], **extra: Any) -> CommandOut:
    return CommandOut(
        success=True, state=result.get("state"), valves=result.get("valves"), bits=result.get("bits"), **extra
    )


@router.post("/api/valves", responses=ANSWERS)
async def valves(body: ValvesIn, identity: Operator, request: Request, gateway: GatewayDep) -> ValvesOut:
    """The whole valve pattern; answered once the STM32 acknowledged it."""
    n_valves = len(gateway.settings.valves)
    if len(body.valves) != n_valves:
        raise invalid(
            "body", "valves", f"'valves' must have {n_valves} entries (0/1), got {len(body.valves)}"
        )
    result = await gateway.command(
        "actuation", topics.actuation("valves"), identity, request, {"valves": body.valves}
    )
    return ValvesOut(success=True, valves=result["valves"], bits=result["bits"])


def motor_ids(settings: Settings) -> list[int]:
    """The configured motors' ids (the schema's `motor_id` enum)."""
    return sorted(m.id for m in settings.motors.motors)


def max_angle_deg(settings: Settings) -> float:
    """The largest relative move: the full travel, from one end to the other."""
    return 2 * settings.motors.limit_deg


@router.post("/api/step_motor", responses=ANSWERS)
async def step_motor(
    body: StepMotorIn, identity: Operator, request: Request, gateway: GatewayDep
) -> StepMotorOut:
    """A relative move; answered when the move completed."""
    known, max_angle = motor_ids(gateway.settings), max_angle_deg(gateway.settings)
    if body.motor_id not in known:
        raise invalid("body", "motor_id", f"'motor_id' must be one of {known}")
    if abs(body.angle) > max_angle:
        raise invalid("body", "angle", f"'angle' must be within ±{max_angle:g} degrees (the full travel)")
    result = await gateway.command(
        "actuation",
        topics.actuation("motor"),
        identity,
        request,
        {"motor_id": body.motor_id, "angle": body.angle},
        timeout=motor_timeout_s(gateway.settings, body.angle),
    )
    return StepMotorOut(
        success=True,
        motor_id=body.motor_id,
        angle=body.angle,
        position_deg=result.get("position_deg"),
        response=str(result.get("response", "")),
    )


@router.post("/api/scenario/{name}", responses=NOT_FOUND | ANSWERS)
async def scenario(name: str, identity: Operator, request: Request, gateway: GatewayDep) -> CommandOut:
    """Run a sequence of config/stand.yaml; the abort sequence (`emergency`) is an abort."""
    settings = gateway.settings
    if name not in settings.sequences:
        raise HTTPException(404, f"no sequence {name!r}; known: {', '.join(settings.sequences)}")
    if name == settings.abort_sequence_name:
        result = await gateway.command(
            "actuation", topics.actuation("abort"), identity, request, {"reason": name}
        )
    else:
        result = await gateway.command(
            "actuation", topics.actuation("sequence"), identity, request, {"name": name}
        )
    return _command_out(result, scenario=name)


@router.post(
    "/api/abort",
    responses={
        409: {"model": Detail, "description": "aborting, but the STM32 has not confirmed it yet"},
        **UNANSWERED,
    },
)
async def abort(identity: Operator, request: Request, gateway: GatewayDep) -> CommandOut:
    """Always accepted by actuation, from any state; 409 while the device has not confirmed it."""
    return _command_out(await gateway.command("actuation", topics.actuation("abort"), identity, request))


@router.post("/api/arm", responses=ANSWERS)
async def arm(identity: Operator, request: Request, gateway: GatewayDep) -> CommandOut:
    """Refused without fresh telemetry and a recent operator heartbeat (an open operator WebSocket)."""
    return _command_out(await gateway.command("actuation", topics.actuation("arm"), identity, request))


@router.post("/api/disarm", responses=ANSWERS)
async def disarm(identity: Operator, request: Request, gateway: GatewayDep) -> CommandOut:
    return _command_out(await gateway.command("actuation", topics.actuation("disarm"), identity, request))


@router.post("/api/save_sensor_buffer", responses=ANSWERS)
async def save_sensor_buffer(identity: Operator, request: Request, gateway: GatewayDep) -> SaveOut:
    """The logger closes its open segment now; the reply names the Parquet file."""
    result = await gateway.command("logger", topics.LOGGER_SAVE, identity, request)
    return SaveOut(success=True, file=result["file"], path=result["path"], size=result["size"])
