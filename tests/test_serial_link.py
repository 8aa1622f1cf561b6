"""SerialLink over real pseudo-terminals: detection, streaming, commands, heartbeats, unplug/replug.

The device side is written here: a pty whose slave sits behind a stable symlink (what udev gives a
USB device), fed by the test through the master. Unplugging closes both ends and removes the link.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import select
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from serial.tools.list_ports_common import ListPortInfo

from services.acquisition.binary_protocol import RawBlock
from services.acquisition.ports import find_stm32_port
from services.acquisition.serial_link import LinkInfo, SerialLink
from services.acquisition.text_protocol import EngineeringBlock, TextAck
from services.common.settings import Settings, Stm32Settings, load_settings
from services.common.stm32_wire import (
    AckResult,
    Deframer,
    Frame,
    GoSafeFrame,
    HeartbeatFrame,
    HelloFrame,
    SetValvesFrame,
    StatusFrame,
    ValveAckFrame,
    encode_hello,
    encode_samples,
    encode_status,
    encode_valve_ack,
    parse_frame,
)
from tests.conftest import wait_until

STAND = load_settings()
N_MEASURED = len(STAND.measured_channels)
FIXTURE_LINE = (Path(__file__).parent / "fixtures" / "stm32_text_line.txt").read_bytes()
DEVICE = "rcs-test-pty"


class PtyDevice:
    """A device behind `link`: streams binary frames or text lines, records what the host sends.

    In binary mode it answers HELLO with a STATUS (a few SAMPLES frames later, so the host sees
    samples before it knows the device) and SET_VALVES with a VALVE_ACK, as firmware does.
    """

    def __init__(self, link: Path, protocol: str) -> None:
        self.link = link
        self.protocol = protocol
        self.streaming = threading.Event()
        self.received = bytearray()
        self.frames: list[Frame] = []
        self._lock = threading.Lock()
        self._counter = 0
        self._plugged = threading.Event()
        self._hello = threading.Event()
        self._status_in = 3
        self._threads: list[threading.Thread] = []
        self.master = self.slave = -1

    def plug(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)  # a host that does not read makes the device drop data
        staging = self.link.with_suffix(".new")
        staging.symlink_to(os.ttyname(self.slave))
        staging.replace(self.link)
        self._plugged.set()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._read, self._stream)]
        for thread in self._threads:
            thread.start()

    def unplug(self) -> None:
        self._plugged.clear()
        for thread in self._threads:
            thread.join()
        os.close(self.master)
        os.close(self.slave)
        self.link.unlink()

    def write(self, data: bytes) -> None:
        # like a USB device whose host is not reading: what does not fit is lost
        with self._lock, contextlib.suppress(BlockingIOError):
            os.write(self.master, data)

    def host_frames(self, kind: type[Frame]) -> list[Frame]:
        with self._lock:
            return [f for f in self.frames if isinstance(f, kind)]

    def _read(self) -> None:
        deframer = Deframer()
        while self._plugged.is_set():
            if not select.select([self.master], [], [], 0.02)[0]:
                continue
            try:
                data = os.read(self.master, 65536)
            except (BlockingIOError, OSError):
                continue  # EIO while no host has the slave open
            with self._lock:
                self.received += data
            if self.protocol != "binary":
                continue
            for body in deframer.feed(data):
                frame = parse_frame(body)
                with self._lock:
                    self.frames.append(frame)
                if isinstance(frame, HelloFrame):
                    self._hello.set()
                elif isinstance(frame, SetValvesFrame):
                    self.write(encode_valve_ack(ValveAckFrame(frame.cmd_no, frame.valves, AckResult.APPLIED)))

    def _stream(self) -> None:
        rng = np.random.default_rng(0)
        while self._plugged.is_set():
            time.sleep(0.002)
            if not self.streaming.is_set():
                continue
            if self.protocol == "binary":
                raw = rng.integers(0, 4096, (20, N_MEASURED), dtype=np.uint16)
                self.write(encode_samples(self._counter, self._counter * 100, raw))
                self._counter += 20
                if self._hello.is_set():  # answered from the main loop, a few SAMPLES frames later
                    self._status_in -= 1
                    if self._status_in == 0:
                        self._hello.clear()
                        self._status_in = 3
                        self.write(encode_status(StatusFrame(1, 10_000, N_MEASURED, 0, 2, 0, DEVICE)))
            else:
                self.write(FIXTURE_LINE)


class Recorder:
    """The four callbacks, recording into lists (on the link thread)."""

    def __init__(self) -> None:
        self.blocks: list[RawBlock | EngineeringBlock] = []
        self.statuses: list[StatusFrame] = []
        self.acks: list[ValveAckFrame | TextAck] = []
        self.connections: list[LinkInfo | None] = []
        self.fail_next_block = False
        self.unannounced_blocks = 0  # delivered while not connected: must stay 0

    def on_block(self, block: RawBlock | EngineeringBlock) -> None:
        self.blocks.append(block)
        if not self.connections or self.connections[-1] is None:
            self.unannounced_blocks += 1
        if self.fail_next_block:
            self.fail_next_block = False
            raise RuntimeError("a consumer bug")

    def assert_counters_increase(self) -> None:
        """No sample delivered twice (gaps are possible: the pty drops what the host does not read)."""
        raw = [b for b in self.blocks if isinstance(b, RawBlock)]
        overlaps = [
            (a.counter, len(a.raw), b.counter)
            for a, b in itertools.pairwise(raw)
            if b.counter < a.counter + len(a.raw)
        ]
        assert overlaps == []
        assert self.unannounced_blocks == 0

    def samples(self) -> int:
        return sum(len(b.raw) if isinstance(b, RawBlock) else len(b.values) for b in self.blocks)

    def link(self, settings: Settings) -> SerialLink:
        return SerialLink(
            settings,
            on_block=self.on_block,
            on_status=self.statuses.append,
            on_ack=self.acks.append,
            on_connection=self.connections.append,
        )


def link_settings(link: Path, **stm32: object) -> Settings:
    options = {"port": str(link), "reconnect_s": 0.05, "detect_timeout_s": 2.0, **stm32}
    return STAND.model_copy(update={"stm32": STAND.stm32.model_copy(update=options)})


@pytest.fixture
def binary_device(tmp_path: Path) -> Iterator[PtyDevice]:
    device = PtyDevice(tmp_path / "stm32", "binary")
    device.plug()
    device.streaming.set()
    yield device
    if device.link.is_symlink():
        device.unplug()


def test_binary_stream_commands_heartbeats_garbage_and_replug(binary_device: PtyDevice) -> None:
    device, recorder = binary_device, Recorder()
    link = recorder.link(link_settings(device.link))
    link.start()
    try:
        wait_until(lambda: recorder.connections != [], 10.0, "the link to connect")
        assert recorder.connections == [LinkInfo(str(device.link), "binary", DEVICE)]
        wait_until(lambda: recorder.samples() >= 2_000, 10.0, "samples")
        assert all(isinstance(b, RawBlock) and b.raw.shape[1] == N_MEASURED for b in recorder.blocks)
        assert recorder.statuses[0].device == DEVICE
        stats = link.stats
        assert stats.connected and stats.protocol == "binary" and stats.bytes_read > 0

        assert link.set_valves(41, 0b10)
        assert link.go_safe(42)
        wait_until(lambda: len(device.host_frames(GoSafeFrame)) == 1, 10.0, "GO_SAFE on the device side")
        assert device.host_frames(SetValvesFrame) == [SetValvesFrame(41, 0b10)]
        assert device.host_frames(GoSafeFrame) == [GoSafeFrame(42)]
        wait_until(lambda: ValveAckFrame(41, 0b10, AckResult.APPLIED) in recorder.acks, 10.0, "the ACK")
        wait_until(lambda: len(device.host_frames(HeartbeatFrame)) >= 5, 10.0, "heartbeats")
        assert device.host_frames(HelloFrame) == [HelloFrame()]
        with pytest.raises(ValueError):
            link.set_valves(43, 1 << len(STAND.valves))

        before = recorder.samples()
        device.write(np.random.default_rng(1).integers(0, 256, 5_000, dtype=np.uint8).tobytes())
        device.write(b"\x00\x00\x07not a frame\x00" + encode_hello()[:-1])  # cut short: merges with the next
        wait_until(lambda: recorder.samples() >= before + 2_000, 10.0, "samples after garbage")
        stats = link.stats
        assert stats.crc_errors + stats.bad_frames >= 2
        assert stats.connected and stats.reconnects == 0

        device.unplug()
        wait_until(lambda: recorder.connections[-1] is None, 10.0, "the unplug to be noticed")
        unplugged = link.stats  # (a snapshot per step: mypy narrows repeated property reads)
        assert not unplugged.connected
        assert not link.set_valves(44, 0)
        device.plug()
        wait_until(lambda: len(recorder.connections) == 3, 10.0, "the link to reconnect")
        assert recorder.connections[-1] == LinkInfo(str(device.link), "binary", DEVICE)
        before = recorder.samples()
        wait_until(lambda: recorder.samples() >= before + 2_000, 10.0, "samples after replug")
        replugged = link.stats
        assert replugged.reconnects == 1 and replugged.connected
        recorder.assert_counters_increase()  # within each connection: the device did not reset
    finally:
        link.stop()
    final = link.stats
    assert recorder.connections[-1:] == [None] and not final.connected


def test_text_protocol_is_detected_streamed_and_commanded(tmp_path: Path) -> None:
    device, recorder = PtyDevice(tmp_path / "stm32", "text"), Recorder()
    device.plug()
    device.streaming.set()
    recorder.fail_next_block = True  # a consumer that raises once must not stop the link
    link = recorder.link(link_settings(device.link))
    link.start()
    try:
        wait_until(lambda: recorder.connections != [], 10.0, "the link to connect")
        assert recorder.connections == [LinkInfo(str(device.link), "text", "")]
        wait_until(lambda: recorder.samples() >= 50, 10.0, "text samples")
        block = recorder.blocks[-1]
        assert isinstance(block, EngineeringBlock) and block.values.shape[1] == len(STAND.channels)
        assert block.values[0, STAND.channel_names.index("THRUST")] == np.float32(1250.5)

        assert link.set_valves(7, 0b10)
        assert link.go_safe(8)
        commands = b"Valves:010000000\nValves:000000000\n"
        wait_until(lambda: device.received.endswith(commands), 10.0, "the valve commands")
        # HELLO, then a newline ending that junk line for the legacy firmware; never a heartbeat
        assert bytes(device.received) == encode_hello() + b"\n" + commands
        device.write(b"ACK: Valves:010000000\r\n")
        wait_until(lambda: TextAck(ok=True, text="Valves:010000000") in recorder.acks, 10.0, "the ACK line")
        assert link.stats.protocol == "text" and link.stats.bad_lines == 0
    finally:
        link.stop()
        device.unplug()


def test_a_silent_device_is_retried_until_it_speaks(tmp_path: Path) -> None:
    device, recorder = PtyDevice(tmp_path / "stm32", "text"), Recorder()
    device.plug()
    link = recorder.link(link_settings(device.link, detect_timeout_s=0.1))
    link.start()
    try:
        wait_until(lambda: device.received.count(encode_hello()) >= 3, 10.0, "repeated detection attempts")
        assert recorder.connections == [] and not link.stats.connected
        device.streaming.set()
        wait_until(lambda: recorder.connections != [], 10.0, "the link to connect")
        assert recorder.connections == [LinkInfo(str(device.link), "text", "")]
    finally:
        link.stop()
        device.unplug()


def test_a_missing_port_is_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    device, recorder = PtyDevice(tmp_path / "stm32", "binary"), Recorder()
    link = recorder.link(link_settings(device.link, protocol="binary"))
    caplog.set_level(logging.WARNING)
    link.start()
    try:
        failed_open = f"cannot open {device.link}"
        wait_until(lambda: any(failed_open in r.getMessage() for r in caplog.records), 10.0, "a failed open")
        assert recorder.connections == [] and link.stats.reconnects == 0  # no crash, no connection
        device.plug()
        device.streaming.set()
        wait_until(lambda: recorder.samples() > 0, 10.0, "samples once the port appears")
        assert recorder.connections == [LinkInfo(str(device.link), "binary", DEVICE)]
    finally:
        link.stop()
        device.unplug()


def port(device: str, vid: int | None = None, pid: int | None = None) -> ListPortInfo:
    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid = vid, pid
    return info


def test_find_stm32_port_by_vid_pid_native_usb_first() -> None:
    arduino = port("/dev/ttyACM0", 0x2341, 0x0043)
    stlink = port("/dev/ttyACM1", 0x0483, 0x374B)
    native = port("/dev/ttyACM2", 0x0483, 0x5740)
    serial_only = port("/dev/ttyS0")
    auto = STAND.model_copy(update={"stm32": Stm32Settings()})
    assert find_stm32_port(auto, [serial_only, arduino, stlink, native]) == "/dev/ttyACM2"
    assert find_stm32_port(auto, [arduino, stlink, serial_only]) == "/dev/ttyACM1"
    assert find_stm32_port(auto, [arduino, serial_only]) is None
    assert find_stm32_port(auto, []) is None
    lower_case = STAND.model_copy(update={"stm32": Stm32Settings(vid_pids=("0483:374b",))})
    assert find_stm32_port(lower_case, [native, stlink]) == "/dev/ttyACM1"


def test_the_configured_port_overrides_detection() -> None:
    configured = STAND.model_copy(update={"stm32": Stm32Settings(port="/dev/serial/by-id/stm32")})
    native = port("/dev/ttyACM2", 0x0483, 0x5740)
    assert find_stm32_port(configured, [native]) == "/dev/serial/by-id/stm32"
