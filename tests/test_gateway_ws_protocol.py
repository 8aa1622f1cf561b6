"""The gateway's WebSocket protocol (services/gateway/ws_protocol.py) in uvicorn as the gateway
configures it (services/gateway/serving.py: uvloop, httptools), on a free loopback port, with a
client from the `websockets` library: a flood is parsed a step at a time, and every message still
arrives whole and in order.

The application here is the smallest ASGI one that shows it: it takes nothing until the client has
written its whole flood, then reads every message, noting each time how many parsed messages wait.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.types import Scope
from websockets.sync.client import connect

from services.common.settings import load_settings
from services.devstack.broker import free_port
from services.gateway.serving import server_config
from services.gateway.ws_protocol import PARSE_STEP_BYTES
from tests.conftest import wait_until

TIMEOUT = 20.0
FLOOD = 2000
BIG = 10 * PARSE_STEP_BYTES  # one message several steps long


@dataclass
class FloodApp:
    """Accepts one WebSocket; once `written` is set, reads `expected` messages and puts what it saw
    (the messages, and how many parsed ones waited after each) in `seen`."""

    expected: int
    written: threading.Event = field(default_factory=threading.Event)
    seen: queue.Queue[tuple[list[str | bytes], list[int]]] = field(default_factory=queue.Queue)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        parsed = receive.__self__.queue  # the protocol's queue of parsed messages (uvicorn's own)
        await asyncio.to_thread(self.written.wait, TIMEOUT)
        messages: list[str | bytes] = []
        waiting: list[int] = []
        while len(messages) < self.expected:
            event = await receive()
            if event["type"] != "websocket.receive":
                break
            messages.append(event["text"] if event.get("text") is not None else event["bytes"])
            waiting.append(parsed.qsize())
        self.seen.put((messages, waiting))
        await send({"type": "websocket.send", "text": "read"})


class Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # a thread of the test process
        pass


@pytest.fixture
def served() -> Iterator[tuple[FloodApp, str]]:
    app = FloodApp(expected=FLOOD + 2)
    port = free_port()
    config = server_config(app, load_settings(), host="127.0.0.1", port=port, lifespan="off")
    server = Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, TIMEOUT, "uvicorn")
        yield app, f"ws://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(15)


def test_a_flood_is_parsed_a_step_at_a_time_and_arrives_whole_and_in_order(
    served: tuple[FloodApp, str],
) -> None:
    app, url = served
    flood = [json.dumps({"type": "valve_command", "n": i}) for i in range(FLOOD)]
    big = "x" * BIG
    sent: list[str | bytes] = [*flood[: FLOOD // 2], big, b"\x00binary\xff", *flood[FLOOD // 2 :]]
    with connect(url, compression=None, max_size=None) as ws:
        for message in sent:
            ws.send(message)
        app.written.set()
        assert ws.recv(timeout=TIMEOUT) == "read"
    messages, waiting = app.seen.get(timeout=TIMEOUT)
    assert messages == sent, "every message, whole, in the order sent"
    smallest_frame = min(len(m) for m in flood) + 6  # a client frame's header: 2 bytes + 4 of mask
    per_step = PARSE_STEP_BYTES // smallest_frame + 1
    assert max(waiting) < per_step, (
        f"at most one step's messages parsed ahead of the application, not {max(waiting)}"
    )
