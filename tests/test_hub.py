"""The WebSocket fan-out on its own: bounded per-client queues, drop-oldest, display reduction."""

from __future__ import annotations

import asyncio
import itertools
import json

import msgpack
import numpy as np
import pytest

from services.common.minmax import block_minmax, buckets_minmax
from services.common.telemetry import TelemetryBatch, decode_batch, encode_batch
from services.gateway.hub import Client, Frame, Hub, batch_frame

CHANNELS = ("P1", "P2", "ISP")


def make_batch(seq: int, n: int = 10, session: str = "s1") -> TelemetryBatch:
    data = np.arange(seq * 3, (seq + n) * 3, dtype=np.float32).reshape(n, 3)
    data[:, 2] = np.nan  # ISP undefined: ignored by min/max
    return TelemetryBatch(session, seq, 1000.0, CHANNELS, np.arange(seq, seq + n) / 1000.0, data)


class Socket:
    """A client connection whose reading can be held: `send` waits while the gate is closed."""

    def __init__(self) -> None:
        self.received: list[Frame] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, frame: Frame) -> None:
        await self.gate.wait()
        self.received.append(frame)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def batch_seqs(frames: list[Frame]) -> list[int]:
    seqs = []
    for frame in frames:
        if isinstance(frame, bytes):
            message = msgpack.unpackb(frame)
            if message["type"] == "sensor_batch":
                seqs.append(msgpack.unpackb(message["batch"])["seq"])
    return seqs


def test_batch_frame_carries_the_payload_unchanged() -> None:
    for size in (0, 200, 4000, 70_000):
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        assert msgpack.unpackb(batch_frame(payload)) == {"type": "sensor_batch", "batch": payload}


def test_minmax_ignores_nan_and_keeps_all_nan_columns_nan() -> None:
    data = np.array([[1, np.nan, np.nan], [3, 2, np.nan], [-1, 5, np.nan]], dtype=np.float32)
    low, high = block_minmax(data)
    assert low[:2].tolist() == [-1, 2] and high[:2].tolist() == [3, 5]
    assert np.isnan(low[2]) and np.isnan(high[2])
    low, high = block_minmax(data, np.array([1], dtype=np.intp))
    assert low.tolist() == [2] and high.tolist() == [5]
    starts, low2, high2 = buckets_minmax(data, 2)
    assert starts.tolist() == [0, 2]
    assert low2[:, 0].tolist() == [1, -1] and high2[:, 1].tolist() == [2, 5]


def test_full_mode_sends_the_chosen_channels_encoded_once_per_choice() -> None:
    async def scenario() -> None:
        hub = Hub(display_max_hz=60)
        sockets = [Socket() for _ in range(4)]
        clients = [Client(socket.send, limit=8) for socket in sockets]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        choices: list[tuple[str, ...] | None] = [None, ("P2",), ("ISP", "P1"), ("P2",)]
        for client, choice in zip(clients, choices, strict=True):
            hub.add(client)
            hub.subscribe_full(client, choice)
        batch = make_batch(40)
        payload = encode_batch(batch)
        hub.on_telemetry(batch, payload)
        await settle()
        assert hub.full_frames == 3  # every channel, P2, ISP+P1
        frames = [decode_batch(msgpack.unpackb(s.received[0])["batch"]) for s in sockets]
        assert msgpack.unpackb(sockets[0].received[0])["batch"] == payload  # as received
        assert frames[1].channels == ("P2",) and frames[1].data[:, 0].tolist() == batch.data[:, 1].tolist()
        assert frames[2].channels == ("ISP", "P1")
        assert np.array_equal(frames[2].data, batch.data[:, [2, 0]], equal_nan=True)
        assert all((f.session, f.seq, f.n) == ("s1", 40, 10) for f in frames)
        assert np.array_equal(frames[3].t, batch.t)
        for client in clients:
            hub.remove(client)
        await asyncio.gather(*tasks)

    asyncio.run(scenario())


def test_a_stuck_client_loses_its_oldest_frames_and_is_told_while_the_other_gets_everything() -> None:
    async def scenario() -> None:
        hub = Hub(display_max_hz=60)
        fast_socket, slow_socket = Socket(), Socket()
        fast, slow = Client(fast_socket.send, limit=8), Client(slow_socket.send, limit=8)
        tasks = [asyncio.create_task(c.run()) for c in (fast, slow)]
        for client in (fast, slow):
            hub.add(client)
            hub.subscribe_full(client)
        slow_socket.gate.clear()
        for i in range(100):
            batch = make_batch(i * 10)
            hub.on_telemetry(batch, encode_batch(batch))
            await settle()
        assert batch_seqs(fast_socket.received) == list(range(0, 1000, 10))
        assert fast.dropped == 0
        # the slow one holds one frame in its send, 8 queued; 91 dropped, oldest first
        assert slow.dropped == 91
        slow_socket.gate.set()
        await settle()
        assert batch_seqs(slow_socket.received) == [0, *range(920, 1000, 10)]
        notice = json.loads(next(f for f in slow_socket.received if isinstance(f, str)))
        assert notice == {"type": "dropped", "count": 91, "total": 91}
        assert isinstance(slow_socket.received[1], str), "told before the next stream frame"
        for client in (fast, slow):
            hub.remove(client)
        await asyncio.gather(*tasks)

    asyncio.run(scenario())


def test_control_frames_are_never_dropped_and_go_first() -> None:
    async def scenario() -> None:
        socket = Socket()
        client = Client(socket.send, limit=8, control_limit=4)
        socket.gate.clear()
        task = asyncio.create_task(client.run())
        for i in range(20):
            client.push(f"stream {i}")
        client.push_control("answer")
        await settle()
        socket.gate.set()
        await settle()
        assert socket.received[0] == "answer"
        assert json.loads(socket.received[1]) == {"type": "dropped", "count": 12, "total": 12}
        assert socket.received[2:] == [f"stream {i}" for i in range(12, 20)]
        socket.gate.clear()
        for i in range(6):
            client.push_control(f"c{i}")
        await settle()
        assert client.overflowed and client.closed
        socket.gate.set()
        await asyncio.wait_for(task, 1)

    asyncio.run(scenario())


def test_display_subscription_sends_min_max_of_the_asked_channels_at_its_rate() -> None:
    async def scenario() -> None:
        hub = Hub(display_max_hz=50)
        socket = Socket()
        client = Client(socket.send, limit=64)
        task = asyncio.create_task(client.run())
        hub.add(client)
        assert hub.subscribe_display(client, ["P2", "ISP"], max_hz=1000) == 50  # capped
        # batches every 10 ms of the hub's clock, 100 of them = 1 s: at most 50 frames + the first
        for i in range(100):
            batch = make_batch(i * 10)
            hub.on_telemetry(batch, encode_batch(batch), now=i * 0.01)
        await settle()
        frames = [msgpack.unpackb(f) for f in socket.received]
        assert all(f["type"] == "sensor_display" for f in frames)
        assert len(frames) <= 51
        assert sum(f["samples"] for f in frames) == 1000
        assert frames[0]["seq_first"] == 0 and frames[-1]["seq_next"] == 1000
        for before, after in itertools.pairwise(frames):
            assert after["seq_first"] == before["seq_next"]
        last = frames[-1]
        assert last["channels"] == ["P2", "ISP"]
        low = np.frombuffer(last["min"], "<f4").reshape(last["n"], 2)
        high = np.frombuffer(last["max"], "<f4").reshape(last["n"], 2)
        # P2 is column 1: values 3*s + 1 for sample s; the last bucket holds samples 990..999
        assert low[-1, 0] == 3 * 990 + 1 and high[-1, 0] == 3 * 999 + 1
        assert np.isnan(low[:, 1]).all()
        hub.remove(client)
        await task

    asyncio.run(scenario())


def test_client_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit"):
        Client(Socket().send, limit=0)
