"""uvicorn's WebSocket protocol, parsing at most `PARSE_STEP_BYTES` of a client's bytes at a time.

uvicorn's own (websockets' "sans-I/O" protocol) parses every frame of what one socket read brought,
up to 256 KiB, in one go on the event loop: a client flooding small messages makes the loop parse
thousands of frames (20 ms and more) before it reads anything else, an abort request included.
Here the bytes read are parsed a step at a time, and the next step only once the application has
taken every message parsed so far (`receive`): a step is a fraction of a millisecond, and what a
client sends faster than the gateway handles it waits in the client's own socket (TCP
back-pressure), not in the gateway. Messages are delivered in the order they were sent; those still
unparsed when the connection is lost are not delivered (their answers could not be sent).
"""

from __future__ import annotations

from uvicorn._types import ASGIReceiveEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

PARSE_STEP_BYTES = 2048  # a few dozen small messages: well under a millisecond of parsing


class SteppedWebSocketProtocol(WebSocketsSansIOProtocol):
    """`uvicorn.Config(ws=SteppedWebSocketProtocol)` (services/gateway/serving.py)."""

    _unparsed: bytearray | None = None  # set on the first read (uvicorn builds the protocol)

    @property
    def unparsed_bytes(self) -> int:
        """Bytes read from the socket and not parsed yet."""
        return len(self._unparsed or b"")

    def data_received(self, data: bytes) -> None:
        if self._unparsed is None:
            self._unparsed = bytearray()
        self._unparsed += data
        self._parse_step()
        if (self._unparsed or not self.queue.empty()) and not self.read_paused and not self.close_sent:
            self.read_paused = True  # as uvicorn does once a message is queued
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._unparsed:
            self._unparsed.clear()
        super().connection_lost(exc)

    async def receive(self) -> ASGIReceiveEvent:
        self._parse_step()
        self._read_when_drained()  # the rest of a message may still be in the socket
        message = await self.queue.get()
        self._read_when_drained()
        return message

    def _read_when_drained(self) -> None:
        """Read the socket again once every byte read has been parsed and every message taken."""
        if self.read_paused and self.queue.empty() and not self._unparsed:
            self.read_paused = False
            self.transport.resume_reading()

    def _parse_step(self) -> None:
        """While no parsed message waits, parse `PARSE_STEP_BYTES` more, until one is or nothing is
        left (a message larger than a step takes several: it is bounded by `ws_max_size`). Once the
        gateway has sent its close, everything is parsed (messages are then dropped by uvicorn) so
        that the client's close is seen."""
        unparsed = self._unparsed
        while unparsed and (self.queue.empty() or self.close_sent) and not self.transport.is_closing():
            step = bytes(unparsed[:PARSE_STEP_BYTES])
            del unparsed[:PARSE_STEP_BYTES]
            super().data_received(step)
