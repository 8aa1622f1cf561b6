"""The deployment's files, checked without Docker (deploy/check.sh runs them on a real engine):
the compose files against the Compose Specification (check-jsonschema's copy of its JSON schema),
and the one-time set-up of docker-compose.yml's header leaving every file the stack needs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema.validators import validator_for

from services.common.settings import PROJECT_ROOT

COMPOSE_FILES = ("docker-compose.yml", "compose.sim.yml", "deploy/compose.loopback.yml")
SERVICES = ("mosquitto", "acquisition", "actuation", "logger", "gateway")


class ComposeLoader(yaml.SafeLoader):
    """YAML as compose reads it: `!reset` (drop what the file before said) is a plain value here."""


def _reset(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


ComposeLoader.add_constructor("!reset", _reset)


def load_compose(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(path.read_text(), Loader=ComposeLoader)
    return loaded


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_follows_the_compose_specification(name: str) -> None:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = validator_for(schema)(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(load_compose(PROJECT_ROOT / name))
    ]
    assert errors == []


def test_every_long_running_service_has_a_healthcheck_and_waits_for_a_healthy_broker() -> None:
    services = load_compose(PROJECT_ROOT / "docker-compose.yml")["services"]
    for name in SERVICES:
        assert services[name]["healthcheck"]["test"], name
        assert services[name]["restart"] == "unless-stopped", name
    for name in SERVICES[1:]:
        assert services[name]["depends_on"]["mosquitto"]["condition"] == "service_healthy", name


def _required_files(compose: dict[str, Any]) -> list[str]:
    """Host files the stack cannot start without: env files and binds that must exist."""
    files: list[str] = []
    for service in compose["services"].values():
        env_files = service.get("env_file", [])
        files += [env_files] if isinstance(env_files, str) else env_files
        files += [
            volume["source"]
            for volume in service.get("volumes", [])
            if isinstance(volume, dict) and not volume.get("bind", {}).get("create_host_path", True)
        ]
    return files


@pytest.mark.skipif(os.geteuid() != 0, reason="the set-up chowns files to the containers' users (root)")
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_the_headers_set_up_leaves_every_file_the_stack_needs(tmp_path: Path) -> None:
    """A missing env_file makes `docker compose config` (and `up`) fail: the set-up must write them all."""
    for part in ("services", "deploy", "mosquitto", "config", *COMPOSE_FILES):
        source = PROJECT_ROOT / part
        target = tmp_path / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    subprocess.run(["deploy/setup.sh", "rcs-pi.local"], cwd=tmp_path, check=True, capture_output=True)
    required = _required_files(load_compose(tmp_path / "docker-compose.yml"))
    assert "secrets/tokens.env" in required
    missing = [name for name in required if not (tmp_path / name).is_file()]
    assert missing == []
    assert (tmp_path / "mosquitto" / "passwd").stat().st_uid == 1883  # the broker's user reads it
    assert (tmp_path / "secrets" / "tls" / "gateway.key").stat().st_uid == 10001  # the image's rcs user


@pytest.mark.skipif(os.geteuid() != 0, reason="installs root-owned files (sudo otherwise)")
def test_install_service_puts_unit_rules_and_checkout_in_place(tmp_path: Path) -> None:
    """`make install-service`'s files, under a DESTDIR (no user, apt or systemctl there)."""
    env = {**os.environ, "DESTDIR": str(tmp_path)}
    subprocess.run(["deploy/install-service.sh"], cwd=PROJECT_ROOT, env=env, check=True, capture_output=True)
    unit = (tmp_path / "etc/systemd/system/rcs-stack.service").read_text()
    assert "ExecStart=/opt/rcs/.venv/bin/rcs-stack --hardware" in unit
    assert "Restart=on-failure" in unit
    assert "SupplementaryGroups=dialout" in unit
    rules = (tmp_path / "etc/udev/rules.d/99-rcs.rules").read_text()
    assert 'SYMLINK+="rcs-stm32"' in rules
    assert 'SYMLINK+="rcs-arduino"' in rules
    assert "RCS_STM32_PORT=/dev/rcs-stm32" in unit
    assert (tmp_path / "opt/rcs/config/stand.yaml").is_file()
    assert (tmp_path / "etc/rcs/rcs.env").stat().st_mode & 0o777 == 0o600
