"""A private Mosquitto for tests and `make run`: the project's config and ACL on one loopback port,
with a password file of freshly generated credentials (services/devstack/credentials.py)."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from pydantic import SecretStr

from services.common.settings import PROJECT_ROOT, MqttSettings
from services.devstack import credentials

BASE_CONFIG = PROJECT_ROOT / "mosquitto" / "mosquitto.conf"
BASE_ACL = PROJECT_ROOT / "mosquitto" / "acl"
_LISTENER = re.compile(r"^\s*listener\s.*$", re.MULTILINE)
_FALLBACK_BINARY = Path("/usr/sbin/mosquitto")
# Started as root, mosquitto drops privileges to this user before it reads the password and ACL files.
_UNPRIVILEGED_USERS = ("mosquitto", "nobody")


def _option(name: str) -> re.Pattern[str]:
    return re.compile(rf"^\s*{name}\s.*$", re.MULTILINE)


def render_config(
    port: int,
    host: str = "127.0.0.1",
    base: Path = BASE_CONFIG,
    *,
    password_file: Path | None = None,
    acl_file: Path | None = None,
    run_as: str | None = None,
) -> str:
    """The config at `base` with its listener line replaced by `listener <port> <host>`.

    `password_file` and `acl_file`, when given, replace the config's line for that option (or are
    added) as absolute paths; `run_as` adds a `user` line (the account mosquitto drops to when
    started as root). Raises ValueError unless `base` has exactly one listener line (options after a
    listener line belong to that listener, so several listeners cannot be rewritten to one port
    blindly) and at most one line per file option.
    """
    text = base.read_text()
    listeners = _LISTENER.findall(text)
    if len(listeners) != 1:
        raise ValueError(f"{base} must have exactly one 'listener' line, found {len(listeners)}")
    text = _LISTENER.sub(f"listener {port} {host}", text)
    for option, path in (("password_file", password_file), ("acl_file", acl_file)):
        if path is None:
            continue
        line = f"{option} {path.resolve()}"
        matches = list(_option(option).finditer(text))
        if len(matches) > 1:
            raise ValueError(f"{base} has {len(matches)} '{option}' lines, expected at most one")
        if matches:
            text = text[: matches[0].start()] + line + text[matches[0].end() :]
        else:
            text = f"{text.rstrip()}\n{line}\n"
    if run_as is not None:
        text = f"{text.rstrip()}\nuser {run_as}\n"
    return text


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (another process may still take it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


# MQTT 3.1.1 CONNECT: clean session, keepalive 5 s, client id "rcs-probe".
_PROBE_CONNECT = bytes([0x10, 21, 0, 4]) + b"MQTT" + bytes([4, 0x02, 0, 5, 0, 9]) + b"rcs-probe"
_PROBE_DISCONNECT = bytes([0xE0, 0])


def broker_answers(host: str, port: int, timeout: float) -> bool:
    """True if an MQTT broker at host:port accepts a CONNECT (a CONNACK with return code 0)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_PROBE_CONNECT)
            connack = b""
            while len(connack) < 4:
                chunk = sock.recv(4 - len(connack))
                if not chunk:
                    return False
                connack += chunk
            sock.sendall(_PROBE_DISCONNECT)
    except OSError:
        return False
    return connack[0] == 0x20 and connack[3] == 0


def mosquitto_binary() -> str:
    """The mosquitto executable on PATH, else /usr/sbin/mosquitto; FileNotFoundError if neither."""
    found = shutil.which("mosquitto") or (str(_FALLBACK_BINARY) if _FALLBACK_BINARY.is_file() else None)
    if found is None:
        raise FileNotFoundError("mosquitto not found on PATH nor at /usr/sbin/mosquitto")
    return found


def _unprivileged_account() -> pwd.struct_passwd | None:
    """The account a root-started mosquitto should run as; None when not root (nothing to drop)."""
    if os.geteuid() != 0:
        return None
    for name in _UNPRIVILEGED_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


class Broker:
    """A mosquitto subprocess on `host:port` with the project's config, its log in `log_path`.

    Everything lives in a private temp dir: the config, the ACL (`acl`: the text of an ACL file,
    by default mosquitto/acl) and a password file with a fresh random password for each of `users`
    (`credentials`, `settings(user)`). `stop()` then `start()` again reuses the same port and
    credentials (for tests of reconnection).
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        base: Path = BASE_CONFIG,
        *,
        users: Iterable[str] = (*credentials.USERS, credentials.STACK_USER, *credentials.READERS),
        acl: str | None = None,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self._binary = mosquitto_binary()
        self._dir = tempfile.TemporaryDirectory(prefix="rcs-mosquitto-")
        directory = Path(self._dir.name)
        self.password_path = directory / "passwd"
        self.acl_path = directory / "acl"
        self._credentials = credentials.generate(self.password_path, users)
        self.acl_path.write_text(BASE_ACL.read_text() if acl is None else acl)
        run_as = None
        account = _unprivileged_account()
        if account is not None:  # root: mosquitto reads these files after dropping to `account`
            for path in (self.password_path, self.acl_path):
                os.chown(path, account.pw_uid, account.pw_gid)
            directory.chmod(0o711)  # it may enter the directory, not list it
            run_as = account.pw_name
        self.config_path = directory / "mosquitto.conf"
        self.config_path.write_text(
            render_config(
                self.port, host, base, password_file=self.password_path, acl_file=self.acl_path, run_as=run_as
            )
        )
        self.log_path = directory / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def credentials(self) -> dict[str, str]:
        """{user: password} of every user this broker knows."""
        return dict(self._credentials)

    def settings(self, user: str | None = None) -> MqttSettings:
        """Settings to reach this broker as `user`, or anonymously (read-only) with None."""
        if user is None:
            return MqttSettings(host=self.host, port=self.port)
        if user not in self._credentials:
            raise ValueError(f"unknown MQTT user {user!r}; this broker knows {sorted(self._credentials)}")
        return MqttSettings(
            host=self.host, port=self.port, username=user, password=SecretStr(self._credentials[user])
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start mosquitto and wait until it answers MQTT; RuntimeError with its log otherwise."""
        if self.running:
            return
        self._log = self.log_path.open("ab")
        # Its own process group: a Ctrl-C meant for the launcher (rcs-stack, pytest) must not stop the
        # broker before the services, which would see it vanish (acquisition then closes the valves).
        self._process = subprocess.Popen(
            [self._binary, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            process_group=0,
        )
        give_up = time.monotonic() + timeout
        while not broker_answers(self.host, self.port, timeout=1.0):
            if self._process.poll() is not None or time.monotonic() > give_up:
                self.stop()
                raise RuntimeError(
                    f"mosquitto did not start on {self.host}:{self.port}:\n{self.log_path.read_text()}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Terminate mosquitto and wait for it; the temp dir stays until `close()`."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        """Stop and delete the temp dir (config and log)."""
        self.stop()
        self._dir.cleanup()
