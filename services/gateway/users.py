"""rcs-users: the gateway's named accounts in `gateway.secrets_file` (services/gateway/accounts.py).

`add` and `rotate` print the new token once: hand it to its person, it is not stored anywhere. The
gateway reads the file when it starts: restart it after a change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from services.gateway.accounts import (
    ROLES,
    Account,
    Role,
    check_name,
    hash_token,
    new_token,
    read_accounts,
    write_accounts,
)

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
File = Annotated[
    Path,
    typer.Option(
        "--file", envvar="RCS_GATEWAY_SECRETS_FILE", help="the accounts file (gateway.secrets_file)"
    ),
]


def _load(path: Path) -> list[Account]:
    try:
        return read_accounts(path) if path.exists() else []
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--file") from exc


def _find(accounts: list[Account], name: str) -> int:
    for index, account in enumerate(accounts):
        if account.name == name:
            return index
    raise typer.BadParameter(f"no account {name!r}", param_hint="NAME")


def _issue(path: Path, accounts: list[Account], account: Account, token: str) -> None:
    write_accounts(path, accounts)
    typer.echo(f"{account.name} ({account.role}): token {token}")
    typer.echo("shown once and stored only as its hash; restart the gateway to apply", err=True)


def _role(value: str) -> Role:
    """`value` as a Role; typer.BadParameter otherwise."""
    if value not in ROLES:
        raise typer.BadParameter(f"one of {', '.join(ROLES)}", param_hint="--role")
    return value


@app.command()
def add(
    name: str,
    file: File,
    role: Annotated[str, typer.Option(help="viewer (reads) or operator (reads and commands)")] = "operator",
) -> None:
    """Create an account and print its token."""
    checked_role = _role(role)
    try:
        check_name(name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="NAME") from exc
    accounts = _load(file)
    if any(a.name == name for a in accounts):
        raise typer.BadParameter(
            f"account {name!r} exists (rotate its token, or remove it)", param_hint="NAME"
        )
    token = new_token()
    account = Account(name, checked_role, hash_token(token))
    _issue(file, [*accounts, account], account, token)


@app.command()
def rotate(name: str, file: File) -> None:
    """Give an account a new token (the old one stops working when the gateway restarts)."""
    accounts = _load(file)
    index = _find(accounts, name)
    token = new_token()
    accounts[index] = Account(name, accounts[index].role, hash_token(token))
    _issue(file, accounts, accounts[index], token)


@app.command()
def remove(name: str, file: File) -> None:
    """Delete an account."""
    accounts = _load(file)
    del accounts[_find(accounts, name)]
    write_accounts(file, accounts)
    typer.echo(f"removed {name}; restart the gateway to apply")


@app.command("list")
def list_accounts(file: File) -> None:
    """Names and roles (never tokens)."""
    for account in _load(file):
        typer.echo(f"{account.name}\t{account.role}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
