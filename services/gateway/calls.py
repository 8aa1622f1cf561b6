"""Calling a service over the bus, for REST and WebSocket alike: its result, or one typed failure.

A failure carries the one line that says why and the HTTP status that goes with it: 409 when the
service refused (its rule's reason), 503 when there is no answer (the broker is unreachable, the
service is offline, or it did not answer in time: the outcome is then unknown).
"""

from __future__ import annotations

from typing import Any

from services.common import topics
from services.common.rpc import RpcError, RpcTimeout
from services.common.settings import Settings
from services.gateway.bus import Bus

REFUSED = 409
UNANSWERED = 503
MAX_MOTOR_WAIT_S = 60.0  # below the RPC's own bound on deadlines (services/common/rpc.py)


class CallFailedError(Exception):
    """No result: `reason` (one line) and the HTTP `status` that says why (REFUSED, UNANSWERED)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def call_service(
    bus: Bus,
    service: str,
    topic: str,
    body: dict[str, Any],
    *,
    timeout: float | None = None,
    sent: float | None = None,
) -> dict[str, Any]:
    """The service's result; raises CallFailedError. An abort goes on the bus's abort connection.
    `sent` (UNIX s): when the command was issued, if before now (see RpcClient.request)."""
    abort = topic == topics.actuation("abort")
    if not (bus.abort_connected if abort else bus.connected):
        raise CallFailedError(UNANSWERED, "the gateway is not connected to the MQTT broker")
    status = bus.latest(topics.status(service))
    if status is not None and status.get("state") == "offline":
        raise CallFailedError(UNANSWERED, f"{service} is offline ({status.get('reason', 'no reason given')})")
    wait = bus.settings.gateway.command_timeout_s if timeout is None else timeout
    try:
        if abort:  # its own connection: nothing queued for other requests delays it
            return await bus.abort(body, timeout=wait)
        return await bus.call(topic, body, timeout=wait, sent=sent)
    except RpcError as exc:
        raise CallFailedError(REFUSED, str(exc)) from exc
    except RpcTimeout as exc:
        raise CallFailedError(
            UNANSWERED, f"no answer from {service} within {wait:g} s (is it running?); the outcome is unknown"
        ) from exc


def motor_timeout_s(settings: Settings, angle_deg: float) -> float:
    """How long to wait for actuation's answer to a relative move: it answers once the move is done."""
    return min(settings.gateway.command_timeout_s + settings.motors.move_time_s(angle_deg), MAX_MOTOR_WAIT_S)
