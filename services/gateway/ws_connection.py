"""One `/ws` connection once authenticated: its messages read in order, each handled by the method
its `type` names (`Connection.HANDLERS`), commands run as tasks and answered when the service did.

Commands beyond the connection's or the token's rate limit are answered `error` and counted, never
queued; `system_mode abort` is never limited and goes to actuation on the bus's abort connection.
While an abort request is in flight (`Bus.abort_answered`), no message is handled (and no more
than the one being handled is read).

A command's `sent` (what an abort supersedes, docs/safety.md §5.2) is when its connection's backlog
began: messages read each less than `QUIET_S` after the gateway asked for the next one were waiting
for it (the client sent them in one go, a flood, or while the gateway was busy), so a command read
after an abort but sent in a backlog that began before it is superseded, as it would have been had
the gateway read it at once. A client's first message after a pause of `QUIET_S` starts a new one.
The handler's tasks inherit it (`BACKLOG_SINCE`, a context variable set before each message).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from services.common import runs, topics
from services.gateway.auth import Identity
from services.gateway.calls import CallFailedError, call_service, motor_timeout_s
from services.gateway.hub import Client
from services.gateway.tare_channels import (
    DEFAULT_SECONDS,
    MAX_SECONDS,
    MIN_SECONDS,
    TARE_WAIT_S,
    tare_channels_problem,
)
from services.gateway.ws_messages import BadMessageError, decode_message, encode_like, number, receive, send

if TYPE_CHECKING:
    from services.gateway.ws import WebSocketEndpoint

POLICY_VIOLATION = 1008
SYSTEM_MODES = {"arm": "arm", "disarm": "disarm", "abort": "abort", "hold": "hold", "resume": "resume"}
SOURCE_MODES = {"simulation": "emulator", "real": "stm32"}
# After a command refused by the rate limits, this connection's next message waits this long: a
# flooding client is still answered, message by message, but slowly enough that the event loop stays
# free for everyone else (an abort on another connection); its surplus waits in its own TCP buffer.
OVER_LIMIT_PAUSE_S = 0.001
QUIET_S = 0.5  # a wait this long for a client's next message ends its backlog (an event loop stalled
# by a flood can be late by 100 ms: that is no pause of the client)
# UNIX s: when the backlog of the message being handled began; tasks spawned for it keep the value
BACKLOG_SINCE: ContextVar[float] = ContextVar("BACKLOG_SINCE")
MAX_REASON = 200  # characters of a hold's reason, as `POST /api/hold`

Handler = Callable[["Connection", dict[str, Any], str | bytes], None]


class Connection:
    def __init__(self, endpoint: WebSocketEndpoint, websocket: WebSocket, identity: Identity) -> None:
        self.endpoint = endpoint
        self.websocket = websocket
        self.identity = identity
        peer = websocket.client
        self.origin = f"gateway ws {peer.host}:{peer.port}" if peer else "gateway ws"
        self.client = Client(
            lambda frame: send(websocket, frame),
            limit=endpoint.settings.gateway.client_queue_frames,
            name=self.origin,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self.bucket = endpoint.limits.connection_bucket()
        self.over_limit = False  # the last command was refused by the rate limits

    def reply(self, message: dict[str, Any], like: str | bytes) -> None:
        self.client.push_control(encode_like(message, like))

    def error(self, text: str, like: str | bytes) -> None:
        self.reply({"type": "error", "data": text}, like)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self) -> None:
        """Until the client goes: its messages handled in order; a bad one answered `error`."""
        endpoint = self.endpoint
        endpoint.join(self.client)
        sender = asyncio.create_task(self.client.run())
        sender.add_done_callback(self._sender_done)
        bus = endpoint.bus
        backlog_since = time.time()
        try:
            while True:
                asked = time.monotonic()
                raw = await receive(self.websocket)
                if raw is None:
                    break
                if time.monotonic() - asked >= QUIET_S:
                    backlog_since = time.time()
                await bus.abort_answered()  # an abort in flight first: this message, and the rest, wait
                BACKLOG_SINCE.set(backlog_since)
                try:
                    self.handle(decode_message(raw), raw)
                except BadMessageError as exc:
                    endpoint.stats.bad_messages += 1
                    endpoint.problems.warning(
                        "bad-message", "answered a bad WebSocket message from %s: %s", self.origin, exc
                    )
                    self.error(str(exc), raw)
                # Messages already buffered are received without suspending: yield, so that one
                # client's flood never holds up other connections (an abort on another one).
                await asyncio.sleep(OVER_LIMIT_PAUSE_S if self.over_limit else 0)
                self.over_limit = False
        except WebSocketDisconnect:
            pass
        finally:
            endpoint.leave(self.client)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    def _sender_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        if task.exception() is not None or self.client.overflowed:
            # the connection broke while sending, or the client let control messages pile up
            if self.client.overflowed:
                self.endpoint.stats.closed_slow += 1
            self.spawn(self._close())

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await self.websocket.close(code=POLICY_VIOLATION, reason="too slow")

    # -- who may do what -------------------------------------------------------------------------

    def require_operator(self, like: str | bytes) -> bool:
        if self.endpoint.auth.allows(self.identity, "operator"):
            return True
        self.endpoint.stats.role_refused += 1
        self.error("operator role required", like)
        return False

    def admit(self, like: str | bytes) -> bool:
        """The command is within this connection's and this token's rate limits; else `error`."""
        refused = self.endpoint.limits.admit(self.identity.name, self.bucket)
        if refused is None:
            return True
        self.over_limit = True
        self.endpoint.stats.rate_limited += 1
        self.endpoint.problems.warning(
            f"limited:{self.origin}", "refused a WebSocket command from %s: %s", self.origin, refused
        )
        self.error(refused, like)
        return False

    def command_allowed(self, like: str | bytes) -> bool:
        return self.require_operator(like) and self.admit(like)

    @property
    def audit(self) -> dict[str, str]:
        """What a command carries into actuation's audit: `who` (the token's name) and `origin`."""
        return {"who": self.identity.name, "origin": self.origin}

    # -- messages --------------------------------------------------------------------------------

    HANDLERS: ClassVar[dict[str, Handler]]  # message type -> method; filled in below the class

    def handle(self, message: dict[str, Any], raw: str | bytes) -> None:
        handler = self.HANDLERS.get(message["type"])
        if handler is None:
            raise BadMessageError("unknown message type (see docs/protocol.md, Gateway WebSocket)")
        handler(self, message, raw)

    def on_get_sensors(self, _message: dict[str, Any], _raw: str | bytes) -> None:
        self.client.push_control(self.endpoint.sensor_data_frame())

    def on_heartbeat(self, _message: dict[str, Any], raw: str | bytes) -> None:
        if self.require_operator(raw):
            self.endpoint.bus.heartbeat(self.identity.name)

    def on_auth(self, message: dict[str, Any], raw: str | bytes) -> None:
        token = message.get("token")
        identity = self.endpoint.auth.identify(token if isinstance(token, str) else None)
        if identity is None:
            raise BadMessageError("invalid token")
        self.identity = identity
        self.reply({"type": "authenticated", "name": identity.name, "role": identity.role}, raw)

    def on_valve_command(self, message: dict[str, Any], raw: str | bytes) -> None:
        """The whole pattern (`valves`), or one valve (`name`, `open`: the rest as it is)."""
        if "name" in message:
            body = self._one_valve(message)
        else:
            valves = message.get("valves")
            if not isinstance(valves, list | str):
                raise BadMessageError("'valves' must be a list of 0/1 (or a string of digits)")
            body = {"valves": valves}
        if self.command_allowed(raw):
            self.spawn(self.valve_command(body, raw))

    def _one_valve(self, message: dict[str, Any]) -> dict[str, Any]:
        name, wanted = message.get("name"), message.get("open")
        names = self.endpoint.settings.valve_names
        if not isinstance(name, str) or name not in names:  # the name is not repeated: it may be anything
            raise BadMessageError(f"'name' must be a valve of this stand: {', '.join(names)}")
        if not isinstance(wanted, bool):
            raise BadMessageError("'open' must be true or false")
        return {"name": name, "open": wanted}

    def on_step_motor_command(self, message: dict[str, Any], raw: str | bytes) -> None:
        """A relative move (`angle`, the existing frontend's) or, instead, an absolute one (`target`)."""
        motor_id = message.get("motor_id")
        if isinstance(motor_id, bool) or not isinstance(motor_id, int):
            raise BadMessageError("'motor_id' must be an integer")
        if ("angle" in message) == ("target" in message):
            raise BadMessageError("give exactly one of 'angle' (relative degrees) or 'target' (absolute)")
        key = "angle" if "angle" in message else "target"
        move = {key: number(message, key)}
        if self.command_allowed(raw):
            self.spawn(self.step_motor_command(motor_id, move, raw))

    def on_system_mode(self, message: dict[str, Any], raw: str | bytes) -> None:
        mode = message.get("mode")
        if mode not in SYSTEM_MODES and mode not in SOURCE_MODES:
            raise BadMessageError(f"'mode' must be one of {sorted({*SYSTEM_MODES, *SOURCE_MODES})}")
        reason = message.get("reason")
        if reason is not None and (not isinstance(reason, str) or not 1 <= len(reason) <= MAX_REASON):
            raise BadMessageError(f"'reason' must be text of 1 to {MAX_REASON} characters")
        limited = mode in ("arm", "disarm", "hold", "resume")  # abort never; source modes command nothing
        if self.require_operator(raw) and (not limited or self.admit(raw)):
            self.spawn(self.system_mode(str(mode), raw, reason))

    def on_sequence(self, message: dict[str, Any], raw: str | bytes) -> None:
        """Start a sequence of the stand by name (as `POST /api/scenario/{name}`; abort: `system_mode`)."""
        settings = self.endpoint.settings
        name = message.get("name")
        startable = [n for n in settings.sequences if n != settings.abort_sequence_name]
        if not isinstance(name, str) or name not in startable:
            raise BadMessageError(f"'name' must be one of {', '.join(startable)} (abort: system_mode abort)")
        if self.command_allowed(raw):
            self.spawn(self.sequence(name, raw))

    async def sequence(self, name: str, raw: str | bytes) -> None:
        answer: dict[str, Any] = {"type": "sequence_response", "name": name}
        try:
            await self._actuation("sequence", {"name": name})
        except CallFailedError as exc:
            self.reply({**answer, "success": False, "reason": exc.reason}, raw)
            return
        self.reply({**answer, "success": True}, raw)

    def on_alarm_ack(self, message: dict[str, Any], raw: str | bytes) -> None:
        alarm_id = message.get("id")
        if isinstance(alarm_id, bool) or not isinstance(alarm_id, int) or not 1 <= alarm_id < 2**31:
            raise BadMessageError("'id' must be an alarm's integer id")
        if self.command_allowed(raw):
            self.spawn(self.alarm_ack(alarm_id, raw))

    async def alarm_ack(self, alarm_id: int, raw: str | bytes) -> None:
        answer: dict[str, Any] = {"type": "alarm_ack_response", "id": alarm_id}
        try:
            await self._actuation("ack", {"id": alarm_id})
        except CallFailedError as exc:
            self.reply({**answer, "success": False, "reason": exc.reason}, raw)
            return
        self.reply({**answer, "success": True}, raw)

    def on_tare(self, message: dict[str, Any], raw: str | bytes) -> None:
        """`tare {channels, seconds?, clear?}`: as `POST /api/tare`; answered `tare_response`."""
        channels = message.get("channels")
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise BadMessageError("'channels' must be a list of channel names")
        problem = tare_channels_problem(self.endpoint.settings, channels[:64])
        if problem is not None or len(channels) > 64:
            raise BadMessageError(f"'channels': {problem or 'at most 64 names'}")
        seconds = number(message, "seconds") if "seconds" in message else DEFAULT_SECONDS
        if not MIN_SECONDS <= seconds <= MAX_SECONDS:
            raise BadMessageError(f"'seconds' must be within {MIN_SECONDS:g} and {MAX_SECONDS:g}")
        clear = message.get("clear", False)
        if not isinstance(clear, bool):
            raise BadMessageError("'clear' must be true or false")
        if self.command_allowed(raw):
            self.spawn(self.tare({"channels": channels, "seconds": seconds, "clear": clear}, raw))

    async def tare(self, body: dict[str, Any], raw: str | bytes) -> None:
        answer: dict[str, Any] = {"type": "tare_response", "channels": body["channels"]}
        try:
            result = await self._actuation("tare", body, timeout=TARE_WAIT_S)
        except CallFailedError as exc:
            self.reply({**answer, "success": False, "reason": exc.reason}, raw)
            return
        done = {"success": True, "cleared": result.get("cleared"), "tare": result.get("tare")}
        self.reply({**answer, **done}, raw)

    def on_checklist(self, _message: dict[str, Any], raw: str | bytes) -> None:
        """`checklist` (viewer): answered `checklist_response {success, ok, items, ts}`."""
        self.spawn(self.checklist(raw))

    async def checklist(self, raw: str | bytes) -> None:
        try:
            result = await call_service(self.endpoint.bus, "actuation", topics.actuation("checklist"), {})
        except CallFailedError as exc:
            self.reply({"type": "checklist_response", "success": False, "reason": exc.reason}, raw)
            return
        self.reply({"type": "checklist_response", "success": True, **result}, raw)

    def on_run_start(self, message: dict[str, Any], raw: str | bytes) -> None:
        name, notes = message.get("name"), message.get("notes", "")
        if not isinstance(name, str) or not name.strip() or len(name) > runs.NAME_CHARS:
            raise BadMessageError(f"'name' must be a non-empty text of at most {runs.NAME_CHARS} characters")
        if not isinstance(notes, str) or len(notes) > runs.NOTES_CHARS:
            raise BadMessageError(f"'notes' must be a text of at most {runs.NOTES_CHARS} characters")
        if self.command_allowed(raw):
            self.spawn(self.run_command("run_start", {"name": name, "notes": notes}, raw))

    def on_run_stop(self, message: dict[str, Any], raw: str | bytes) -> None:
        run_id = message.get("id")
        if run_id is not None and not runs.valid_id(run_id):
            raise BadMessageError("'id' must be a run id (e.g. 20261202T014501Z-hotfire), or absent")
        if self.command_allowed(raw):
            self.spawn(self.run_command("run_stop", {} if run_id is None else {"id": run_id}, raw))

    async def run_command(self, command: str, body: dict[str, Any], raw: str | bytes) -> None:
        answer: dict[str, Any] = {"type": "run_response", "command": command}
        try:
            result = await self._actuation(command, body)
        except CallFailedError as exc:
            self.reply({**answer, "success": False, "reason": exc.reason}, raw)
            return
        self.reply({**answer, "success": True, "run": result.get("run")}, raw)

    def on_subscribe(self, message: dict[str, Any], raw: str | bytes) -> None:
        hub, mode = self.endpoint.hub, message.get("mode", "full")
        wants = message.get("sensor_data")
        if wants is not None and not isinstance(wants, bool):
            raise BadMessageError("'sensor_data' must be true or false")
        if mode == "full":
            channels = self._channels(message)
            hub.subscribe_full(self.client, channels)
            answer: dict[str, Any] = {"mode": "full", "channels": channels, "max_hz": None}
        elif mode == "display":
            channels = self._channels(message)
            max_hz = number(message, "max_hz") if "max_hz" in message else hub.display_max_hz
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
        known = self.endpoint.settings.channel_names
        unknown = sum(1 for c in channels if c not in known)
        if unknown:  # the names asked are not repeated: they may be anything
            raise BadMessageError(f"{unknown} unknown channels; this stand has {', '.join(known)}")
        return channels

    # -- commands (tasks) ------------------------------------------------------------------------

    async def _actuation(
        self, command: str, body: dict[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]:
        """actuation's result for `command`, audited as this connection's; raises CallFailedError.
        Sent when the backlog of the message asking for it began (`BACKLOG_SINCE`)."""
        return await call_service(
            self.endpoint.bus,
            "actuation",
            topics.actuation(command),
            {**body, **self.audit},
            timeout=timeout,
            sent=BACKLOG_SINCE.get(),
        )

    async def valve_command(self, body: dict[str, Any], raw: str | bytes) -> None:
        """Answered with the valves as the STM32 last acknowledged them, whatever the outcome: the
        existing frontend shows `valves` as the stand's state (never the refused pattern). A one-valve
        command's answer repeats its `name` and `open`."""
        answer: dict[str, Any] = {"type": "valve_response"}
        if "name" in body:
            answer |= {"name": body["name"], "open": body["open"]}
        try:
            result = await self._actuation("valve" if "name" in body else "valves", body)
        except CallFailedError as exc:
            acknowledged = (self.endpoint.bus.latest(topics.STATE_VALVES) or {}).get("valves")
            self.reply({**answer, "success": False, "valves": acknowledged, "reason": exc.reason}, raw)
            return
        self.reply({**answer, "success": True, "valves": result.get("valves")}, raw)

    async def step_motor_command(self, motor_id: int, move: dict[str, float], raw: str | bytes) -> None:
        """`move` is `{angle}` (relative) or `{target}` (absolute); the answer echoes it."""
        answer: dict[str, Any] = {"type": "step_motor_response", "motor_id": motor_id, **move}
        try:
            result = await self._actuation(
                "motor",
                {"motor_id": motor_id, **move},
                timeout=motor_timeout_s(self.endpoint.settings, self._travel_deg(motor_id, move)),
            )
        except CallFailedError as exc:
            self.reply({**answer, "success": False, "response": exc.reason}, raw)
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

    def _travel_deg(self, motor_id: int, move: dict[str, float]) -> float:
        """How far the move goes: the angle, or from the motor's last known position to the target
        (the full travel when it is unknown)."""
        if "angle" in move:
            return move["angle"]
        motors = (self.endpoint.bus.latest(topics.STATE_MOTORS) or {}).get("motors") or []
        known = [m.get("position_deg") for m in motors if isinstance(m, dict) and m.get("id") == motor_id]
        if known and isinstance(known[0], int | float) and not isinstance(known[0], bool):
            return move["target"] - float(known[0])
        return 2 * self.endpoint.settings.motors.limit_deg

    async def system_mode(self, mode: str, raw: str | bytes, reason: str | None = None) -> None:
        answer: dict[str, Any] = {"type": "system_mode_response", "mode": mode}
        if mode in SOURCE_MODES:
            self.reply({**answer, **self._source(mode)}, raw)
            return
        body: dict[str, Any] = {}
        if mode == "abort":
            body["reason"] = f"abort from {self.identity.name} ({self.origin})"
        elif mode == "hold":
            body["reason"] = reason or f"hold from {self.identity.name} ({self.origin})"
        try:
            result = await self._actuation(SYSTEM_MODES[mode], body)
        except CallFailedError as exc:
            self.reply({**answer, "success": False, "reason": exc.reason}, raw)
            return
        self.reply({**answer, "success": True, "state": result.get("state")}, raw)

    def _source(self, mode: str) -> dict[str, Any]:
        """The answer to a source mode: the data source is chosen at start, never switched here."""
        meta = self.endpoint.bus.latest(topics.TELEMETRY_META) or {}
        source = meta.get("source") or {}
        kind = source.get("kind") if isinstance(source, dict) else None
        if kind == SOURCE_MODES[mode]:
            return {"success": True, "source": kind}
        reason = (
            f"the data source is {kind!r}; it is chosen when acquisition starts "
            "(RCS_STM32_PORT: the STM32 or the emulator's link), not switched at run time"
        )
        return {"success": False, "source": kind, "reason": reason}


Connection.HANDLERS = {
    "get_sensors": Connection.on_get_sensors,
    "subscribe": Connection.on_subscribe,
    "heartbeat": Connection.on_heartbeat,
    "auth": Connection.on_auth,
    "valve_command": Connection.on_valve_command,
    "step_motor_command": Connection.on_step_motor_command,
    "system_mode": Connection.on_system_mode,
    "alarm_ack": Connection.on_alarm_ack,
    "sequence": Connection.on_sequence,
    "tare": Connection.on_tare,
    "checklist": Connection.on_checklist,
    "run_start": Connection.on_run_start,
    "run_stop": Connection.on_run_stop,
}
