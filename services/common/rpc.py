"""Request/response over MQTT v5: Response Topic + Correlation Data, MessagePack map bodies.

A request is `{**body, "deadline": <UNIX s>}` published with QoS 1 to the service's address followed
by the requester's MQTT login, `topics.request(address, login)` (the broker's ACL lets each user
publish only under its own name), with the properties ResponseTopic = `topics.replies(reply_id)`,
CorrelationData = 16 random bytes and MessageExpiryInterval = ceil(timeout), so the broker discards
it rather than deliver it late. The reply goes to the ResponseTopic with the same CorrelationData:
`{"ok": true, "result": {...}}` or `{"ok": false, "error": "<reason>"}`.

The server hands the handler the body with `login` set to that last topic level (replacing any
`login` the body carried): the one thing about the requester the broker vouches for.

Every request also carries `sent` (the client's UNIX time when it sent it, or when the command it
relays was issued: see `RpcClient.request`). Bounds: a server built
with `max_queued` answers a request that finds that many already waiting for a worker at once with
`busy: request queue full` (never queued). `supersede_queued(reason)` answers every request still
waiting for a worker, and every one sent before it that arrives later, with `reason` and runs none of
them (abort uses it).

Staleness: the server drops, without executing, any request whose deadline has passed when it
arrives or when a worker picks it up (these requests will carry valve commands), and any request whose
deadline is not a finite number at most MAX_DEADLINE_AHEAD_S ahead (NaN or a far future would never go
stale). The deadline is an absolute UNIX time, so client and server clocks must agree (NTP) to well
within the timeouts used.

Values of type `bytes` travel as MessagePack bin (numpy arrays are sent as raw bytes).
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from services.common import topics
from services.common.codec import WireFormatError, pack, publish_properties, unpack_map
from services.common.logs import Throttled
from services.common.mqtt import Message, MqttClient

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], dict[str, Any]]
_CORRELATION_BYTES = 16
MAX_DEADLINE_AHEAD_S = 120.0  # longer than any caller's timeout (a full motor travel: 40 s)


class RpcError(Exception):
    """Raised by a handler to refuse a request; the caller gets it back with the same text.

    `RpcClient.call` also raises it when the server answered `ok: false` (including internal errors)
    or when the request could not even be queued.
    """


class RpcTimeout(Exception):  # noqa: N818 - the name is part of the services' shared API
    """No reply within the timeout: the request may or may not have been executed."""


@dataclass(frozen=True)
class _Request:
    topic: str
    body: dict[str, Any]  # without "deadline"
    deadline: float
    reply_to: str
    correlation: bytes
    generation: int  # the server's generation when it was queued (see supersede_queued)
    sent: float | None  # the client's UNIX time when it sent the request, if it said


@dataclass
class RpcServerStats:
    served: int = 0  # handler returned a result
    refused: int = 0  # handler raised RpcError
    failed: int = 0  # handler raised anything else
    dropped: int = 0  # not executed: stale, malformed, or without ResponseTopic/CorrelationData
    busy: int = 0  # not queued: `max_queued` requests were already waiting (answered at once)
    superseded: int = 0  # queued, then answered by supersede_queued() without being executed


class RpcServer:
    """Runs handlers on a thread pool (never on paho's network thread) and replies to each request."""

    def __init__(self, client: MqttClient, *, workers: int = 2, max_queued: int | None = None) -> None:
        self._client = client
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="rpc")
        self._max_queued = max_queued
        self._queued = 0  # submitted since the last supersede_queued(), not yet picked up by a worker
        self._generation = 0
        self._superseded_at = -math.inf  # UNIX s of the last supersede_queued()
        self._superseded_by = ""
        self._topics: list[str] = []
        self._closed = False
        self._lock = threading.Lock()
        self._stats = RpcServerStats()
        self._throttled = Throttled(log)

    def serve(self, topic: str, handler: Handler) -> None:
        """Answer requests to the address `topic` with `handler(body)` (body without the `deadline` key,
        with `login`: the requester's MQTT user)."""
        served = topics.request(topic, "+")
        self._topics.append(served)
        self._client.subscribe(served, lambda message: self._on_request(topic, handler, message), qos=1)

    def close(self) -> None:
        """Stop serving; waits for running handlers, requests still queued are dropped unexecuted."""
        with self._lock:
            self._closed = True
        for topic in self._topics:
            self._client.unsubscribe(topic)
        self._executor.shutdown(wait=True, cancel_futures=True)

    def supersede_queued(self, reason: str) -> None:
        """Every request waiting for a worker now, and every one sent before now that arrives later
        (by its `sent` time), is answered `reason` (ok: false), never executed.

        Requests already running are not affected; requests sent afterwards are served as usual.
        """
        with self._lock:
            self._generation += 1
            self._queued = 0  # what is queued now takes no room: answered as soon as a worker is free
            self._superseded_at = time.time()
            self._superseded_by = reason

    def _superseded(self, request: _Request) -> bool:
        """Whether supersede_queued() came after `request` was queued or sent (under the lock)."""
        sent_before = request.sent is not None and request.sent <= self._superseded_at
        return sent_before or request.generation != self._generation

    @property
    def queued(self) -> int:
        """Requests waiting for a worker."""
        with self._lock:
            return self._queued

    @property
    def stats(self) -> RpcServerStats:
        with self._lock:
            return RpcServerStats(**asdict(self._stats))

    def _reply(self, request: _Request, reply: dict[str, Any]) -> None:
        properties = publish_properties(CorrelationData=request.correlation)
        self._client.publish(request.reply_to, pack(reply), qos=1, properties=properties)

    def _drop(self, topic: str, kind: str, reason: str) -> None:
        """Count and log (once per topic and `kind`: `reason` may be anything a sender made up)."""
        with self._lock:
            self._stats.dropped += 1
        self._throttled.warning(f"{topic}:{kind}", "dropped request on %s: %s", topic, reason)

    def _on_request(self, topic: str, handler: Handler, message: Message) -> None:
        # Network thread: validate cheaply, execute elsewhere.
        properties = message.properties
        reply_to = getattr(properties, "ResponseTopic", None)
        correlation = getattr(properties, "CorrelationData", None)
        if not reply_to or not correlation:
            self._drop(topic, "no-reply-to", "no ResponseTopic/CorrelationData")
            return
        try:
            body = unpack_map(message.payload)
        except WireFormatError as exc:
            self._drop(topic, "undecodable", str(exc))
            return
        body["login"] = topics.login_of(message.topic)  # the last level: see topics.request
        deadline, sent = body.pop("deadline", None), body.pop("sent", None)
        if not isinstance(deadline, int | float) or isinstance(deadline, bool) or not math.isfinite(deadline):
            self._drop(topic, "deadline", "no finite numeric deadline")
            return
        if not isinstance(sent, int | float) or isinstance(sent, bool) or not math.isfinite(sent):
            sent = None
        now = time.time()
        if now > deadline:
            self._drop(topic, "stale", "deadline passed before delivery")
            return
        if deadline - now > MAX_DEADLINE_AHEAD_S:
            self._drop(topic, "deadline", f"deadline more than {MAX_DEADLINE_AHEAD_S:g} s ahead")
            return
        with self._lock:
            if self._closed:
                return
            request = _Request(topic, body, deadline, reply_to, correlation, self._generation, sent)
            superseded = self._superseded(request)
            busy = not superseded and self._max_queued is not None and self._queued >= self._max_queued
            if superseded:
                self._stats.superseded += 1
                reason = self._superseded_by
            elif busy:
                self._stats.busy += 1
            else:
                self._queued += 1
                self._executor.submit(self._execute, handler, request)
        if superseded:
            self._reply(request, {"ok": False, "error": reason})
        elif busy:
            self._throttled.warning(f"{topic}:busy", "refused a request on %s: queue full", topic)
            self._reply(
                request, {"ok": False, "error": f"busy: request queue full ({self._max_queued} waiting)"}
            )

    def _execute(self, handler: Handler, request: _Request) -> None:
        with self._lock:
            if request.generation == self._generation:
                self._queued -= 1
            superseded = self._superseded(request)
            if superseded:
                self._stats.superseded += 1
                reason = self._superseded_by
        if superseded:
            self._reply(request, {"ok": False, "error": reason})
            return
        if time.time() > request.deadline:
            self._drop(request.topic, "stale", "deadline passed while queued")
            return
        try:
            result: object = handler(request.body)
            if not isinstance(result, dict):
                raise TypeError(f"handler returned {type(result).__name__}, not a dict")
            reply: dict[str, Any] = {"ok": True, "result": result}
            outcome = "served"
        except RpcError as exc:
            reply = {"ok": False, "error": str(exc)}
            outcome = "refused"
        except Exception as exc:
            log.exception("RPC handler for %s failed", request.topic)
            reply = {"ok": False, "error": f"internal error: {type(exc).__name__}"}
            outcome = "failed"
        with self._lock:
            setattr(self._stats, outcome, getattr(self._stats, outcome) + 1)
        self._reply(request, reply)


@dataclass
class RpcClientStats:
    requests: int = 0
    replies: int = 0  # replies matched to a pending request
    timeouts: int = 0
    unmatched: int = 0  # replies for an unknown or expired correlation, or undecodable


@dataclass(frozen=True)
class _Pending:
    future: concurrent.futures.Future[dict[str, Any]]
    timer: threading.Timer


class RpcClient:
    """Sends requests and resolves their futures from the replies.

    Futures complete on paho's network thread or on a timer thread. From asyncio, await
    `asyncio.wrap_future(rpc.request(...))`: it hands the result over to the event loop thread-safely.
    """

    def __init__(self, client: MqttClient) -> None:
        self._client = client
        self._reply_topic = topics.replies(client.reply_id)
        self._lock = threading.Lock()
        self._pending: dict[bytes, _Pending] = {}
        self._stats = RpcClientStats()
        self._closed = False
        self._throttled = Throttled(log)
        client.subscribe(self._reply_topic, self._on_reply, qos=1)

    def request(
        self, topic: str, body: dict[str, Any], *, timeout: float = 2.0, sent: float | None = None
    ) -> concurrent.futures.Future[dict[str, Any]]:
        """Publish a request; the future gives the result, or raises RpcError or RpcTimeout.

        `sent` (UNIX s, at most now): when the request was issued, if earlier than now (a gateway
        relaying a command its client sent earlier); an abort supersedes it by that time."""
        if not 0 < timeout <= MAX_DEADLINE_AHEAD_S:
            raise ValueError(
                f"timeout must be positive and at most {MAX_DEADLINE_AHEAD_S:g} s, got {timeout}"
            )
        now = time.time()
        issued = now if sent is None else min(sent, now)
        payload = pack({**body, "deadline": now + timeout, "sent": issued})  # TypeError before bookkeeping
        correlation = os.urandom(_CORRELATION_BYTES)
        future: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        timer = threading.Timer(timeout, self._expire, (correlation, topic, timeout))
        timer.daemon = True
        with self._lock:
            if self._closed:
                raise RuntimeError("RpcClient is closed")
            self._pending[correlation] = _Pending(future, timer)
            self._stats.requests += 1
        future.add_done_callback(lambda _: self._forget(correlation))  # covers future.cancel()
        timer.start()
        properties = publish_properties(
            ResponseTopic=self._reply_topic,
            CorrelationData=correlation,
            MessageExpiryInterval=math.ceil(timeout),
        )
        if not self._client.publish(
            topics.request(topic, self._client.login), payload, qos=1, properties=properties
        ):
            self._settle(correlation, RpcError(f"request to {topic} not sent: MQTT outgoing queue full"))
        return future

    def call(
        self, topic: str, body: dict[str, Any], *, timeout: float = 2.0, sent: float | None = None
    ) -> dict[str, Any]:
        """Blocking request: the result, or RpcTimeout, or RpcError with the server's reason."""
        return self.request(topic, body, timeout=timeout, sent=sent).result()

    def close(self) -> None:
        """Unsubscribe; pending requests fail with RpcTimeout."""
        with self._lock:
            self._closed = True
            correlations = list(self._pending)
        self._client.unsubscribe(self._reply_topic)
        for correlation in correlations:
            self._settle(correlation, RpcTimeout("RPC client closed before the reply"))

    @property
    def stats(self) -> RpcClientStats:
        with self._lock:
            return RpcClientStats(**asdict(self._stats))

    @property
    def pending(self) -> int:
        """Requests waiting for their reply."""
        with self._lock:
            return len(self._pending)

    def _forget(self, correlation: bytes) -> None:
        with self._lock:
            pending = self._pending.pop(correlation, None)
        if pending is not None:
            pending.timer.cancel()

    def _settle(self, correlation: bytes, outcome: dict[str, Any] | BaseException) -> bool:
        """Complete the future of `correlation` if still pending; exactly one caller wins."""
        with self._lock:
            pending = self._pending.pop(correlation, None)
        if pending is None:
            return False
        pending.timer.cancel()
        if pending.future.set_running_or_notify_cancel():
            if isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)
        return True

    def _expire(self, correlation: bytes, topic: str, timeout: float) -> None:
        if self._settle(correlation, RpcTimeout(f"no reply from {topic} within {timeout} s")):
            with self._lock:
                self._stats.timeouts += 1

    def _on_reply(self, message: Message) -> None:
        correlation = getattr(message.properties, "CorrelationData", None)
        try:
            reply = unpack_map(message.payload)
        except WireFormatError as exc:
            reply = {"ok": False, "error": f"undecodable reply: {exc}"}
        if reply.get("ok") is True and isinstance(reply.get("result"), dict):
            outcome: dict[str, Any] | BaseException = reply["result"]
        else:
            outcome = RpcError(str(reply.get("error", "malformed reply")))
        settled = isinstance(correlation, bytes) and self._settle(correlation, outcome)
        with self._lock:
            if settled:
                self._stats.replies += 1
            else:
                self._stats.unmatched += 1
        if not settled:
            self._throttled.warning("unmatched", "ignored a reply for an unknown or expired request")
