"""The live dashboard page: `/` and `/static/` served without a token, only same-origin assets."""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from starlette.websockets import WebSocketDisconnect

from services.common.settings import load_settings
from services.gateway.app import create_app
from services.gateway.auth import Auth
from services.gateway.bus import Bus


class _Sources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.sources.append(value)


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = load_settings().model_copy(
        update={"auth": "on", "operator_token": SecretStr("op-token-0123456789")}
    )
    # No `with`: the lifespan (which starts the Bus) is not needed to serve static files.
    yield TestClient(create_app(settings, Bus(settings), Auth(settings)))


def test_index_without_token(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "dashboard.js" in response.text


def test_vendor_assets_served(client: TestClient) -> None:
    for path in (
        "/static/vendor/uPlot.iife.min.js",
        "/static/vendor/uPlot.min.css",
        "/static/vendor/msgpack.min.js",
        "/static/dashboard.js",
        "/static/js/connection.js",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        assert len(response.content) > 100, path
    assert client.get("/api/status").status_code == 401  # the data still needs a token


def test_only_same_origin_assets(client: TestClient) -> None:
    parser = _Sources()
    parser.feed(client.get("/").text)
    assert parser.sources
    for source in parser.sources:
        assert source.startswith("/") and not source.startswith("//"), source
        assert client.get(source).status_code == 200, source


def test_no_external_urls_in_static() -> None:
    static = Path(__file__).parent.parent / "services" / "gateway" / "static"
    pages = [*static.glob("*.html"), *static.glob("*.css"), *static.glob("*.js"), *static.glob("js/*.js")]
    assert len(pages) > 3
    for path in pages:
        text = path.read_text()
        assert "http://" not in text and "https://" not in text, path.name


def test_websocket_accepts_the_pages_own_origin(client: TestClient) -> None:
    # Same origin as the page: accepted (then refused for the bad token, with an `error`).
    with client.websocket_connect("/ws?token=wrong", headers={"origin": "http://testserver"}) as ws:
        assert ws.receive_json()["type"] == "error"
    with pytest.raises(WebSocketDisconnect):  # a foreign origin: refused before the upgrade
        client.websocket_connect("/ws?token=wrong", headers={"origin": "http://evil.example"}).__enter__()
