"""Broker credentials: one random password per MQTT user, as a Mosquitto 2.0 password file.

The users are those of `mosquitto/acl`. Hashes are Mosquitto 2.0's default format, written here
rather than by `mosquitto_passwd -b`, which would put every password on a command line where any local
user can read it (/proc/<pid>/cmdline):

    <user>:$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512(password, salt, iterations, 64)>

Files holding passwords are created with mode 0600 and never follow a symlink.

    python -m services.devstack.credentials mosquitto/passwd --env-dir run/credentials

writes a deployment's password file and one `<user>.env` per user (RCS_MQTT_USERNAME/PASSWORD lines)
for the services' environment; running it again replaces every password.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

# The named users of mosquitto/acl: every service connects as its own name; `operator` is people.
USERS = ("acquisition", "actuation", "logger", "gateway", "operator")
# rcs-stack's supervisor (make run only, with the broker it starts: under compose Docker restarts the
# containers, so deployments need no password for it).
STACK_USER = "stack"
# Read-only logins of mosquitto/acl (telemetry, state, events): outside clients of the compose broker.
READERS = ("reader",)

PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default for sha512-pbkdf2 in Mosquitto 2.0
SALT_BYTES = 12  # as mosquitto_passwd
PASSWORD_BYTES = 24  # 192 random bits, URL-safe base64: no character needs quoting in an env file


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """The `$7$` hash Mosquitto 2.0 checks a CONNECT's password against."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by its owner only (mode 0600 even if the file existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(text)


def password_file_text(passwords: Mapping[str, str]) -> str:
    for user in passwords:
        if not user or any(c in user for c in ":\n\r+#/"):
            raise ValueError(f"invalid MQTT user name {user!r}")
    return "".join(f"{user}:{hash_password(password)}\n" for user, password in passwords.items())


def generate(path: Path, users: Iterable[str] = USERS) -> dict[str, str]:
    """Write a password file for `users` with fresh random passwords; returns {user: password}."""
    passwords = {user: new_password() for user in users}
    write_private(path, password_file_text(passwords))
    return passwords


def env_text(user: str, password: str, *, host: str | None = None, port: int | None = None) -> str:
    """`KEY=value` lines a service (or rcs-ctl, for `operator`) reads its broker login from."""
    lines = [f"# MQTT login of the {user} user; regenerated with the broker's password file"]
    if host is not None:
        lines.append(f"RCS_MQTT_HOST={host}")
    if port is not None:
        lines.append(f"RCS_MQTT_PORT={port}")
    lines += [f"RCS_MQTT_USERNAME={user}", f"RCS_MQTT_PASSWORD={password}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate the broker's password file for the rcs users")
    parser.add_argument("password_file", type=Path, help="e.g. mosquitto/passwd (replaced)")
    parser.add_argument("--env-dir", type=Path, help="also write <user>.env files (mode 0600) here")
    args = parser.parse_args()
    passwords = generate(args.password_file, (*USERS, *READERS))
    print(f"wrote {args.password_file} for users {', '.join(passwords)}")
    if args.env_dir is not None:
        args.env_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for user, password in passwords.items():
            write_private(args.env_dir / f"{user}.env", env_text(user, password))
        print(f"wrote {args.env_dir}/<user>.env: give each service its own file as its environment")
    else:
        print("the passwords are not shown: use --env-dir to store them for the services")


if __name__ == "__main__":
    main()
