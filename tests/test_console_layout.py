"""The console's stand layout: the schematic names exactly the valves of config/stand.yaml and only its
channels, and `GET /api/config` / `GET /api/whoami` describe the stand and the token's account."""

from __future__ import annotations

from collections.abc import Iterator
from xml.etree import ElementTree

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.common.settings import load_settings
from services.gateway.app import create_app
from services.gateway.auth import Auth
from services.gateway.bus import Bus
from services.gateway.routes.console import SCHEMATIC

OPERATOR, VIEWER = "op-token-0123456789", "viewer-token-0123456789"


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = load_settings().model_copy(
        update={"auth": "on", "operator_token": SecretStr(OPERATOR), "viewer_token": SecretStr(VIEWER)}
    )
    # No `with`: these routes need no bus (the lifespan is not started).
    yield TestClient(create_app(settings, Bus(settings), Auth(settings)))


def _schematic(client: TestClient) -> ElementTree.Element:
    response = client.get(SCHEMATIC)
    assert response.status_code == 200
    return ElementTree.fromstring(response.text)


def test_the_schematic_has_every_valve_and_only_known_channels(client: TestClient) -> None:
    settings = load_settings()
    root = _schematic(client)
    valves = [e.get("data-valve", "") for e in root.iter() if e.get("data-valve")]
    channels = [e.get("data-channel", "") for e in root.iter() if e.get("data-channel")]
    assert sorted(valves) == sorted(settings.valve_names)
    assert set(channels) <= set(settings.channel_names) and len(set(channels)) == len(channels)
    for e in root.iter():
        if e.get("data-valve"):
            assert e.get("id") == f"valve-{e.get('data-valve')}"
        if e.get("data-channel"):
            assert e.get("id") == f"channel-{e.get('data-channel')}"


def test_config_describes_the_stand(client: TestClient) -> None:
    settings = load_settings()
    assert client.get("/api/config").status_code == 401
    config = client.get("/api/config", headers={"Authorization": f"Bearer {VIEWER}"}).json()
    assert [v["name"] for v in config["valves"]] == list(settings.valve_names)
    confirm = {v["name"] for v in config["valves"] if v["confirm"]}
    assert confirm == {v.name for v in settings.valves if v.role in ("isolation", "igniter")}
    p5 = next(c for c in config["channels"] if c["name"] == "P5")
    assert p5["unit"] == "bar" and p5["warn_above"] == 18.0
    assert any(r["channel"] == "P5" and r["above"] == 25.0 for r in config["redlines"])
    assert config["schematic"] == SCHEMATIC


def test_whoami_names_the_tokens_account(client: TestClient) -> None:
    assert client.get("/api/whoami").status_code == 401
    me = client.get("/api/whoami", headers={"Authorization": f"Bearer {OPERATOR}"}).json()
    assert me == {"login": "operator", "role": "operator"}
    me = client.get("/api/whoami", headers={"Authorization": f"Bearer {VIEWER}"}).json()
    assert me == {"login": "viewer", "role": "viewer"}
