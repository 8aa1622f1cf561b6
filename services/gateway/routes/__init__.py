"""The REST API's routes by topic; `services/gateway/app.py` assembles them."""
