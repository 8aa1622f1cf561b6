"""Repairer against a real acquisition history server (RingBuffer + HistorySource + RpcServer) on the
test broker: paging, device gaps, overwritten ranges, another session, retries, stop, refusals."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pytest

from services.acquisition.history import HistorySource
from services.acquisition.ring_buffer import RingBuffer
from services.common import topics
from services.common.mqtt import MqttClient
from services.common.rpc import RpcClient, RpcServer
from services.common.settings import MqttSettings, Settings
from services.logger.repair import (
    NEVER_RECEIVED,
    OLDER_THAN_RING,
    RING_EMPTY,
    Repaired,
    Repairer,
    Unrepairable,
)
from tests.conftest import wait_until

CHANNELS = ("A", "B", "C")
SESSION = "20260101T000000Z-aaaaaa"
PAGE = 7


def rows_of(seq: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    """Every row says which sample it is."""
    return np.stack((seq, -seq, seq / 2), axis=1).astype(np.float32).reshape(-1, len(CHANNELS))


def ring_with(capacity: int, *blocks: tuple[int, int]) -> RingBuffer:
    """A ring holding the `(first_seq, n)` blocks, in order (gaps between them are device gaps)."""
    ring = RingBuffer(capacity, len(CHANNELS))
    for first, n in blocks:
        seq = np.arange(first, first + n, dtype=np.int64)
        ring.append(first, seq.astype(np.float64) * 0.25, rows_of(seq))
    return ring


@contextmanager
def acquisition(mqtt: MqttSettings, ring: RingBuffer, session: str = SESSION) -> Iterator[RpcServer]:
    """acquisition's history service, logged in as `acquisition`, until the block ends."""
    client = MqttClient(mqtt, "test-repair-acquisition")
    server = RpcServer(client)
    server.serve(topics.ACQ_HISTORY, HistorySource(ring, session, CHANNELS).history)
    client.start()
    try:
        assert client.wait_connected(10)
        yield server
    finally:
        server.close()
        client.stop()


@dataclass
class Outcomes:
    repaired: list[Repaired] = field(default_factory=list)
    unrepairable: list[Unrepairable] = field(default_factory=list)
    failures_to_inject: int = 0  # on_repaired raises this many times first
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_repaired(self, page: Repaired) -> None:
        with self.lock:
            if self.failures_to_inject:
                self.failures_to_inject -= 1
                raise OSError("disk full (injected)")
            self.repaired.append(page)

    def on_unrepairable(self, gone: Unrepairable) -> None:
        with self.lock:
            self.unrepairable.append(gone)

    def repaired_seqs(self) -> list[int]:
        with self.lock:
            return [int(s) for page in self.repaired for s in page.seq]

    def gone(self) -> list[tuple[str, int, int, str]]:
        with self.lock:
            return [(u.session, u.seq_from, u.seq_to, u.reason) for u in self.unrepairable]


@dataclass
class Logger:
    repairer: Repairer
    rpc: RpcClient
    outcomes: Outcomes

    def settled(self) -> bool:
        return self.repairer.pending_samples == 0


@pytest.fixture
def make_logger(
    mqtt_as: Callable[[str], MqttSettings], settings: Settings
) -> Iterator[Callable[..., Logger]]:
    """`make_logger(page=..., rpc_timeout_s=...)`: a Repairer logged in as `logger` (not started)."""
    cleanup: list[Callable[[], None]] = []

    def make(*, page: int = PAGE, rpc_timeout_s: float = 5.0) -> Logger:
        client = MqttClient(mqtt_as("logger"), "test-repair-logger")
        rpc = RpcClient(client)
        client.start()
        assert client.wait_connected(10)
        # model_copy skips validation: page=0 lets a test provoke a real refusal from the server
        configured = settings.model_copy(
            update={"logger": settings.logger.model_copy(update={"repair_page_samples": page})}
        )
        outcomes = Outcomes()
        repairer = Repairer(
            rpc,
            configured,
            on_repaired=outcomes.on_repaired,
            on_unrepairable=outcomes.on_unrepairable,
            rpc_timeout_s=rpc_timeout_s,
        )
        cleanup.extend([client.stop, rpc.close, repairer.stop])
        return Logger(repairer, rpc, outcomes)

    yield make
    for step in reversed(cleanup):
        step()


def assert_consistent(logger: Logger) -> None:
    """Every repaired page is consecutive and carries its samples; the books balance."""
    for page in logger.outcomes.repaired:
        assert page.session == SESSION
        assert page.channels == CHANNELS
        np.testing.assert_array_equal(page.seq, page.seq[0] + np.arange(len(page.seq)))
        np.testing.assert_array_equal(page.t, page.seq * 0.25)
        np.testing.assert_array_equal(page.data, rows_of(page.seq))
    stats = logger.repairer.stats
    gone = sum(u.size for u in logger.outcomes.unrepairable)
    assert stats.repaired_samples == len(logger.outcomes.repaired_seqs())
    assert stats.unrepairable_samples == gone
    assert stats.requested_samples == (
        stats.repaired_samples + stats.unrepairable_samples + logger.repairer.pending_samples
    )


def test_pages_through_the_ring_and_names_what_it_lacks(
    mqtt_as: Callable[[str], MqttSettings], make_logger: Callable[..., Logger]
) -> None:
    # 140 samples through a ring of 100: seq 0..39 overwritten, 40..59 held, 60..69 never received
    # (a device gap), 70..149 held.
    ring = ring_with(100, (0, 60), (70, 80))
    logger = make_logger()
    repairer = logger.repairer
    for seq_from, seq_to in [(10, 50), (30, 120), (10, 120), (130, 150), (140, 145)]:
        repairer.request(SESSION, seq_from, seq_to)  # overlapping and duplicate requests merge
    assert repairer.stats.requested_samples == repairer.pending_samples == 110 + 20
    with acquisition(mqtt_as("acquisition"), ring) as server:
        repairer.start()
        wait_until(logger.settled, timeout=20, what="the repair")
        assert server.stats.served >= (20 + 50 + 20) // PAGE
    assert logger.outcomes.repaired_seqs() == [*range(40, 60), *range(70, 120), *range(130, 150)]
    assert all(len(page.seq) <= PAGE for page in logger.outcomes.repaired)
    assert logger.outcomes.gone() == [
        (SESSION, 10, 40, OLDER_THAN_RING),
        (SESSION, 60, 70, NEVER_RECEIVED),
    ]
    assert_consistent(logger)
    assert repairer.stats.repaired_samples == 90
    assert repairer.stats.unrepairable_samples == 40
    assert repairer.stats.rpc_failures == 0


def test_a_gap_of_a_previous_session_is_gone(
    mqtt_as: Callable[[str], MqttSettings], make_logger: Callable[..., Logger]
) -> None:
    logger = make_logger()
    logger.repairer.request("old", 0, 100)
    logger.repairer.request("old", 200, 300)
    logger.repairer.request(SESSION, 5, 10)
    with acquisition(mqtt_as("acquisition"), ring_with(50, (0, 20))):
        logger.repairer.start()
        wait_until(logger.settled, timeout=20, what="the repair")
    gone = "acquisition restarted: session old is gone"
    assert logger.outcomes.gone() == [("old", 0, 100, gone), ("old", 200, 300, gone)]
    assert logger.outcomes.repaired_seqs() == list(range(5, 10))
    assert_consistent(logger)


def test_an_empty_ring_repairs_nothing(
    mqtt_as: Callable[[str], MqttSettings], make_logger: Callable[..., Logger]
) -> None:
    logger = make_logger()
    logger.repairer.request(SESSION, 0, 30)
    with acquisition(mqtt_as("acquisition"), ring_with(50)):
        logger.repairer.start()
        wait_until(logger.settled, timeout=20, what="the repair")
    assert logger.outcomes.gone() == [(SESSION, 0, 30, RING_EMPTY)]
    assert_consistent(logger)


def test_waits_for_acquisition_then_repairs(
    mqtt_as: Callable[[str], MqttSettings], make_logger: Callable[..., Logger]
) -> None:
    logger = make_logger(rpc_timeout_s=0.3)
    repairer = logger.repairer
    repairer.start()
    repairer.request(SESSION, 20, 40)
    wait_until(lambda: repairer.stats.rpc_failures >= 2, timeout=20, what="two timeouts")
    assert repairer.pending_samples == 20  # still queued
    assert logger.outcomes.repaired == [] and logger.outcomes.unrepairable == []
    repairer.request(SESSION, 35, 45)  # joins the queued gap while acquisition is away
    with acquisition(mqtt_as("acquisition"), ring_with(100, (0, 60))):
        wait_until(logger.settled, timeout=30, what="the repair after acquisition appeared")
    assert logger.outcomes.repaired_seqs() == list(range(20, 45))
    assert_consistent(logger)


def test_a_failing_callback_is_retried_without_settling_anything_twice(
    mqtt_as: Callable[[str], MqttSettings], make_logger: Callable[..., Logger]
) -> None:
    logger = make_logger()
    logger.outcomes.failures_to_inject = 2
    logger.repairer.request(SESSION, 0, 40)
    with acquisition(mqtt_as("acquisition"), ring_with(100, (5, 10), (20, 30))):
        logger.repairer.start()
        wait_until(logger.settled, timeout=30, what="the repair")
    assert logger.outcomes.repaired_seqs() == [*range(5, 15), *range(20, 40)]
    assert logger.outcomes.gone() == [
        (SESSION, 0, 5, OLDER_THAN_RING),
        (SESSION, 15, 20, NEVER_RECEIVED),
    ]
    assert logger.repairer.stats.callback_failures == 2
    assert_consistent(logger)


def test_a_refusal_is_unrepairable_with_the_servers_reason(
    mqtt_as: Callable[[str], MqttSettings], make_logger: Callable[..., Logger]
) -> None:
    logger = make_logger(page=0)  # HistorySource refuses max_samples < 1
    logger.repairer.request(SESSION, 0, 10)
    with acquisition(mqtt_as("acquisition"), ring_with(100, (0, 60))):
        logger.repairer.start()
        wait_until(logger.settled, timeout=20, what="the refusal")
    assert logger.outcomes.gone() == [(SESSION, 0, 10, "'max_samples' must be >= 1, got 0")]
    assert_consistent(logger)


def test_stop_while_a_request_is_in_flight(make_logger: Callable[..., Logger]) -> None:
    logger = make_logger(rpc_timeout_s=60)  # nobody answers: the request would wait a minute
    logger.repairer.start()
    logger.repairer.request(SESSION, 0, 10)
    wait_until(lambda: logger.rpc.pending == 1, what="the request")
    logger.repairer.stop()  # pytest's timeout bounds it: stop() must not wait for the RPC
    assert logger.rpc.pending == 0  # abandoned, not left to time out
    assert logger.repairer.pending_samples == 10
    assert logger.repairer.pending() == {SESSION: [(0, 10)]}  # what the logger names at its stop
    assert logger.repairer.stats.rpc_failures == 0


def test_stop_during_the_backoff(make_logger: Callable[..., Logger]) -> None:
    logger = make_logger(rpc_timeout_s=0.2)
    logger.repairer.start()
    logger.repairer.request(SESSION, 0, 10)
    wait_until(lambda: logger.repairer.stats.rpc_failures >= 3, timeout=30, what="three timeouts")
    logger.repairer.stop()  # the backoff has reached 2 s and more; stop() cuts it short
    assert logger.repairer.pending_samples == 10
    assert logger.outcomes.repaired == [] and logger.outcomes.unrepairable == []


def test_request_validates_and_ignores_empty_ranges(make_logger: Callable[..., Logger]) -> None:
    repairer = make_logger().repairer
    repairer.request(SESSION, 10, 10)
    repairer.request(SESSION, 10, 5)
    assert repairer.pending_samples == 0
    with pytest.raises(ValueError, match="seq_from"):
        repairer.request(SESSION, -1, 5)


def test_a_request_the_mqtt_client_cannot_queue_is_retried_not_unrepairable(
    mqtt_as: Callable[[str], MqttSettings], settings: Settings
) -> None:
    with socket.socket() as probe:  # a port nobody listens on: the client never connects
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mqtt = mqtt_as("logger").model_copy(update={"port": port, "max_queued_messages": 1})
    client = MqttClient(mqtt, "test-repair-offline")
    rpc = RpcClient(client)
    client.start()
    outcomes = Outcomes()
    repairer = Repairer(
        rpc,
        settings,
        on_repaired=outcomes.on_repaired,
        on_unrepairable=outcomes.on_unrepairable,
        rpc_timeout_s=0.2,
    )
    repairer.start()
    try:
        repairer.request(SESSION, 0, 10)
        # the first request fills the outgoing queue and times out; the next ones are not even sent
        wait_until(lambda: repairer.stats.rpc_failures >= 3, timeout=30, what="three failed attempts")
        assert client.stats.dropped >= 1
        assert outcomes.unrepairable == []
        assert repairer.pending_samples == 10
    finally:
        repairer.stop()
        rpc.close()
        client.stop()
