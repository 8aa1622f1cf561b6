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
from services.gateway.serving import server_config

log = logging.getLogger("rcs.gateway")


def main() -> None:
    settings = load_settings()
    setup_logging(SERVICE, settings.log_level, settings.log_format)
    try:
        auth = Auth(settings)
    except (OSError, ValueError) as exc:
        log.error("gateway.secrets_file: %s", exc)
        sys.exit(2)
    if auth.enabled and auth.token_count == 0:
        log.error(
            "auth is on but no token is configured: set RCS_OPERATOR_TOKEN (and RCS_VIEWER_TOKEN), "
            "gateway.secrets_file, or RCS_AUTH=off for the legacy frontend"
        )
        sys.exit(2)
    app = create_app(settings, Bus(settings), auth)
    redact_tokens_in_server_logs()
    uvicorn.Server(server_config(app, settings)).run()


if __name__ == "__main__":
    main()
