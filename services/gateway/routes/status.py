"""Status routes: hello, health (open, for probes), the stand's status, events and metrics."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.common import topics
from services.gateway.bus import EVENTS_KEPT
from services.gateway.deps import GatewayDep, Viewer
from services.gateway.jsonable import jsonable
from services.gateway.models import Events, Health, Hello, Status
from services.gateway.problems import SERVICES, Problem, stand_problems

MAX_FILTER_CHARS = 200  # the audit keeps 200 characters of `who`

router = APIRouter(tags=["status"])


def _problems(gateway: GatewayDep) -> list[Problem]:
    return stand_problems(gateway.bus, gateway.settings.gateway.stale_after_s)


@router.get("/api/hello")
async def hello(_: Viewer, gateway: GatewayDep) -> Hello:
    return Hello(message="rcs gateway", stand=gateway.settings.stand_name)


@router.get(
    "/api/health",
    responses={503: {"model": Health, "description": "something is wrong: `problems` says what"}},
)
async def health(response: Response, gateway: GatewayDep) -> Health:
    """Open (no token), for probes: 200 when nothing is wrong, else 503 with every problem."""
    found = _problems(gateway)
    if found:
        response.status_code = 503
    return Health(status="failing" if found else "ok", broker_connected=gateway.bus.connected, problems=found)


@router.get("/api/status")
async def status(_: Viewer, gateway: GatewayDep) -> Status:
    bus = gateway.bus
    system = bus.latest(topics.STATE_SYSTEM) or {}
    stm32 = bus.latest(topics.STATE_STM32) or {}
    motors = bus.latest(topics.STATE_MOTORS) or {}
    meta = bus.latest(topics.TELEMETRY_META) or {}
    source = meta.get("source")
    seen = bus.latest_by_prefix("rcs/status/")
    services: dict[str, Literal["online", "offline"]] = {name: "offline" for name in SERVICES}
    for topic, message in seen.items():
        services[topic.removeprefix("rcs/status/")] = (
            "online" if message.get("state") == "online" else "offline"
        )
    # operator tools and other clients have statuses too; the stand's health is its services'
    found = _problems(gateway)
    lost = stm32.get("lost_samples_total")
    return Status(
        system_mode=str(system.get("state", "unknown")),
        stm32_connected=stm32.get("connected") is True,
        arduino_connected=motors.get("connected") is True,
        websocket_connections=bus.websocket_connections,
        simulation_active=isinstance(source, dict) and source.get("kind") == "emulator",
        status="degraded" if found else "ok",
        broker_connected=bus.connected,
        services=services,
        problems=found,
        lost_samples_total=lost if isinstance(lost, int) and not isinstance(lost, bool) else None,
    )


@router.get("/api/events")
async def events(
    _: Viewer,
    gateway: GatewayDep,
    limit: Annotated[int, Query(ge=1, le=EVENTS_KEPT)] = 100,
    kind: Annotated[str | None, Query(max_length=MAX_FILTER_CHARS, description="only this kind")] = None,
    who: Annotated[str | None, Query(max_length=MAX_FILTER_CHARS, description="only this person's")] = None,
) -> Events:
    """Events seen on `rcs/events` since the gateway started (audit, red-lines, gaps …), newest
    first; `kind` and `who` keep only the events of that kind and of that person (`who`)."""
    kept = gateway.bus.events(EVENTS_KEPT)
    chosen = [e for e in kept if kind in (None, e.get("kind")) and who in (None, e.get("who"))]
    return Events(events=[jsonable(event) for event in chosen[:limit]])


@router.get("/metrics", response_class=Response)
async def metrics(_: Viewer, gateway: GatewayDep) -> Response:
    """Prometheus exposition of the gateway's counters (bus, MQTT, RPC, HTTP) and process."""
    return Response(generate_latest(gateway.registry), media_type=CONTENT_TYPE_LATEST)
