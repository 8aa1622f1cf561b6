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
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.types import Scope
from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.sync.client import connect
from websockets.uri import parse_uri

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
    (the messages, and how many parsed ones waited after each) in `seen`; sets `halfway` once it has
    read `halfway_after` of them."""

    expected: int
    halfway_after: int = -1
    written: threading.Event = field(default_factory=threading.Event)
    halfway: threading.Event = field(default_factory=threading.Event)
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
            if len(messages) == self.halfway_after:
                self.halfway.set()
        self.seen.put((messages, waiting))
        await send({"type": "websocket.send", "text": "read"})


class Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # a thread of the test process
        pass


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[tuple[FloodApp, str]]:
    """The app (`FloodApp(**request.param)`, default: the flood's) served on a free port."""
    app = FloodApp(**getattr(request, "param", {"expected": FLOOD + 2}))
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


SMALL = 200  # a few steps of small messages, then a big one cut in two


@pytest.mark.parametrize("served", [{"expected": SMALL + 1, "halfway_after": SMALL}], indirect=True)
def test_a_message_whose_end_is_still_in_the_socket_is_read(served: tuple[FloodApp, str]) -> None:
    """Every byte read is parsed and the message is still incomplete: the socket is read again."""
    app, url = served
    small = [json.dumps({"n": i}) for i in range(SMALL)]
    big = "y" * BIG
    client = ClientProtocol(parse_uri(url))
    with socket.create_connection(("127.0.0.1", parse_uri(url).port), timeout=TIMEOUT) as sock:
        client.send_request(client.connect())
        sock.sendall(b"".join(client.data_to_send()))
        while client.state is State.CONNECTING:
            client.receive_data(sock.recv(65536))
        for message in (*small, big):
            client.send_text(message.encode())
        frames = b"".join(client.data_to_send())
        cut = len(frames) - BIG // 2
        sock.sendall(frames[:cut])  # one write: read whole, then parsed a step at a time
        app.written.set()
        assert app.halfway.wait(TIMEOUT), "the small messages read"
        sock.sendall(frames[cut:])  # the big one's second half, once its first is parsed
        messages, _ = app.seen.get(timeout=TIMEOUT)
    assert messages == [*small, big]
