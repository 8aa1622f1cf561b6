"""The `/ws` WebSocket endpoint: the existing frontend's messages plus subscriptions and heartbeats.

Messages are specified in docs/protocol.md ("Gateway WebSocket"): the existing frontend's
(`get_sensors`, `valve_command`, `step_motor_command`, `system_mode` → `sensor_data`,
`valve_response`, `valve_state`, `step_motor_response`, `error`) plus `auth`, `subscribe`
(`sensor_batch` / `sensor_display` streams) and `heartbeat`, and state pushes as they happen,
including `problems` (what is wrong with the stand, services/gateway/problems.py) when it changes.

Security: a browser's `Origin` must be one of `gateway.cors_origins` (`*`: any, as for CORS) or the
gateway's own (the dashboard page at `/`; else HTTP 403 before the upgrade); no `Origin` (programs) is
accepted. A message over `gateway.max_ws_message_bytes` closes the connection (1009, by uvicorn). With
auth on, the token comes from `?token=` or a first `auth` message within AUTH_GRACE_S; without a
valid one the client gets `error` and is closed (1008).

What one connection does once in: services/gateway/ws_connection.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi import FastAPI, WebSocket
from starlette.websockets import WebSocketDisconnect

from services.common import topics
from services.common.logs import Throttled
from services.common.metrics import counters
from services.common.settings import Settings
from services.gateway import legacy
from services.gateway.auth import Auth, Identity
from services.gateway.bus import Bus
from services.gateway.hub import Client, Hub, encode_json, encode_msgpack
from services.gateway.problems import stand_problems
from services.gateway.rate_limits import CommandLimits
from services.gateway.ws_connection import POLICY_VIOLATION, Connection
from services.gateway.ws_messages import BadMessageError, decode_message, encode_like, receive, send

log = logging.getLogger("rcs.gateway.ws")

AUTH_GRACE_S = 5.0
PROBLEMS_EVERY_S = 0.5  # how often the ticker looks for a change in what is wrong
PUSHED_STATES = {
    topics.TELEMETRY_META: "telemetry_meta",
    topics.STATE_SYSTEM: "system_state",
    topics.STATE_MOTORS: "motor_state",
    topics.STATE_STM32: "stm32_state",
    topics.STATE_ALARMS: "alarms",
    topics.STATE_RUN: "run_state",
}


@dataclass
class WebSocketStats:
    connections: int = 0  # accepted and authenticated
    auth_refused: int = 0  # no valid token: closed 1008
    origin_refused: int = 0  # a browser page from an origin not allowed: HTTP 403
    bad_messages: int = 0  # malformed or not understood: answered `error`
    role_refused: int = 0  # a viewer's command: answered `error`
    closed_slow: int = 0  # let answers and pushes pile up unread: closed 1008
    rate_limited: int = 0  # commands beyond the connection's or token's rate limit: answered `error`


@dataclass
class WebSocketEndpoint:
    """`/ws`'s state: its clients (`hub`), counters, and what it pushes to every client.

    `limits` are the per-token command limits, shared with the REST API. `attach` adds the route to
    an app and feeds the hub from the bus (before the bus starts delivering; once).
    """

    bus: Bus
    auth: Auth
    settings: Settings
    limits: CommandLimits
    hub: Hub = field(init=False)
    stats: WebSocketStats = field(default_factory=WebSocketStats)
    problems: Throttled = field(default_factory=lambda: Throttled(log))
    ticker: asyncio.Task[None] | None = None
    valve_bits: str | None = None
    problems_frame: str | None = None  # the last `problems` pushed

    def __post_init__(self) -> None:
        self.hub = Hub(display_max_hz=self.settings.gateway.display_max_hz)

    def attach(self, app: FastAPI) -> None:
        self.bus.add_telemetry_listener(self.hub.on_telemetry)
        self.bus.add_message_listener(self.on_message)
        app.add_api_websocket_route("/ws", self.serve)

    def metrics(self) -> dict[str, float]:
        """The counters for /metrics (read on the event loop)."""
        return {
            **counters(self.stats, "ws"),
            "ws_dropped_frames_total": float(self.hub.dropped_frames),
            "ws_telemetry_batches_total": float(self.hub.batches),
        }

    # -- clients ---------------------------------------------------------------------------------

    def join(self, client: Client) -> None:
        """A new client: counted, sent the current states, and the ticker running."""
        self.hub.add(client)
        self.bus.websocket_connections += 1
        if self.ticker is None or self.ticker.done():
            self.ticker = asyncio.create_task(self.tick())
        for frame in self.current_states():
            client.push_control(frame)

    def leave(self, client: Client) -> None:
        self.hub.remove(client)
        self.bus.websocket_connections -= 1

    # -- pushes (event loop) ---------------------------------------------------------------------

    def sensor_data_frame(self) -> bytes:
        sample = self.bus.latest_sample()
        data = legacy.sensor_data((), None, []) if sample is None else legacy.sensor_data(*sample)
        return encode_msgpack({"type": "sensor_data", "data": data})

    async def tick(self) -> None:
        """`sensor_data` to every client at the screen rate, while there are clients."""
        loop = asyncio.get_running_loop()
        period = 1.0 / self.settings.gateway.sensor_rate_hz
        due = loop.time()
        last_t: float | None = None
        problems_due = due
        while self.hub.clients:
            if loop.time() >= problems_due:
                problems_due = loop.time() + PROBLEMS_EVERY_S
                problems = self.problems_message()
                if problems != self.problems_frame:
                    self.problems_frame = problems
                    self.hub.broadcast_control(problems)
            sample = self.bus.latest_sample()
            if sample is not None and sample[1] != last_t:
                last_t = sample[1]
                frame = encode_msgpack({"type": "sensor_data", "data": legacy.sensor_data(*sample)})
                for client in self.hub.clients:
                    if client.wants_sensor_data:
                        client.push(frame)
            due = max(due + period, loop.time())
            await asyncio.sleep(due - loop.time())

    def problems_message(self) -> str:
        found = stand_problems(self.bus, self.settings.gateway.stale_after_s)
        return encode_json({"type": "problems", "problems": [asdict(p) for p in found]})

    def state_message(self, topic: str, message: dict[str, Any]) -> dict[str, Any] | None:
        if topic == topics.STATE_VALVES:
            return {
                "type": "valve_state",
                **{k: message.get(k) for k in ("valves", "bits", "names", "open", "cause", "ts")},
            }
        if topic in PUSHED_STATES:
            return {"type": PUSHED_STATES[topic], "data": message}
        if topic.startswith("rcs/status/"):
            return {"type": "service_status", "service": topic.rsplit("/", 1)[1], "data": message}
        if topics.is_event(topic):
            return {"type": "event", "data": message}
        return None

    def on_message(self, topic: str, message: dict[str, Any]) -> None:
        if topic == topics.STATE_VALVES:
            bits = message.get("bits")
            if bits == self.valve_bits:
                return  # republished, not changed
            self.valve_bits = bits if isinstance(bits, str) else None
        pushed = self.state_message(topic, message)
        if pushed is not None and self.hub.clients:
            self.hub.broadcast_control(encode_json(pushed))

    def current_states(self) -> list[str]:
        frames = []
        for topic in (topics.STATE_VALVES, *PUSHED_STATES):
            message = self.bus.latest(topic)
            pushed = None if message is None else self.state_message(topic, message)
            if pushed is not None:
                frames.append(encode_json(pushed))
        frames.append(self.problems_message())
        return frames

    # -- one connection: origin and token checked, then its Connection runs ---------------------

    async def serve(self, websocket: WebSocket) -> None:
        origin = websocket.headers.get("origin")
        if origin is not None and not _origin_allowed(origin, websocket, self.settings.gateway.cors_origins):
            self.stats.origin_refused += 1
            self.problems.warning("origin", "refused a WebSocket from origin %.200r", origin)
            await websocket.close(code=POLICY_VIOLATION)  # before accept: HTTP 403
            return
        await websocket.accept()
        token = websocket.query_params.get("token")
        identity = self.auth.identify(token)
        if identity is None and token is None:
            identity = await self._first_message_auth(websocket)
        if identity is None or not self.auth.allows(identity, "viewer"):
            self.stats.auth_refused += 1
            await _refuse(websocket, "authentication required: a valid token (?token= or an auth message)")
            return
        self.stats.connections += 1
        await Connection(self, websocket, identity).run()

    async def _first_message_auth(self, websocket: WebSocket) -> Identity | None:
        try:
            raw = await asyncio.wait_for(receive(websocket), AUTH_GRACE_S)
        except (TimeoutError, WebSocketDisconnect):
            return None
        if raw is None:
            return None
        try:
            message = decode_message(raw)
        except BadMessageError:
            return None
        if message["type"] != "auth" or not isinstance(message.get("token"), str):
            return None
        identity = self.auth.identify(message["token"])
        if identity is not None:
            answer = {"type": "authenticated", "name": identity.name, "role": identity.role}
            await send(websocket, encode_like(answer, raw))
        return identity


async def _refuse(websocket: WebSocket, reason: str) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_text(encode_json({"type": "error", "data": reason}))
        await websocket.close(code=POLICY_VIOLATION, reason="authentication required")


def _origin_allowed(origin: str, websocket: WebSocket, allowed: tuple[str, ...]) -> bool:
    """As CORS decides (`*` allows any), or the page came from this gateway (`Origin` names the host
    the browser connected to)."""
    if "*" in allowed or origin in allowed:
        return True
    host = websocket.headers.get("host")
    return host is not None and origin in (f"http://{host}", f"https://{host}")
