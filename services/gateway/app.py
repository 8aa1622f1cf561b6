"""The gateway's REST API: the existing system's paths and field names, plus arming, history and events.

Commands go to actuation (and the logger) by MQTT request/response and return the service's verdict:
a refusal is 409 `{detail: <the rule's reason>}`, a service that does not answer (or is offline, or
the broker is unreachable) is 503, bad input is 422 `{detail: "<field>: <problem>"}` (one line, the
input never echoed), a body over `gateway.max_body_bytes` is 413 (unread), a command beyond the
caller's rate limit is 429 (services/gateway/rate_limits.py; abort is never limited and travels on a
connection of its own). Every command carries `who` (the token's name) and `origin`
(`gateway <client ip>`) into actuation's audit.

Reads need a viewer token, commands an operator token (`Authorization: Bearer <token>`): 401 without
or with an unknown token, 403 for a viewer on a command. `/api/health` is open (health probes): 200
when nothing is wrong, else 503 with the problems (services/gateway/problems.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import ProcessCollector

from services.common.logs import Throttled
from services.common.metrics import counters, register_stats
from services.common.settings import Settings
from services.gateway.auth import Auth
from services.gateway.bus import Bus
from services.gateway.deps import Gateway
from services.gateway.limits import BodyLimit, ReadSlots
from services.gateway.models import Detail
from services.gateway.rate_limits import CommandLimits
from services.gateway.routes import (
    commands,
    console,
    procedures,
    readiness,
    recordings,
    runs,
    series,
    status,
    telemetry,
)
from services.gateway.ws import WebSocketEndpoint

log = logging.getLogger("rcs.gateway.http")

STATIC_DIR = Path(__file__).parent / "static"  # the live dashboard (`/`), installed as package data
MAX_PROBLEM_CHARS = 300  # a 422's one line
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Detail, "description": "a body that cannot be parsed"},
    401: {"model": Detail, "description": "no or unknown token"},
    403: {"model": Detail, "description": "operator token needed"},
    413: {"model": Detail, "description": "a body over gateway.max_body_bytes (never read)"},
    422: {"model": Detail, "description": "invalid input: `<field>: <problem>`, one line"},
}


def create_app(settings: Settings, bus: Bus, auth: Auth) -> FastAPI:
    """The REST app with the WebSocket `/ws`; its lifespan starts and stops `bus`."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await bus.start()
        try:
            yield
        finally:
            await bus.stop()

    app = FastAPI(title="rcs gateway", description=__doc__, lifespan=lifespan, responses=ERRORS)
    gateway = Gateway(
        settings,
        bus,
        auth,
        CommandLimits(settings.gateway),
        ReadSlots(settings.gateway.heavy_reads),
        Throttled(log),
    )
    app.state.gateway = gateway
    _add_middleware(app, gateway)
    for module in (status, telemetry, recordings, series, commands, procedures, readiness, runs, console):
        app.include_router(module.router)
    app.openapi = lambda: _openapi(app, settings)  # type: ignore[method-assign]
    websocket = WebSocketEndpoint(bus, auth, settings, gateway.limits)
    websocket.attach(app)
    _register_metrics(gateway, websocket)
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    # the live dashboard: a static page (no data in it, so no token); it asks for one for `/ws`
    app.add_api_route("/", _dashboard, include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _add_middleware(app: FastAPI, gateway: Gateway) -> None:
    """The body limit inside CORS, so that a browser sees the 413 itself."""
    limit = gateway.settings.gateway.max_body_bytes

    def body_too_large() -> None:
        gateway.stats.too_large += 1
        gateway.problems.warning("too-large", "refused a request body over %d bytes", limit)

    app.add_middleware(BodyLimit, max_bytes=limit, on_refused=body_too_large)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(gateway.settings.gateway.cors_origins),
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
    )


def _register_metrics(gateway: Gateway, websocket: WebSocketEndpoint) -> None:
    """`/metrics`: the bus's, HTTP's and the WebSocket's counters, and the process's."""
    ProcessCollector(registry=gateway.registry)
    register_stats(
        "gateway",
        lambda: {
            **gateway.bus.metrics(),
            **counters(gateway.stats, "http"),
            "http_busy_total": float(gateway.heavy.refused),
            **websocket.metrics(),
        },
        gateway.registry,
    )


def _openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """FastAPI's schema with what this stand's configuration fixes (valve count, motors, travel, the
    channels a tare may name)."""
    if app.openapi_schema is None:
        models = FastAPI.openapi(app)["components"]["schemas"]  # cached by FastAPI, edited in place
        n_valves = len(settings.valves)
        models["ValvesIn"]["properties"]["valves"].update(minItems=n_valves, maxItems=n_valves)
        motor = models["StepMotorIn"]["properties"]
        motor["motor_id"].update(enum=commands.motor_ids(settings))
        max_angle = commands.max_angle_deg(settings)
        motor["angle"].update(minimum=-max_angle, maximum=max_angle)
        measured = [c.name for c in settings.measured_channels]  # what a tare may name
        models["TareIn"]["properties"]["channels"]["items"].update(enum=measured)
    return app.openapi_schema or {}


async def _invalid_request(request: Request, exc: RequestValidationError) -> Response:
    """422 `{detail: "<field>: <problem>"}`, counted, and logged once per route and interval."""
    gateway: Gateway = request.app.state.gateway
    gateway.stats.invalid += 1
    route = request.scope.get("route")
    where = f"{request.method} {getattr(route, 'path', 'unrouted')}"  # the template: names are free
    problem = one_line(list(exc.errors()))
    gateway.problems.warning(f"invalid:{where}", "refused an invalid request %s: %s", where, problem)
    return JSONResponse({"detail": problem}, status_code=422)


def one_line(errors: list[dict[str, Any]]) -> str:
    """A 422's text: where and what of the first problem, never the input (it may be huge or NaN)."""
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    line = f"{where}: {first.get('msg', 'invalid')}{more}"
    return line if len(line) <= MAX_PROBLEM_CHARS else line[: MAX_PROBLEM_CHARS - 1] + "…"


async def _dashboard() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")
