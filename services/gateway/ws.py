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

Commands beyond the connection's or the token's rate limit (services/gateway/rate_limits.py) are answered
`error` and counted, never queued; `system_mode abort` is never limited and goes to actuation on the
bus's abort connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi import FastAPI, WebSocket
from starlette.websockets import WebSocketDisconnect

from services.common import topics
from services.common.codec import WireFormatError, unpack_map
from services.common.logs import Throttled
from services.common.metrics import counters
from services.common.rpc import RpcError, RpcTimeout
from services.common.settings import Settings
from services.gateway import legacy
from services.gateway.auth import Auth, Identity
from services.gateway.bus import Bus
from services.gateway.hub import Client, Frame, Hub, encode_json, encode_msgpack
from services.gateway.problems import stand_problems
from services.gateway.rate_limits import CommandLimits

log = logging.getLogger("rcs.gateway.ws")

AUTH_GRACE_S = 5.0
PROBLEMS_EVERY_S = 0.5  # how often the ticker looks for a change in what is wrong
POLICY_VIOLATION = 1008
SYSTEM_MODES = {"arm": "arm", "disarm": "disarm", "abort": "abort"}
SOURCE_MODES = {"simulation": "emulator", "real": "stm32"}
PUSHED_STATES = {
    topics.TELEMETRY_META: "telemetry_meta",
    topics.STATE_SYSTEM: "system_state",
    topics.STATE_MOTORS: "motor_state",
    topics.STATE_STM32: "stm32_state",
}


class BadMessageError(ValueError):
    """A client message that is not understood; the text goes back in an `error`."""


def decode_message(raw: str | bytes) -> dict[str, Any]:
    """A client message (JSON text or MessagePack binary) as a map with a string `type`."""
    if isinstance(raw, str):
        try:
            message = json.loads(raw)
        except ValueError as exc:
            raise BadMessageError(f"not JSON: {exc}") from exc
    else:
        try:
            message = unpack_map(raw)
        except WireFormatError as exc:
            raise BadMessageError(str(exc)) from exc
    if not isinstance(message, dict):
        raise BadMessageError(f"expected a map with a 'type', got {type(message).__name__}")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise BadMessageError("missing 'type'")
    return message


def _number(message: dict[str, Any], key: str) -> float:
    value = message.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadMessageError(f"'{key}' must be a finite number")
    return float(value)


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
class _Gateway:
    app: FastAPI
    bus: Bus
    auth: Auth
    settings: Settings
    hub: Hub
    limits: CommandLimits
    ticker: asyncio.Task[None] | None = None
    valve_bits: str | None = None
    problems_frame: str | None = None  # the last `problems` pushed
    stats: WebSocketStats = field(default_factory=WebSocketStats)
    problems: Throttled = field(default_factory=lambda: Throttled(log))

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

    # -- one connection --------------------------------------------------------------------------

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
            await self._refuse(
                websocket, "authentication required: a valid token (?token= or an auth message)"
            )
            return
        self.stats.connections += 1
        await Connection(self, websocket, identity).run()

    async def _first_message_auth(self, websocket: WebSocket) -> Identity | None:
        try:
            raw = await asyncio.wait_for(_receive(websocket), AUTH_GRACE_S)
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
            await _send(
                websocket, {"type": "authenticated", "name": identity.name, "role": identity.role}, raw
            )
        return identity

    async def _refuse(self, websocket: WebSocket, reason: str) -> None:
        with contextlib.suppress(Exception):
            await websocket.send_text(encode_json({"type": "error", "data": reason}))
            await websocket.close(code=POLICY_VIOLATION, reason="authentication required")


async def _receive(websocket: WebSocket) -> str | bytes | None:
    """The next data message, None when the client went away."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        return None
    text = message.get("text")
    if text is not None:
        return str(text)
    return bytes(message.get("bytes") or b"")


async def _send(websocket: WebSocket, message: dict[str, Any], like: str | bytes) -> None:
    if isinstance(like, bytes):
        await websocket.send_bytes(encode_msgpack(message))
    else:
        await websocket.send_text(encode_json(message))


class Connection:
    def __init__(self, gateway: _Gateway, websocket: WebSocket, identity: Identity) -> None:
        self.gateway = gateway
        self.websocket = websocket
        self.identity = identity
        peer = websocket.client
        self.origin = f"gateway ws {peer.host}:{peer.port}" if peer else "gateway ws"
        self.client = Client(
            self._send_frame, limit=gateway.settings.gateway.client_queue_frames, name=self.origin
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self.bucket = gateway.limits.connection_bucket()

    async def _send_frame(self, frame: Frame) -> None:
        if isinstance(frame, bytes):
            await self.websocket.send_bytes(frame)
        else:
            await self.websocket.send_text(frame)

    def reply(self, message: dict[str, Any], like: str | bytes) -> None:
        self.client.push_control(encode_msgpack(message) if isinstance(like, bytes) else encode_json(message))

    def error(self, text: str, like: str | bytes) -> None:
        self.reply({"type": "error", "data": text}, like)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self) -> None:
        gateway, hub, bus = self.gateway, self.gateway.hub, self.gateway.bus
        hub.add(self.client)
        bus.websocket_connections += 1
        if gateway.ticker is None or gateway.ticker.done():
            gateway.ticker = asyncio.create_task(gateway.tick())
        for frame in gateway.current_states():
            self.client.push_control(frame)
        sender = asyncio.create_task(self.client.run())
        sender.add_done_callback(self._sender_done)
        try:
            while True:
                raw = await _receive(self.websocket)
                if raw is None:
                    break
                try:
                    self.handle(decode_message(raw), raw)
                except BadMessageError as exc:
                    gateway.stats.bad_messages += 1
                    gateway.problems.warning(
                        "bad-message", "answered a bad WebSocket message from %s: %s", self.origin, exc
                    )
                    self.error(str(exc), raw)
                # Messages already buffered are received without suspending: yield, so that one
                # client's flood never holds up other connections (an abort on another one).
                await asyncio.sleep(0)
        except WebSocketDisconnect:
            pass
        finally:
            hub.remove(self.client)
            bus.websocket_connections -= 1
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    def _sender_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        if task.exception() is not None or self.client.overflowed:
            # the connection broke while sending, or the client let control messages pile up
            if self.client.overflowed:
                self.gateway.stats.closed_slow += 1
            self.spawn(self._close())

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await self.websocket.close(code=POLICY_VIOLATION, reason="too slow")

    def require_operator(self, like: str | bytes) -> bool:
        if self.gateway.auth.allows(self.identity, "operator"):
            return True
        self.gateway.stats.role_refused += 1
        self.error("operator role required", like)
        return False

    def admit(self, like: str | bytes) -> bool:
        """The command is within this connection's and this token's rate limits; else `error`."""
        refused = self.gateway.limits.admit(self.identity.name, self.bucket)
        if refused is None:
            return True
        self.gateway.stats.rate_limited += 1
        self.gateway.problems.warning(
            f"limited:{self.origin}", "refused a WebSocket command from %s: %s", self.origin, refused
        )
        self.error(refused, like)
        return False

    def command_allowed(self, like: str | bytes) -> bool:
        return self.require_operator(like) and self.admit(like)

    @property
    def who(self) -> dict[str, str]:
        return {"who": self.identity.name, "origin": self.origin}

    def handle(self, message: dict[str, Any], raw: str | bytes) -> None:
        kind = message["type"]
        if kind == "get_sensors":
            self.client.push_control(self.gateway.sensor_data_frame())
        elif kind == "subscribe":
            self.subscribe(message, raw)
        elif kind == "heartbeat":
            if self.require_operator(raw):
                self.gateway.bus.heartbeat(self.identity.name)
        elif kind == "auth":
            token = message.get("token")
            identity = self.gateway.auth.identify(token if isinstance(token, str) else None)
            if identity is None:
                raise BadMessageError("invalid token")
            self.identity = identity
            self.reply({"type": "authenticated", "name": identity.name, "role": identity.role}, raw)
        elif kind == "valve_command":
            valves = message.get("valves")
            if not isinstance(valves, list | str):
                raise BadMessageError("'valves' must be a list of 0/1 (or a string of digits)")
            if self.command_allowed(raw):
                self.spawn(self.valve_command(valves, raw))
        elif kind == "step_motor_command":
            motor_id, angle = message.get("motor_id"), _number(message, "angle")
            if isinstance(motor_id, bool) or not isinstance(motor_id, int):
                raise BadMessageError("'motor_id' must be an integer")
            if self.command_allowed(raw):
                self.spawn(self.step_motor_command(motor_id, angle, raw))
        elif kind == "system_mode":
            mode = message.get("mode")
            if mode not in SYSTEM_MODES and mode not in SOURCE_MODES:
                raise BadMessageError(f"'mode' must be one of {sorted({*SYSTEM_MODES, *SOURCE_MODES})}")
            limited = mode in ("arm", "disarm")  # abort never; the source modes command nothing
            if self.require_operator(raw) and (not limited or self.admit(raw)):
                self.spawn(self.system_mode(str(mode), raw))
        else:
            raise BadMessageError("unknown message type (see docs/protocol.md, Gateway WebSocket)")

    def subscribe(self, message: dict[str, Any], raw: str | bytes) -> None:
        hub, mode = self.gateway.hub, message.get("mode", "full")
        wants = message.get("sensor_data")
        if wants is not None and not isinstance(wants, bool):
            raise BadMessageError("'sensor_data' must be true or false")
        if mode == "full":
            channels = self._channels(message)
            hub.subscribe_full(self.client, channels)
            answer: dict[str, Any] = {"mode": "full", "channels": channels, "max_hz": None}
        elif mode == "display":
            channels = self._channels(message)
            max_hz = _number(message, "max_hz") if "max_hz" in message else self.gateway.hub.display_max_hz
            if max_hz <= 0:
                raise BadMessageError("'max_hz' must be positive")
            granted = hub.subscribe_display(self.client, channels, max_hz)
            answer = {"mode": "display", "channels": channels, "max_hz": granted}
        elif mode == "off":
            hub.unsubscribe(self.client)
            answer = {"mode": "off", "channels": None, "max_hz": None}
        else:
            raise BadMessageError("'mode' must be 'full', 'display' or 'off'")
        if wants is not None:
            self.client.wants_sensor_data = wants
        self.reply({"type": "subscribed", **answer, "sensor_data": self.client.wants_sensor_data}, raw)

    def _channels(self, message: dict[str, Any]) -> list[str] | None:
        """A subscription's `channels`: names known to this stand, or None (absent) for all."""
        channels = message.get("channels")
        if channels is None:
            return None
        if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
            raise BadMessageError("'channels' must be a non-empty list of channel names")
        known = self.gateway.settings.channel_names
        unknown = sum(1 for c in channels if c not in known)
        if unknown:  # the names asked are not repeated: they may be anything
            raise BadMessageError(f"{unknown} unknown channels; this stand has {', '.join(known)}")
        return channels

    async def valve_command(self, valves: list[Any] | str, raw: str | bytes) -> None:
        """Answered with the valves as the STM32 last acknowledged them, whatever the outcome: the
        existing frontend shows `valves` as the stand's state (never the refused pattern)."""
        try:
            result = await self.gateway.bus.call(topics.actuation("valves"), {"valves": valves, **self.who})
        except (RpcError, RpcTimeout) as exc:
            reason = str(exc) if isinstance(exc, RpcError) else f"actuation did not answer: {exc}"
            acknowledged = (self.gateway.bus.latest(topics.STATE_VALVES) or {}).get("valves")
            self.reply(
                {"type": "valve_response", "success": False, "valves": acknowledged, "reason": reason}, raw
            )
            return
        self.reply({"type": "valve_response", "success": True, "valves": result.get("valves")}, raw)

    async def step_motor_command(self, motor_id: int, angle: float, raw: str | bytes) -> None:
        motors = self.gateway.settings.motors
        # actuation answers when the move has completed: allow for the move itself
        timeout = min(
            self.gateway.settings.gateway.command_timeout_s
            + abs(angle) / motors.speed_deg_s
            + motors.timeout_margin_s,
            60.0,
        )
        answer: dict[str, Any] = {"type": "step_motor_response", "motor_id": motor_id, "angle": angle}
        try:
            result = await self.gateway.bus.call(
                topics.actuation("motor"), {"motor_id": motor_id, "angle": angle, **self.who}, timeout=timeout
            )
        except (RpcError, RpcTimeout) as exc:
            reason = str(exc) if isinstance(exc, RpcError) else f"actuation did not answer: {exc}"
            self.reply({**answer, "success": False, "response": reason}, raw)
            return
        self.reply(
            {
                **answer,
                "success": bool(result.get("ok", True)),
                "response": result.get("response"),
                "position_deg": result.get("position_deg"),
            },
            raw,
        )

    async def system_mode(self, mode: str, raw: str | bytes) -> None:
        answer: dict[str, Any] = {"type": "system_mode_response", "mode": mode}
        if mode in SOURCE_MODES:
            meta = self.gateway.bus.latest(topics.TELEMETRY_META) or {}
            source = meta.get("source") or {}
            kind = source.get("kind") if isinstance(source, dict) else None
            if kind == SOURCE_MODES[mode]:
                self.reply({**answer, "success": True, "source": kind}, raw)
            else:
                reason = (
                    f"the data source is {kind!r}; it is chosen when acquisition starts "
                    "(RCS_STM32_PORT: the STM32 or the emulator's link), not switched at run time"
                )
                self.reply({**answer, "success": False, "source": kind, "reason": reason}, raw)
            return
        try:
            body: dict[str, Any] = {**self.who}
            if mode == "abort":
                body["reason"] = f"abort from {self.identity.name} ({self.origin})"
                result = await self.gateway.bus.abort(body)
            else:
                result = await self.gateway.bus.call(topics.actuation(SYSTEM_MODES[mode]), body)
        except (RpcError, RpcTimeout) as exc:
            reason = str(exc) if isinstance(exc, RpcError) else f"actuation did not answer: {exc}"
            self.reply({**answer, "success": False, "reason": reason}, raw)
            return
        self.reply({**answer, "success": True, "state": result.get("state")}, raw)


def _origin_allowed(origin: str, websocket: WebSocket, allowed: tuple[str, ...]) -> bool:
    """As CORS decides (`*` allows any), or the page came from this gateway (`Origin` names the host
    the browser connected to)."""
    if "*" in allowed or origin in allowed:
        return True
    host = websocket.headers.get("host")
    return host is not None and origin in (f"http://{host}", f"https://{host}")


def register_websocket(
    app: FastAPI, bus: Bus, auth: Auth, settings: Settings, *, limits: CommandLimits | None = None
) -> Callable[[], dict[str, float]]:
    """Add `/ws` to `app`, fed by `bus` (call before the bus starts delivering; once per app).
    `limits`: the per-token limits shared with the REST API (default: the WebSocket's own).
    Returns what reads its counters for /metrics (on the event loop)."""
    gateway = _Gateway(
        app,
        bus,
        auth,
        settings,
        Hub(display_max_hz=settings.gateway.display_max_hz),
        limits or CommandLimits(settings.gateway),
    )
    app.state.ws_hub = gateway.hub
    app.state.ws_stats = gateway.stats
    bus.add_telemetry_listener(gateway.hub.on_telemetry)
    bus.add_message_listener(gateway.on_message)

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket) -> None:
        await gateway.serve(websocket)

    def metrics() -> dict[str, float]:
        hub = gateway.hub
        return {
            **counters(gateway.stats, "ws"),
            "ws_dropped_frames_total": float(hub.dropped_frames),
            "ws_telemetry_batches_total": float(hub.batches),
        }

    return metrics
