"""Who may do what: bearer tokens with the roles `viewer` (reads) and `operator` (reads and commands).

Named accounts come from `gateway.secrets_file` (services/gateway/accounts.py, edited with
`rcs-users`): the account's name is what actuation's audit records as `who`. `RCS_OPERATOR_TOKEN` /
`RCS_VIEWER_TOKEN` are one account each, named `operator` / `viewer`. Tokens are compared by their
SHA-256 against every account, in constant time; no token is ever logged.

`RCS_AUTH=off` is the legacy mode for the existing frontend, which sends no token: everyone,
with or without a token, is the operator "legacy (auth off)". It is logged as a warning at start.
"""

from __future__ import annotations

import hmac
import logging
import re
from dataclasses import dataclass

from pydantic import SecretStr

from services.common.settings import Settings
from services.gateway.accounts import Role, hash_token, read_accounts

__all__ = ["Auth", "Identity", "RedactTokens", "Role", "redact_tokens_in_server_logs"]

_TOKEN_IN_URL = re.compile(r"(token=)[^&\s\"']+")
SERVER_LOGGERS = ("uvicorn.error", "uvicorn.access")
LEGACY_NAME = "legacy (auth off)"
log = logging.getLogger("rcs.gateway.auth")


@dataclass(frozen=True)
class Identity:
    name: str
    role: Role


class Auth:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.auth == "on"
        self._tokens: list[tuple[bytes, Identity]] = []  # (SHA-256 of the token, whose it is)
        env_accounts: tuple[tuple[SecretStr | None, Role], ...] = (
            (settings.operator_token, "operator"),
            (settings.viewer_token, "viewer"),
        )
        for secret, role in env_accounts:
            if secret is not None and secret.get_secret_value():
                self._tokens.append((hash_token(secret.get_secret_value()).encode(), Identity(role, role)))
        if settings.gateway.secrets_file is not None:
            for account in read_accounts(settings.gateway.secrets_file):
                self._tokens.append((account.token_hash.encode(), Identity(account.name, account.role)))
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
        offered = hash_token(token).encode()
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
