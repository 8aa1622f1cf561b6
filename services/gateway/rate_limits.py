"""Command rate limits: a token bucket per WebSocket connection and one per token (identity).

A command is admitted only when both its connection's bucket (WebSocket) and its identity's bucket
(shared by every REST request and WebSocket connection with that token) hold a token; a refused
command takes none. Abort is never limited: it does not come here. Everything runs on the event
loop, so nothing here locks.
"""

from __future__ import annotations

import time

from services.common.settings import GatewaySettings


class TokenBucket:
    """`burst` commands at once, then `rate_per_s` on average."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self._tokens = self.burst
        self._updated = time.monotonic()

    def available(self, now: float) -> float:
        """Refill for the time passed since the last look; the tokens held now."""
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate_per_s)
        self._updated = now
        return self._tokens

    def take(self) -> None:
        self._tokens -= 1.0


class CommandLimits:
    def __init__(self, settings: GatewaySettings) -> None:
        self._settings = settings
        self._per_token: dict[str, TokenBucket] = {}

    def connection_bucket(self) -> TokenBucket:
        """A new WebSocket connection's own bucket."""
        return TokenBucket(
            self._settings.connection_command_rate_per_s, self._settings.connection_command_burst
        )

    def admit(self, who: str, connection: TokenBucket | None = None) -> str | None:
        """None when the command may go; else why not (one line, for a 429 or an `error`)."""
        s = self._settings
        token = self._per_token.get(who)
        if token is None:
            token = self._per_token[who] = TokenBucket(s.token_command_rate_per_s, s.token_command_burst)
        now = time.monotonic()
        if connection is not None and connection.available(now) < 1.0:
            return (
                f"rate limited: more than {s.connection_command_rate_per_s:g} commands/s "
                f"(burst {s.connection_command_burst}) on this connection; abort is never limited"
            )
        if token.available(now) < 1.0:
            return (
                f"rate limited: more than {s.token_command_rate_per_s:g} commands/s "
                f"(burst {s.token_command_burst}) for {who!r}; abort is never limited"
            )
        token.take()
        if connection is not None:
            connection.take()
        return None
