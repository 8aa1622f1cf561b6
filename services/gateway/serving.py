"""How rcs-gateway serves its app with uvicorn: one place for the server's options and bounds."""

from __future__ import annotations

from typing import Any

import uvicorn
from starlette.types import ASGIApp

from services.common.settings import Settings
from services.gateway.ws_protocol import SteppedWebSocketProtocol


def server_config(app: ASGIApp, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """uvicorn's configuration for `app` on `settings.http_host`:`settings.http_port` (`overrides` win).

    uvloop: the fan-out is mostly socket writes, which it does at a fraction of asyncio's cost; no
    per-message deflate: float telemetry barely compresses, and it would be paid per client per frame.
    A WebSocket message over `gateway.max_ws_message_bytes` closes its connection (1009) before it is
    buffered whole. WebSocket bytes are parsed a step at a time (services/gateway/ws_protocol.py), so
    that a client's flood never holds the event loop for long (an abort request on another
    connection waits for at most one step).
    """
    options: dict[str, Any] = {
        "host": settings.http_host,
        "port": settings.http_port,
        "loop": "uvloop",
        "http": "httptools",
        "ws": SteppedWebSocketProtocol,
        "log_config": None,
        "access_log": False,
        "ws_per_message_deflate": False,
        "ws_max_size": settings.gateway.max_ws_message_bytes,
        "ssl_certfile": settings.gateway.tls_cert_file,  # HTTPS when both are set
        "ssl_keyfile": settings.gateway.tls_key_file,
    }
    return uvicorn.Config(app, **(options | overrides))
