"""What the REST routes share, as FastAPI dependencies: the gateway's parts and the caller's identity.

`create_app` puts one `Gateway` in `app.state.gateway`; a route asks for it with `GatewayDep` and for
the caller with `Viewer` or `Operator` (401 without or with an unknown token, 403 for a viewer on a
command).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry

from services.common import topics
from services.common.logs import Throttled
from services.common.settings import Settings
from services.gateway.auth import Auth, Identity, Role
from services.gateway.bus import Bus
from services.gateway.calls import REFUSED, CallFailedError, call_service
from services.gateway.limits import ReadSlots
from services.gateway.rate_limits import CommandLimits

_bearer = HTTPBearer(auto_error=False, description="viewer or operator token")


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


@dataclass
class Gateway:
    """The parts every route may use; one per app."""

    settings: Settings
    bus: Bus
    auth: Auth
    limits: CommandLimits  # per token, shared with the WebSocket
    heavy: ReadSlots  # reads whose answers are large
    problems: Throttled  # logged once per kind and interval
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    stats: GatewayStats = field(default_factory=GatewayStats)

    async def call(
        self, service: str, topic: str, body: dict[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]:
        """The service's result, or the HTTP error that says why there is none (counted)."""
        try:
            return await call_service(self.bus, service, topic, body, timeout=timeout)
        except CallFailedError as exc:
            if exc.status == REFUSED:
                self.stats.refused += 1
            else:
                self.stats.unanswered += 1
            raise HTTPException(exc.status, exc.reason) from exc

    async def command(
        self,
        service: str,
        topic: str,
        identity: Identity,
        request: Request,
        body: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """`call` for a command: within the caller's rate limit (abort: always), audited with who and
        from where."""
        self.stats.commands += 1
        if topic != topics.actuation("abort"):
            refused = self.limits.admit(identity.name)
            if refused is not None:
                self.stats.rate_limited += 1
                self.problems.warning(
                    f"limited:{identity.name}", "refused a command of %s: %s", identity.name, refused
                )
                raise HTTPException(429, refused, headers={"Retry-After": "1"})
        audit = {"who": identity.name, "origin": _origin(request)}
        return await self.call(service, topic, {**(body or {}), **audit}, timeout=timeout)


async def _gateway(request: Request) -> Gateway:
    """A coroutine, as every dependency here: FastAPI runs a plain function in its thread pool, a
    round trip through another thread (and the GIL) before every route, an abort's included."""
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(_gateway)]


def invalid(where: str, field: str, message: str) -> RequestValidationError:
    """A 422 (answered `detail: "<where>.<field>: <message>"`), for checks a model cannot make."""
    return RequestValidationError([{"loc": (where, field), "msg": message, "type": "value_error"}])


def _origin(request: Request) -> str:
    return f"gateway {request.client.host if request.client else 'unknown'}"


def _require(role: Role) -> Callable[..., Awaitable[Identity]]:
    """A dependency giving the caller's identity if its token allows `role`."""

    async def dependency(
        gateway: GatewayDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Identity:
        identity = gateway.auth.identify(credentials.credentials if credentials else None)
        if identity is None:
            gateway.stats.unauthorized += 1
            raise HTTPException(401, "missing or unknown token", headers={"WWW-Authenticate": "Bearer"})
        if not gateway.auth.allows(identity, role):
            gateway.stats.forbidden += 1
            raise HTTPException(403, f"{role} token needed")
        return identity

    return dependency


Viewer = Annotated[Identity, Depends(_require("viewer"))]
Operator = Annotated[Identity, Depends(_require("operator"))]
