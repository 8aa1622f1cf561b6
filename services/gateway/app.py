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

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest

from services.common import topics
from services.common.logs import Throttled
from services.common.metrics import counters, register_stats
from services.common.rpc import RpcError, RpcTimeout
from services.common.settings import Settings
from services.gateway import legacy, recordings
from services.gateway.auth import Auth, Identity, Role
from services.gateway.bus import Bus
from services.gateway.jsonable import jsonable
from services.gateway.limits import BodyLimit, ReadSlots
from services.gateway.models import (
    BUSY,
    LIMITED,
    NOT_FOUND,
    REFUSED,
    UNANSWERED,
    BufferStatus,
    CommandOut,
    Detail,
    Events,
    Health,
    Hello,
    History,
    Number,
    ParquetData,
    ParquetFile,
    SaveOut,
    SensorData,
    Sensors,
    Status,
    StepMotorIn,
    StepMotorOut,
    ValvesIn,
    ValvesOut,
)
from services.gateway.problems import SERVICES, Problem, stand_problems
from services.gateway.rate_limits import CommandLimits
from services.gateway.ws import register_websocket

log = logging.getLogger("rcs.gateway.http")

STATIC_DIR = Path(__file__).parent / "static"  # the live dashboard (`/`), installed as package data

MAX_RAW_ROWS = 100_000
DEFAULT_RAW_ROWS = 10_000
MAX_POINTS = 20_000
MAX_HISTORY_S = 3600.0  # acquisition returns what its ring buffer holds (10 minutes by default)
MAX_COLUMNS_QUERY = 4096  # characters of `columns`: every channel name of a stand, comma-separated
MAX_PROBLEM_CHARS = 300  # a 422's one line
_bearer = HTTPBearer(auto_error=False, description="viewer or operator token")


# -- helpers -------------------------------------------------------------------------------------


@dataclass
class GatewayStats:
    commands: int = 0
    refused: int = 0  # 409
    unanswered: int = 0  # 503
    unauthorized: int = 0  # 401
    forbidden: int = 0  # 403
    invalid: int = 0  # 422: a request the API cannot take
    too_large: int = 0  # 413: a body over gateway.max_body_bytes
    rate_limited: int = 0  # 429: a command beyond the token's rate limit


def _columns(values: bytes, n: int, channels: list[str]) -> dict[str, list[Number]]:
    matrix = np.frombuffer(values, dtype="<f4").reshape(n, len(channels)).astype(np.float64)
    return {name: [legacy.finite(v) for v in matrix[:, i].tolist()] for i, name in enumerate(channels)}


def one_line(errors: list[dict[str, Any]]) -> str:
    """A 422's text: where and what of the first problem, never the input (it may be huge or NaN)."""
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    line = f"{where}: {first.get('msg', 'invalid')}{more}"
    return line if len(line) <= MAX_PROBLEM_CHARS else line[: MAX_PROBLEM_CHARS - 1] + "…"


def invalid(where: str, field: str, message: str) -> RequestValidationError:
    """A 422 (answered `detail: "<where>.<field>: <message>"`), for checks a model cannot make."""
    return RequestValidationError([{"loc": (where, field), "msg": message, "type": "value_error"}])


def _origin(request: Request) -> str:
    return f"gateway {request.client.host if request.client else 'unknown'}"


def _require(role: Role) -> Callable[..., Awaitable[Identity]]:
    """A dependency giving the caller's identity if its token allows `role` (the app's `Auth`)."""

    async def dependency(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Identity:
        auth: Auth = request.app.state.auth
        stats: GatewayStats = request.app.state.stats
        identity = auth.identify(credentials.credentials if credentials else None)
        if identity is None:
            stats.unauthorized += 1
            raise HTTPException(401, "missing or unknown token", headers={"WWW-Authenticate": "Bearer"})
        if not auth.allows(identity, role):
            stats.forbidden += 1
            raise HTTPException(403, f"{role} token needed")
        return identity

    return dependency


Viewer = Annotated[Identity, Depends(_require("viewer"))]
Operator = Annotated[Identity, Depends(_require("operator"))]


# -- the app -------------------------------------------------------------------------------------


def create_app(settings: Settings, bus: Bus, auth: Auth) -> FastAPI:
    """The REST app with the WebSocket `/ws`; its lifespan starts and stops `bus`."""
    stats = GatewayStats()
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    problems = Throttled(log)
    limits = CommandLimits(settings.gateway)
    n_valves = len(settings.valves)
    motor_ids = sorted(m.id for m in settings.motors.motors)
    max_angle = 2 * settings.motors.limit_deg

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await bus.start()
        try:
            yield
        finally:
            await bus.stop()

    app = FastAPI(
        title="rcs gateway",
        description=__doc__,
        lifespan=lifespan,
        responses={
            400: {"model": Detail, "description": "a body that cannot be parsed"},
            401: {"model": Detail, "description": "no or unknown token"},
            403: {"model": Detail, "description": "operator token needed"},
            413: {"model": Detail, "description": "a body over gateway.max_body_bytes (never read)"},
            422: {"model": Detail, "description": "invalid input: `<field>: <problem>`, one line"},
        },
    )
    app.state.auth = auth
    app.state.stats = stats
    heavy = ReadSlots(settings.gateway.heavy_reads)

    def body_too_large() -> None:
        stats.too_large += 1
        problems.warning("too-large", "refused a request body over %d bytes", settings.gateway.max_body_bytes)

    # inside CORS, so that a browser sees the 413 itself
    app.add_middleware(BodyLimit, max_bytes=settings.gateway.max_body_bytes, on_refused=body_too_large)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.gateway.cors_origins),
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
    )

    async def call(
        service: str, topic: str, body: dict[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]:
        """The service's result, or the HTTP error that says why there is none."""
        abort = topic == topics.actuation("abort")
        if not (bus.abort_connected if abort else bus.connected):
            stats.unanswered += 1
            raise HTTPException(503, "the gateway is not connected to the MQTT broker")
        status = bus.latest(topics.status(service))
        if status is not None and status.get("state") == "offline":
            stats.unanswered += 1
            raise HTTPException(503, f"{service} is offline ({status.get('reason', 'no reason given')})")
        wait = settings.gateway.command_timeout_s if timeout is None else timeout
        try:
            if abort:  # its own connection: nothing queued for other requests delays it
                return await bus.abort(body, timeout=wait)
            return await bus.call(topic, body, timeout=wait)
        except RpcError as exc:
            stats.refused += 1
            raise HTTPException(409, str(exc)) from exc
        except RpcTimeout as exc:
            stats.unanswered += 1
            raise HTTPException(
                503, f"no answer from {service} within {wait:g} s (is it running?); the outcome is unknown"
            ) from exc

    async def command(
        service: str,
        topic: str,
        identity: Identity,
        request: Request,
        body: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        stats.commands += 1
        if topic != topics.actuation("abort"):
            refused = limits.admit(identity.name)
            if refused is not None:
                stats.rate_limited += 1
                problems.warning(
                    f"limited:{identity.name}", "refused a command of %s: %s", identity.name, refused
                )
                raise HTTPException(429, refused, headers={"Retry-After": "1"})
        audit = {"who": identity.name, "origin": _origin(request)}
        return await call(service, topic, {**(body or {}), **audit}, timeout=timeout)

    def command_out(result: dict[str, Any], **extra: Any) -> CommandOut:
        return CommandOut(
            success=True,
            state=result.get("state"),
            valves=result.get("valves"),
            bits=result.get("bits"),
            **extra,
        )

    # -- reads ------------------------------------------------------------------------------------

    @app.get("/api/hello", tags=["status"])
    async def hello(_: Viewer) -> Hello:
        return Hello(message="rcs gateway", stand=settings.stand_name)

    def current_problems() -> list[Problem]:
        return stand_problems(bus, settings.gateway.stale_after_s)

    @app.get(
        "/api/health",
        tags=["status"],
        responses={503: {"model": Health, "description": "something is wrong: `problems` says what"}},
    )
    async def health(response: Response) -> Health:
        """Open (no token), for probes: 200 when nothing is wrong, else 503 with every problem."""
        found = current_problems()
        if found:
            response.status_code = 503
        return Health(status="failing" if found else "ok", broker_connected=bus.connected, problems=found)

    @app.get("/api/status", tags=["status"])
    async def status(_: Viewer) -> Status:
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
        found = current_problems()
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

    @app.get("/api/sensors", tags=["telemetry"])
    async def sensors(_: Viewer) -> Sensors:
        sample = bus.latest_sample()
        if sample is None:
            return Sensors(t=None, channels={}, sensor_data=SensorData(**legacy.sensor_data((), None, ())))
        channels, t, values = sample
        return Sensors(
            t=t,
            channels={name: legacy.finite(float(v)) for name, v in zip(channels, values, strict=True)},
            sensor_data=SensorData(**legacy.sensor_data(channels, t, values)),
        )

    @app.get("/api/buffer_status", tags=["telemetry"], responses=REFUSED | UNANSWERED)
    async def buffer_status(_: Viewer) -> BufferStatus:
        return BufferStatus(**await call("acquisition", topics.ACQ_BUFFER_STATUS, {}))

    @app.get("/api/history", tags=["telemetry"], responses=REFUSED | UNANSWERED)
    async def history(
        _: Viewer,
        seconds: Annotated[float, Query(gt=0, le=MAX_HISTORY_S, allow_inf_nan=False)] = 10.0,
        points: Annotated[int, Query(ge=1, le=MAX_POINTS)] = 2000,
    ) -> History:
        """The last `seconds` from acquisition's ring buffer in at most `points` min/max buckets."""
        with heavy.take():  # the answer (up to points x channels x 2 numbers) is built under it too
            result = await call(
                "acquisition", topics.ACQ_HISTORY_REDUCED, {"seconds": seconds, "points": points}
            )
            n, channels = int(result["n"]), list(result["channels"])
            return History(
                session=result.get("session"),
                channels=channels,
                n=n,
                n_source=int(result["n_source"]),
                seq_first=result.get("seq_first"),
                seq_last=result.get("seq_last"),
                t=np.frombuffer(result["t"], dtype="<f8").tolist(),
                min=_columns(result["min"], n, channels),
                max=_columns(result["max"], n, channels),
            )

    @app.get("/api/events", tags=["status"])
    async def events(_: Viewer, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Events:
        """Events seen on `rcs/events` since the gateway started (audit, red-lines, gaps …)."""
        return Events(events=[jsonable(event) for event in bus.events(limit)])

    @app.get("/api/parquet_files", tags=["recordings"])
    def parquet_files(_: Viewer) -> list[ParquetFile]:
        """The logger's recordings in the data directory, newest first (listed in a worker thread:
        a large directory on an SD card must not hold up the telemetry stream)."""
        return [ParquetFile(**asdict(info)) for info in recordings.list_files(settings.data_dir)]

    @app.get(
        "/api/parquet_data/{filename}",
        tags=["recordings"],
        response_model=ParquetData,
        responses={404: {"model": Detail, "description": "not a recording of the data directory"}, **BUSY},
    )
    def parquet_data(
        _: Viewer,
        filename: str,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int | None, Query(ge=1, le=MAX_RAW_ROWS)] = None,
        columns: Annotated[
            str | None, Query(max_length=MAX_COLUMNS_QUERY, description="comma-separated; default: all")
        ] = None,
        points: Annotated[int | None, Query(ge=2, le=MAX_POINTS)] = None,
    ) -> Response:
        """Rows of a recording (`timestamp` ISO-8601 UTC, NaN as null).

        Without `points`: rows `offset … offset+limit` (limit default 10000, at most 100000). With
        `points`: the window `offset … offset+limit` (default: to the end of the file) as at most
        `points` rows, two per bucket of equal row count: its minimum then its maximum of every
        channel, at the bucket's first and last timestamp and seq. An answer holds at most
        `gateway.max_answer_cells` cells (rows × columns): ask more and it is 422; page with `offset`.
        """
        try:
            path = recordings.resolve(settings.data_dir, filename)
        except recordings.BadQueryError as exc:  # traversal, other files: they are no recordings
            raise HTTPException(404, f"no such recording: {exc}") from exc
        except FileNotFoundError as exc:
            raise HTTPException(404, "no such recording") from exc
        wanted = list(dict.fromkeys(c.strip() for c in columns.split(",") if c.strip())) if columns else None
        rows_limit = limit if limit is not None or points is not None else DEFAULT_RAW_ROWS
        with heavy.take():  # reading and encoding: what a read costs in memory
            try:
                rows = recordings.read_rows(
                    path,
                    offset=offset,
                    limit=rows_limit,
                    columns=wanted,
                    points=points,
                    max_cells=settings.gateway.max_answer_cells,
                )
            except recordings.TooLargeError as exc:
                raise invalid("query", "limit", str(exc)) from exc
            except recordings.BadQueryError as exc:
                raise invalid("query", "columns", str(exc)) from exc
            except FileNotFoundError as exc:  # removed by retention meanwhile
                raise HTTPException(404, "no such recording") from exc
            body = {
                "columns": rows.columns,
                "rowCount": rows.row_count,
                "offset": rows.offset,
                "reduced": rows.reduced,
                "data": rows.data,
            }
            # Built here rather than validated through the model: up to max_answer_cells cells.
            return Response(json.dumps(body, allow_nan=False), media_type="application/json")

    @app.get("/metrics", tags=["status"], response_class=Response)
    async def metrics(_: Viewer) -> Response:
        """Prometheus exposition of the gateway's counters (bus, MQTT, RPC, HTTP) and process."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # -- commands ---------------------------------------------------------------------------------

    @app.post("/api/valves", tags=["commands"], responses=REFUSED | UNANSWERED | LIMITED)
    async def valves(body: ValvesIn, identity: Operator, request: Request) -> ValvesOut:
        """The whole valve pattern; answered once the STM32 acknowledged it."""
        if len(body.valves) != n_valves:
            raise invalid(
                "body", "valves", f"'valves' must have {n_valves} entries (0/1), got {len(body.valves)}"
            )
        result = await command(
            "actuation", topics.actuation("valves"), identity, request, {"valves": body.valves}
        )
        return ValvesOut(success=True, valves=result["valves"], bits=result["bits"])

    @app.post("/api/step_motor", tags=["commands"], responses=REFUSED | UNANSWERED | LIMITED)
    async def step_motor(body: StepMotorIn, identity: Operator, request: Request) -> StepMotorOut:
        """A relative move; answered when the move completed."""
        if body.motor_id not in motor_ids:
            raise invalid("body", "motor_id", f"'motor_id' must be one of {motor_ids}")
        if abs(body.angle) > max_angle:
            raise invalid("body", "angle", f"'angle' must be within ±{max_angle:g} degrees (the full travel)")
        travel_s = abs(body.angle) / settings.motors.speed_deg_s + settings.motors.timeout_margin_s
        result = await command(
            "actuation",
            topics.actuation("motor"),
            identity,
            request,
            {"motor_id": body.motor_id, "angle": body.angle},
            timeout=travel_s + settings.gateway.command_timeout_s,
        )
        return StepMotorOut(
            success=True,
            motor_id=body.motor_id,
            angle=body.angle,
            position_deg=result.get("position_deg"),
            response=str(result.get("response", "")),
        )

    @app.post(
        "/api/scenario/{name}",
        tags=["commands"],
        responses=NOT_FOUND | REFUSED | UNANSWERED | LIMITED,
    )
    async def scenario(name: str, identity: Operator, request: Request) -> CommandOut:
        """Run a sequence of config/stand.yaml; the abort sequence (`emergency`) is an abort."""
        if name not in settings.sequences:
            raise HTTPException(404, f"no sequence {name!r}; known: {', '.join(settings.sequences)}")
        if name == settings.abort_sequence_name:
            result = await command(
                "actuation", topics.actuation("abort"), identity, request, {"reason": name}
            )
        else:
            result = await command(
                "actuation", topics.actuation("sequence"), identity, request, {"name": name}
            )
        return command_out(result, scenario=name)

    @app.post(
        "/api/abort",
        tags=["commands"],
        responses={
            409: {"model": Detail, "description": "aborting, but the STM32 has not confirmed it yet"},
            **UNANSWERED,
        },
    )
    async def abort(identity: Operator, request: Request) -> CommandOut:
        """Always accepted by actuation, from any state; 409 while the device has not confirmed it."""
        return command_out(await command("actuation", topics.actuation("abort"), identity, request))

    @app.post("/api/arm", tags=["commands"], responses=REFUSED | UNANSWERED | LIMITED)
    async def arm(identity: Operator, request: Request) -> CommandOut:
        """Refused without fresh telemetry and a recent operator heartbeat (an open operator WebSocket)."""
        return command_out(await command("actuation", topics.actuation("arm"), identity, request))

    @app.post("/api/disarm", tags=["commands"], responses=REFUSED | UNANSWERED | LIMITED)
    async def disarm(identity: Operator, request: Request) -> CommandOut:
        return command_out(await command("actuation", topics.actuation("disarm"), identity, request))

    @app.post("/api/save_sensor_buffer", tags=["commands"], responses=REFUSED | UNANSWERED | LIMITED)
    async def save_sensor_buffer(identity: Operator, request: Request) -> SaveOut:
        """The logger closes its open segment now; the reply names the Parquet file."""
        result = await command("logger", topics.LOGGER_SAVE, identity, request)
        return SaveOut(success=True, file=result["file"], path=result["path"], size=result["size"])

    def openapi() -> dict[str, Any]:
        """FastAPI's schema with what this stand's configuration fixes (valve count, motors, travel)."""
        if app.openapi_schema is None:
            models = FastAPI.openapi(app)["components"]["schemas"]  # cached by FastAPI, edited in place
            models["ValvesIn"]["properties"]["valves"].update(minItems=n_valves, maxItems=n_valves)
            motor = models["StepMotorIn"]["properties"]
            motor["motor_id"].update(enum=motor_ids)
            motor["angle"].update(minimum=-max_angle, maximum=max_angle)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
    hub_metrics = register_websocket(app, bus, auth, settings, limits=limits)
    register_stats(
        "gateway",
        lambda: {
            **bus.metrics(),
            **counters(stats, "http"),
            "http_busy_total": float(heavy.refused),
            **hub_metrics(),
        },
        registry,
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        """422 `{detail: "<field>: <problem>"}`, counted, and logged once per route and interval."""
        stats.invalid += 1
        route = request.scope.get("route")
        where = f"{request.method} {getattr(route, 'path', 'unrouted')}"  # the template: names are free
        problem = one_line(list(exc.errors()))
        problems.warning(f"invalid:{where}", "refused an invalid request %s: %s", where, problem)
        return JSONResponse({"detail": problem}, status_code=422)

    # -- the live dashboard: a static page (no data in it, so no token); it asks for one for `/ws` --

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
