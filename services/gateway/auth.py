"""Who may do what: bearer tokens with the roles `viewer` (reads) and `operator` (reads and commands).

Tokens come from `RCS_OPERATOR_TOKEN` / `RCS_VIEWER_TOKEN` and from `gateway.secrets_file`, one
token per line: `operator <token> [name]` or `viewer <token> [name]` (`#` comments, blank lines).
The name is what actuation's audit records as `who`; it defaults to the role.

`RCS_AUTH=off` is the legacy mode for the existing frontend, which sends no token: everyone,
with or without a token, is the operator "legacy (auth off)". It is logged as a warning at start.
"""

from __future__ import annotations

import hmac
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from services.common.settings import Settings

Role = Literal["viewer", "operator"]
_TOKEN_IN_URL = re.compile(r"(token=)[^&\s\"']+")
SERVER_LOGGERS = ("uvicorn.error", "uvicorn.access")
LEGACY_NAME = "legacy (auth off)"
log = logging.getLogger("rcs.gateway.auth")


@dataclass(frozen=True)
class Identity:
    name: str
    role: Role


def read_secrets_file(path: Path) -> list[tuple[bytes, Identity]]:
    """Parse `role token [name]` lines; raises ValueError naming the line of any mistake."""
    entries: list[tuple[bytes, Identity]] = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split(maxsplit=2)
        role = fields[0]
        if role not in get_args(Role) or len(fields) < 2:
            raise ValueError(
                f"{path}:{number}: expected `operator <token> [name]` or `viewer <token> [name]`"
            )
        name = fields[2].strip() if len(fields) == 3 else role
        entries.append((fields[1].encode(), Identity(name, role)))  # type: ignore[arg-type]  # checked above
    return entries


class Auth:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.auth == "on"
        self._tokens: list[tuple[bytes, Identity]] = []
        if settings.operator_token is not None:
            self._tokens.append(
                (settings.operator_token.get_secret_value().encode(), Identity("operator", "operator"))
            )
        if settings.viewer_token is not None:
            self._tokens.append(
                (settings.viewer_token.get_secret_value().encode(), Identity("viewer", "viewer"))
            )
        if settings.gateway.secrets_file is not None:
            self._tokens.extend(read_secrets_file(settings.gateway.secrets_file))
        self._tokens = [(token, identity) for token, identity in self._tokens if token]
        if not self.enabled:
            log.warning(
                "RCS_AUTH=off: no tokens checked, every client is an operator (legacy frontend mode); "
                "keep this gateway on the stand's isolated network"
            )
        elif not self._tokens:
            log.warning("no tokens configured (RCS_OPERATOR_TOKEN, RCS_VIEWER_TOKEN, gateway.secrets_file)")

    @property
    def token_count(self) -> int:
        return len(self._tokens)

    def identify(self, token: str | None) -> Identity | None:
        """The token's identity, None when unknown. Every known token is compared, in constant time."""
        if not self.enabled:
            return Identity(LEGACY_NAME, "operator")
        if not token:
            return None
        offered = token.encode()
        found: Identity | None = None
        for known, identity in self._tokens:
            if hmac.compare_digest(offered, known) and found is None:
                found = identity
        return found

    @staticmethod
    def allows(identity: Identity | None, needed: Role) -> bool:
        """Operators may do everything viewers may."""
        if identity is None:
            return False
        return needed == "viewer" or identity.role == "operator"


class RedactTokens(logging.Filter):
    """Keeps `?token=` values out of the logs: uvicorn logs each WebSocket's path with its query."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message:
            record.msg, record.args = _TOKEN_IN_URL.sub(r"\1<redacted>", message), None
        return True


def redact_tokens_in_server_logs() -> None:
    """Install `RedactTokens` on uvicorn's loggers (once)."""
    for name in SERVER_LOGGERS:
        server_log = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in server_log.filters):
            server_log.addFilter(RedactTokens())
