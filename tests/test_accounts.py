"""The gateway's named accounts: `rcs-users` as a person runs it, the file it writes, `Auth` reading it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from services.common.settings import PROJECT_ROOT, Settings, load_settings
from services.gateway.accounts import read_accounts
from services.gateway.auth import Auth, Identity


def users(accounts: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.gateway.users", *args, "--file", str(accounts)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,  # the tests look at refusals too
    )


def token_of(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().rsplit(" ", 1)[1]


def auth_for(accounts: Path, **update: object) -> Auth:
    base: Settings = load_settings()
    gateway = base.gateway.model_copy(update={"secrets_file": accounts})
    return Auth(base.model_copy(update={"auth": "on", "gateway": gateway, **update}))


def test_add_rotate_remove_list_and_only_hashes_on_disk(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts"
    alice = token_of(users(accounts, "add", "alice"))
    bob = token_of(users(accounts, "add", "bob", "--role", "viewer"))
    assert accounts.stat().st_mode & 0o777 == 0o600
    text = accounts.read_text()
    assert alice not in text and bob not in text
    assert [(a.name, a.role) for a in read_accounts(accounts)] == [("alice", "operator"), ("bob", "viewer")]
    auth = auth_for(accounts)
    assert auth.identify(alice) == Identity("alice", "operator")
    assert auth.identify(bob) == Identity("bob", "viewer")
    assert auth.identify(alice + "x") is None and auth.identify("") is None

    rotated = token_of(users(accounts, "rotate", "alice"))
    auth = auth_for(accounts)
    assert auth.identify(alice) is None and auth.identify(rotated) == Identity("alice", "operator")
    assert users(accounts, "remove", "bob").returncode == 0
    listed = users(accounts, "list")
    assert listed.stdout.split() == ["alice", "operator"] and rotated not in listed.stdout
    assert auth_for(accounts).identify(bob) is None


def test_the_cli_refuses_mistakes_with_one_line(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts"
    token_of(users(accounts, "add", "alice"))
    for args, problem in (
        (("add", "alice"), "exists"),
        (("add", "carol", "--role", "admin"), "viewer, operator"),
        (("add", "no spaces"), "account name"),
        (("rotate", "nobody"), "no account"),
        (("remove", "nobody"), "no account"),
    ):
        done = users(accounts, *args)
        assert done.returncode != 0 and problem in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_the_shared_tokens_are_one_account_each(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts"
    accounts.write_text("")
    auth = auth_for(accounts, operator_token=SecretStr("op-token-0123"), viewer_token=SecretStr("view-0123"))
    assert auth.identify("op-token-0123") == Identity("operator", "operator")
    assert auth.identify("view-0123") == Identity("viewer", "viewer")


@pytest.mark.parametrize(
    "line",
    [
        "alice operator 0123",  # a token in clear, or the old `role token name` format
        "operator s3cret alice",
        "alice admin sha256:" + "0" * 64,
        "alice operator sha256:" + "0" * 63,
    ],
)
def test_a_malformed_accounts_file_names_file_and_line(tmp_path: Path, line: str) -> None:
    accounts = tmp_path / "accounts"
    accounts.write_text(f"# accounts\n{line}\n")
    with pytest.raises(ValueError, match=rf"{accounts}:2: "):
        read_accounts(accounts)


def test_a_name_twice_is_refused(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts"
    accounts.write_text(("alice operator sha256:" + "0" * 64 + "\n") * 2)
    with pytest.raises(ValueError, match="appears twice"):
        read_accounts(accounts)
