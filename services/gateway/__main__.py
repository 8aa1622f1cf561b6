"""rcs-gateway: the REST API (and WebSocket) on 0.0.0.0:RCS_HTTP_PORT (default 5001); HTTPS when
gateway.tls_cert_file and tls_key_file are set.

uvicorn handles SIGTERM/SIGINT: it stops accepting, finishes the requests in flight, then runs the
app's lifespan shutdown, which stops the bus (retained offline status, clean disconnect).
"""

from __future__ import annotations

import logging
import sys

import uvicorn

from services.common.logs import setup_logging
from services.common.settings import load_settings
from services.gateway.app import create_app
from services.gateway.auth import Auth, redact_tokens_in_server_logs
from services.gateway.bus import SERVICE, Bus

log = logging.getLogger("rcs.gateway")


def main() -> None:
    settings = load_settings()
    setup_logging(SERVICE, settings.log_level, settings.log_format)
    auth = Auth(settings)
    if auth.enabled and auth.token_count == 0:
        log.error(
            "auth is on but no token is configured: set RCS_OPERATOR_TOKEN (and RCS_VIEWER_TOKEN), "
            "gateway.secrets_file, or RCS_AUTH=off for the legacy frontend"
        )
        sys.exit(2)
    app = create_app(settings, Bus(settings), auth)
    redact_tokens_in_server_logs()
    # uvloop: the fan-out is mostly socket writes, which it does at a fraction of asyncio's cost;
    # no per-message deflate: float telemetry barely compresses, and it would be paid per client per frame
    uvicorn.run(
        app,
        host="0.0.0.0",
        port=settings.http_port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        ws_per_message_deflate=False,
        ssl_certfile=settings.gateway.tls_cert_file,
        ssl_keyfile=settings.gateway.tls_key_file,
    )


if __name__ == "__main__":
    main()
