"""RPC over MQTT v5 against a real mosquitto: results, refusals, failures, timeouts, stale requests."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from services.common import topics
from services.common.mqtt import MqttClient
from services.common.rpc import MAX_DEADLINE_AHEAD_S, RpcClient, RpcError, RpcServer, RpcTimeout
from services.common.settings import MqttSettings
from tests.conftest import wait_until

TOPIC = "rcs/rpc/actuation/echo"  # a command topic the broker lets `operator` request on
BOUNDED = "rcs/rpc/logger/bounded"  # a second server's address, also one `operator` may request on


@dataclass
class Recorder:
    """The handler under test: echoes, refuses or fails on demand, and remembers every call."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    gate: threading.Event = field(default_factory=threading.Event)

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.calls.append(body)
        if body.get("block"):
            self.gate.wait(10)
        if body.get("refuse"):
            raise RpcError(f"refused: {body['refuse']}")
        if body.get("fail"):
            return {"ratio": 1 / 0}
        return {"echo": body}


@dataclass
class Stack:
    server_mqtt: MqttClient
    client_mqtt: MqttClient
    server: RpcServer
    client: RpcClient
    handler: Recorder


@pytest.fixture
def stack(mqtt_settings: MqttSettings) -> Iterator[Stack]:
    server_mqtt = MqttClient(mqtt_settings, "test-rpc-server")
    client_mqtt = MqttClient(mqtt_settings, "test-rpc-client")
    server_mqtt.start()
    client_mqtt.start()
    server = RpcServer(server_mqtt)
    client = RpcClient(client_mqtt)
    handler = Recorder()
    server.serve(TOPIC, handler)
    try:
        assert server_mqtt.wait_connected(10) and client_mqtt.wait_connected(10)
        yield Stack(server_mqtt, client_mqtt, server, client, handler)
    finally:
        client.close()
        server.close()
        client_mqtt.stop()
        server_mqtt.stop()


def raw_request(
    stack: Stack, payload: bytes, *, response_topic: str | None = None, correlation: bytes | None = None
) -> None:
    """Publish a hand-made request, bypassing RpcClient's checks."""
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if response_topic is not None:
        properties.ResponseTopic = response_topic
    if correlation is not None:
        properties.CorrelationData = correlation
    request_topic = topics.request(TOPIC, stack.client_mqtt.login)
    assert stack.client_mqtt.publish(request_topic, payload, qos=1, properties=properties)


def test_round_trip_keeps_bytes_and_strips_the_deadline(stack: Stack) -> None:
    blob = bytes(range(256)) * 40
    result = stack.client.call(TOPIC, {"blob": blob, "n": 3}, timeout=5)
    assert result == {"echo": {"blob": blob, "n": 3, "login": "operator"}}
    assert stack.handler.calls == [{"blob": blob, "n": 3, "login": "operator"}]
    assert stack.client.pending == 0
    assert stack.server.stats.served == 1


def test_the_handler_sees_the_requesters_login_never_the_bodys(stack: Stack) -> None:
    """The login comes from the request topic, which only that user may publish on."""
    assert stack.client.call(TOPIC, {"login": "actuation"}, timeout=5) == {"echo": {"login": "operator"}}


def test_concurrent_requests_get_their_own_replies(stack: Stack) -> None:
    futures = [stack.client.request(TOPIC, {"i": i}, timeout=5) for i in range(20)]
    assert [f.result()["echo"]["i"] for f in futures] == list(range(20))
    assert stack.client.stats.replies == 20


def test_rpc_error_is_a_refusal_with_the_handlers_reason(stack: Stack) -> None:
    with pytest.raises(RpcError, match="refused: valve locked"):
        stack.client.call(TOPIC, {"refuse": "valve locked"}, timeout=5)
    assert stack.server.stats.refused == 1


def test_unexpected_exception_replies_internal_error(stack: Stack) -> None:
    with pytest.raises(RpcError, match="internal error: ZeroDivisionError"):
        stack.client.call(TOPIC, {"fail": True}, timeout=5)
    assert stack.server.stats.failed == 1
    assert stack.client.call(TOPIC, {"after": "failure"}, timeout=5)["echo"]["after"] == "failure"


def test_timeout_without_a_server_leaves_nothing_pending(stack: Stack) -> None:
    with pytest.raises(RpcTimeout):
        stack.client.call("rcs/rpc/test/nobody", {}, timeout=0.3)
    assert stack.client.pending == 0
    assert stack.client.stats.timeouts == 1


def test_usable_from_asyncio(stack: Stack) -> None:
    async def main() -> dict[str, Any]:
        return await asyncio.wrap_future(stack.client.request(TOPIC, {"from": "asyncio"}, timeout=5))

    assert asyncio.run(main()) == {"echo": {"from": "asyncio", "login": "operator"}}


def test_a_request_past_its_deadline_is_never_executed(stack: Stack) -> None:
    stale = msgpack.packb({"open": "MAIN_OX", "deadline": time.time() - 5}, use_bin_type=True)
    raw_request(stack, stale, response_topic=topics.replies("nobody"), correlation=os.urandom(16))
    wait_until(lambda: stack.server.stats.dropped == 1, what="the stale request to be dropped")

    assert stack.client.call(TOPIC, {"fresh": 1}, timeout=5) == {"echo": {"fresh": 1, "login": "operator"}}
    assert stack.handler.calls == [{"fresh": 1, "login": "operator"}]


def test_a_request_whose_deadline_passes_while_queued_is_never_executed(stack: Stack) -> None:
    busy = [
        stack.client.request(TOPIC, {"block": True, "i": i}, timeout=10) for i in range(2)
    ]  # both workers
    wait_until(lambda: len(stack.handler.calls) == 2, what="both workers to be busy")
    queued = stack.client.request(TOPIC, {"open": "MAIN_OX"}, timeout=0.3)
    with pytest.raises(RpcTimeout):
        queued.result()
    stack.handler.gate.set()
    assert [f.result()["echo"]["i"] for f in busy] == [0, 1]
    wait_until(lambda: stack.server.stats.dropped == 1, what="the queued request to be dropped")
    assert {"open": "MAIN_OX"} not in stack.handler.calls


@pytest.mark.parametrize(
    "deadline",
    [math.nan, math.inf, time.time() + 10 * MAX_DEADLINE_AHEAD_S],
    ids=["nan", "inf", "far-ahead"],
)
def test_a_request_that_could_never_go_stale_is_never_executed(stack: Stack, deadline: float) -> None:
    forever = msgpack.packb({"open": "MAIN_OX", "deadline": deadline})
    raw_request(stack, forever, response_topic=topics.replies("nobody"), correlation=os.urandom(16))
    wait_until(lambda: stack.server.stats.dropped == 1, what="the request to be dropped")
    assert stack.client.call(TOPIC, {"fresh": 1}, timeout=5) == {"echo": {"fresh": 1, "login": "operator"}}
    assert stack.handler.calls == [{"fresh": 1, "login": "operator"}]


def test_garbage_is_logged_once_per_kind_not_once_per_text(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    reply_to = topics.replies("nobody")
    with caplog.at_level(logging.WARNING, logger="services.common.rpc"):
        for i in range(20):
            garbage = b"\xc1" + os.urandom(8) if i % 2 else msgpack.packb(list(os.urandom(i)))
            raw_request(stack, garbage, response_topic=reply_to, correlation=os.urandom(16))
        wait_until(lambda: stack.server.stats.dropped == 20, what="twenty garbage requests to be dropped")
    assert caplog.text.count("dropped request on") == 1, caplog.text


def test_malformed_requests_are_counted_and_the_server_survives(stack: Stack) -> None:
    reply_to, correlation = topics.replies("nobody"), os.urandom(16)
    raw_request(stack, b"\xc1 not msgpack", response_topic=reply_to, correlation=correlation)
    raw_request(stack, msgpack.packb([1, 2, 3]), response_topic=reply_to, correlation=correlation)
    raw_request(stack, msgpack.packb({"no": "deadline"}), response_topic=reply_to, correlation=correlation)
    fresh = msgpack.packb({"deadline": time.time() + 60})
    raw_request(stack, fresh, correlation=correlation)  # no ResponseTopic
    raw_request(stack, fresh, response_topic=reply_to)  # no CorrelationData
    wait_until(lambda: stack.server.stats.dropped == 5, what="five malformed requests to be dropped")

    assert stack.client.call(TOPIC, {"still": "alive"}, timeout=5) == {
        "echo": {"still": "alive", "login": "operator"}
    }
    assert stack.handler.calls == [{"still": "alive", "login": "operator"}]


def test_a_reply_nobody_waits_for_is_counted_and_ignored(stack: Stack) -> None:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.CorrelationData = os.urandom(16)
    reply = msgpack.packb({"ok": True, "result": {}})
    assert stack.server_mqtt.publish(topics.replies(stack.client_mqtt.reply_id), reply, properties=properties)
    wait_until(lambda: stack.client.stats.unmatched == 1, what="the unmatched reply")
    assert stack.client.call(TOPIC, {}, timeout=5) == {"echo": {"login": "operator"}}


@pytest.fixture
def one_worker(stack: Stack) -> Iterator[tuple[RpcServer, Recorder]]:
    """A second server on the stack's connection: one worker, at most 2 requests waiting for it."""
    server, handler = RpcServer(stack.server_mqtt, workers=1, max_queued=2), Recorder()
    server.serve(BOUNDED, handler)
    try:
        assert stack.server_mqtt.wait_connected(10)
        yield server, handler
    finally:
        handler.gate.set()
        server.close()


def test_a_bounded_server_refuses_at_once_what_finds_its_queue_full(
    stack: Stack, one_worker: tuple[RpcServer, Recorder]
) -> None:
    server, handler = one_worker
    running = stack.client.request(BOUNDED, {"n": 0, "block": True}, timeout=10)
    wait_until(lambda: len(handler.calls) == 1, 5, "the worker to be busy")
    queued = [stack.client.request(BOUNDED, {"n": n}, timeout=10) for n in (1, 2)]
    wait_until(lambda: server.queued == 2, 5, "two requests queued")
    with pytest.raises(RpcError, match=r"^busy: request queue full \(2 waiting\)$"):
        stack.client.call(BOUNDED, {"n": 3}, timeout=10)  # answered while the worker blocks
    assert server.stats.busy == 1 and [c["n"] for c in handler.calls] == [0]
    handler.gate.set()
    assert [f.result(10)["echo"]["n"] for f in (running, *queued)] == [0, 1, 2]


def test_superseded_requests_are_answered_and_never_run(
    stack: Stack, one_worker: tuple[RpcServer, Recorder]
) -> None:
    server, handler = one_worker
    running = stack.client.request(BOUNDED, {"n": 0, "block": True}, timeout=10)
    wait_until(lambda: len(handler.calls) == 1, 5, "the worker to be busy")
    queued = [stack.client.request(BOUNDED, {"n": n}, timeout=10) for n in (1, 2)]
    wait_until(lambda: server.queued == 2, 5, "two requests queued")
    server.supersede_queued("superseded by abort")
    later = stack.client.request(BOUNDED, {"n": 3}, timeout=10)
    handler.gate.set()
    assert running.result(10)["echo"]["n"] == 0, "the request already running completes"
    for future in queued:
        with pytest.raises(RpcError, match=r"^superseded by abort$"):
            future.result(10)
    assert later.result(10)["echo"]["n"] == 3, "requests after it are served as usual"
    assert [c["n"] for c in handler.calls] == [0, 3]
    assert server.stats.superseded == 2


def test_a_request_sent_before_a_supersede_that_arrives_after_it_never_runs(stack: Stack) -> None:
    """In transit (e.g. in the broker's queue) when the abort came: it was sent before, so superseded."""
    stack.server.supersede_queued("superseded by abort")
    in_transit = msgpack.packb(
        {"n": 1, "deadline": time.time() + 5, "sent": time.time() - 1}, use_bin_type=True
    )
    raw_request(stack, in_transit, response_topic=topics.replies("nobody"), correlation=os.urandom(16))
    wait_until(lambda: stack.server.stats.superseded == 1, what="the request sent before to be superseded")
    assert stack.client.call(TOPIC, {"n": 2}, timeout=5) == {"echo": {"n": 2, "login": "operator"}}, (
        "sent after"
    )
    assert stack.handler.calls == [{"n": 2, "login": "operator"}]


def test_a_request_issued_before_a_supersede_and_published_after_it_never_runs(stack: Stack) -> None:
    """A relay (the gateway) publishing, after an abort, a command its client issued before it:
    `sent` says when it was issued, and the abort supersedes it; a `sent` in the future is now."""
    issued = time.time()
    stack.server.supersede_queued("superseded by abort")
    with pytest.raises(RpcError, match=r"^superseded by abort$"):
        stack.client.call(TOPIC, {"n": 1}, timeout=5, sent=issued)
    assert stack.client.call(TOPIC, {"n": 2}, timeout=5, sent=time.time() + 60) == {
        "echo": {"n": 2, "login": "operator"}
    }
    assert stack.handler.calls == [{"n": 2, "login": "operator"}]
