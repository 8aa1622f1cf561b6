"""Gateway service (`rcs-gateway`): the FastAPI front door on port 5001 — REST (`app.py`) and the
WebSocket `/ws` (`ws.py`, `hub.py`) over one MQTT connection (`bus.py`), bearer tokens (`auth.py`)."""
