"""Bounds on what one HTTP client can make the gateway hold: request bodies and concurrent heavy reads.

`BodyLimit` answers 413 to a body larger than `gateway.max_body_bytes` before reading it when
`Content-Length` says so, and as soon as the bytes received pass the bound otherwise (chunked
bodies), so no request can grow the process by more than the bound. `ReadSlots` lets only
`gateway.heavy_reads` recordings/history reads run at once; one more is answered 503 at once
rather than queued (a queue of reads is memory too). uvicorn itself bounds WebSocket messages
(`ws_max_size` = `gateway.max_ws_message_bytes` in serving.py: over it, the connection is closed 1009).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

RETRY_AFTER_S = 1


class BodyTooLargeError(HTTPException):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body larger than {max_bytes} bytes")


class BodyLimit:
    """Pure ASGI middleware (it never buffers a body itself); `on_refused` counts and logs each 413."""

    def __init__(self, app: ASGIApp, max_bytes: int, on_refused: Callable[[], None]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            self.on_refused()
            await self._too_large(send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    self.on_refused()
                    raise BodyTooLargeError(self.max_bytes)  # FastAPI answers it (413) where it reads
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLargeError:  # read outside FastAPI's exception handling
            if not started:
                await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        body = json.dumps({"detail": BodyTooLargeError(self.max_bytes).detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        # the unread body stays unread: close the connection rather than wait for it
        headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class ReadSlots:
    """At most `count` heavy reads at a time, from threads or the event loop (never blocks)."""

    def __init__(self, count: int) -> None:
        self._free = threading.Semaphore(count)
        self._lock = threading.Lock()
        self.count = count
        self.refused = 0

    @contextmanager
    def take(self) -> Iterator[None]:
        """Hold a slot for the `with` block; 503 (with Retry-After) when all are taken."""
        if not self._free.acquire(blocking=False):
            with self._lock:
                self.refused += 1
            raise HTTPException(
                503,
                f"busy: {self.count} recording/history reads in progress; retry shortly",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        try:
            yield
        finally:
            self._free.release()
