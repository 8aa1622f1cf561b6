"""The gateway's named accounts: `gateway.secrets_file`, one account per line, tokens stored hashed.

    # name  role      token hash
    alice   operator  sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    bob     viewer    sha256:...

Tokens are 32 random bytes made by `rcs-users` (services/gateway/users.py), shown once and never
stored: the file holds their SHA-256. A random 256-bit token needs no slow, salted hash (nobody can
try enough guesses against it), and one fast digest per request lets `Auth.identify` compare the
offered token with every account in constant time. `#` starts a comment; blank lines are ignored.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from services.devstack.credentials import write_private

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = get_args(Role)
HASH_PREFIX = "sha256:"
TOKEN_BYTES = 32
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9._@-]{0,63}$")
_HASH = re.compile(rf"^{HASH_PREFIX}[0-9a-f]{{64}}$")


@dataclass(frozen=True)
class Account:
    name: str
    role: Role
    token_hash: str  # "sha256:<hex>"


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return HASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    """`name` if it can be an account name (it is what the audit trail records), else ValueError."""
    if not NAME.match(name):
        raise ValueError(
            f"account name {name!r}: 1 to 64 of letters, digits, . _ @ -, starting with a letter"
        )
    return name


def read_accounts(path: Path) -> list[Account]:
    """The accounts of `path`; ValueError naming the file and line of any mistake."""
    accounts: list[Account] = []
    names: set[str] = set()
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        where = f"{path}:{number}"
        if len(fields) != 3 or fields[1] not in ROLES or not _HASH.match(fields[2]):
            raise ValueError(
                f"{where}: expected `<name> <viewer|operator> sha256:<64 hex digits>` (rcs-users writes it)"
            )
        try:
            name = check_name(fields[0])
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc
        if name in names:
            raise ValueError(f"{where}: account {name!r} appears twice")
        names.add(name)
        accounts.append(Account(name, fields[1], fields[2]))
    return accounts


def write_accounts(path: Path, accounts: list[Account]) -> None:
    """Replace `path` with `accounts` (mode 0600)."""
    lines = ["# rcs gateway accounts: <name> <role> <SHA-256 of the token>; edit with rcs-users"]
    lines += [f"{a.name} {a.role} {a.token_hash}" for a in accounts]
    write_private(path, "\n".join(lines) + "\n")
