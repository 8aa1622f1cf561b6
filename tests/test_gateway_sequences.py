"""`GET /api/sequences`' view of config/stand.yaml: each step in one line, with its phase and T-0."""

from __future__ import annotations

from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.common.settings import load_settings
from services.gateway.app import create_app
from services.gateway.auth import Auth
from services.gateway.bus import Bus
from services.gateway.sequences import sequences_view

STAND = load_settings()


def test_every_sequence_in_config_order_with_its_kind() -> None:
    view = {s["name"]: s for s in sequences_view(STAND)}
    assert list(view) == list(STAND.sequences)
    assert view["hotfire"]["procedure"] and view["hotfire"]["requires_armed"]
    assert view["emergency"]["abort"] and not view["o2cleaning"]["requires_armed"]
    assert [step["step"] for step in view["o2feed"]["steps"]] == [1, 2]


def test_hotfire_steps_read_in_order_with_phases_kept_and_t0() -> None:
    steps = {s["name"]: s for s in sequences_view(STAND)}["hotfire"]["steps"]
    first, feed, lines_full, ignition = steps[0], steps[1], steps[2], steps[3]
    assert first["text"] == (
        "require P7 above 35 (else hold), P8 above 25 (else hold), P5 below 2 (else hold)"
        " · valves 000000000 · 7 s"
    )
    assert (first["phase"], first["wait_ms"]) == ("countdown", 7000)
    assert feed["text"] == "open GOX1, FUEL1 · until P1 above 30 (2 s, else abort)"
    assert feed["wait_ms"] is None
    assert lines_full["phase"] == "feed", "a step without a phase runs in the one before it"
    assert ignition["t0"] and ignition["phase"] == "ignition" and not any(s["t0"] for s in steps[4:])
    assert steps[-1]["text"] == "valves 000000000" and steps[-1]["phase"] == "safing"


def test_the_route_answers_a_viewer_with_the_view() -> None:
    settings = STAND.model_copy(update={"auth": "on", "viewer_token": SecretStr("viewer-token-0123456789")})
    client = TestClient(create_app(settings, Bus(settings), Auth(settings)))  # no bus needed: no lifespan
    assert client.get("/api/sequences").status_code == 401
    answer = client.get("/api/sequences", headers={"Authorization": "Bearer viewer-token-0123456789"})
    assert answer.status_code == 200
    assert answer.json() == {"sequences": sequences_view(STAND)}
