"""The STM32 serial link: one daemon thread owns the port, survives unplug/replug and garbage.

Per connection: find the port, open it, recognise the protocol (binary v1 or legacy text), then
read in bulk and hand decoded blocks, status frames and acknowledgements to the callbacks, on this
thread (consumers must be quick). With the binary protocol the same thread sends a HEARTBEAT every
`stm32.heartbeat_ms`: the device closes every valve when they stop. Any serial error ends the
connection; the thread then retries every `stm32.reconnect_s` with fresh decoders (the device may
have reset in between).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Literal, TypeVar

import serial

from services.acquisition import text_protocol
from services.acquisition.binary_protocol import BinaryDecoder, BinaryMessage, RawBlock
from services.acquisition.ports import find_stm32_port
from services.acquisition.text_protocol import EngineeringBlock, TextAck, TextDecoder, TextMessage
from services.common.logs import Throttled
from services.common.serial_ports import open_serial
from services.common.settings import Settings
from services.common.stm32_wire import (
    StatusFrame,
    ValveAckFrame,
    encode_go_safe,
    encode_heartbeat,
    encode_hello,
    encode_set_valves,
)

log = logging.getLogger("rcs.acquisition.serial_link")

# After the first byte of a burst, let the rest of it accumulate this long before reading: one
# wake-up per few frames instead of one per frame. Telemetry leaves in 10 ms batches anyway.
COALESCE_S = 0.004
JOIN_TIMEOUT_S = 5.0
TEXT_DETECT_LINES = 2  # sample lines that identify the legacy text protocol

Protocol = Literal["binary", "text"]
Message = BinaryMessage | TextMessage
_T = TypeVar("_T")


@dataclass(frozen=True)
class LinkInfo:
    port: str
    protocol: Protocol
    device: str  # the device's STATUS identification; empty for the text protocol or without STATUS


@dataclass(frozen=True)
class _Counts:
    """Error counters summed over connections."""

    crc_errors: int = 0
    bad_frames: int = 0
    bad_lines: int = 0
    counter_gaps: int = 0
    lost_samples: int = 0

    def __add__(self, other: _Counts) -> _Counts:
        return _Counts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __str__(self) -> str:
        return (
            f"{self.crc_errors} CRC errors, {self.bad_frames} bad frames, {self.bad_lines} bad lines, "
            f"{self.counter_gaps} counter gaps ({self.lost_samples} samples lost)"
        )


@dataclass(frozen=True)
class LinkStats:
    crc_errors: int = 0
    bad_frames: int = 0
    bad_lines: int = 0
    counter_gaps: int = 0
    lost_samples: int = 0
    reconnects: int = 0  # connections established after the first one
    bytes_read: int = 0
    connected: bool = False
    protocol: Protocol | None = None


class _Decoding:
    """The decoders of one connection. With protocol "auto" both see every byte until one of them
    recognises the stream (a CRC-valid frame, or TEXT_DETECT_LINES sample lines); what was decoded
    until then is returned at that point, so nothing is lost to detection."""

    def __init__(self, settings: Settings) -> None:
        configured = settings.stm32.protocol
        self.protocol: Protocol | None = None if configured == "auto" else configured
        self.binary = BinaryDecoder(settings)
        self.text = TextDecoder(settings)
        self._held_binary: list[BinaryMessage] = []
        self._held_text: list[TextMessage] = []

    def feed(self, data: bytes, t_received: float) -> list[Message]:
        if self.protocol == "binary":
            return list(self.binary.feed(data))
        if self.protocol == "text":
            return list(self.text.feed(data, t_received))
        self._held_binary += self.binary.feed(data)
        self._held_text += self.text.feed(data, t_received)
        held: list[Message] = []
        if self.binary.stats.frames:
            self.protocol = "binary"
            held += self._held_binary
        elif self.text.stats.samples >= TEXT_DETECT_LINES:
            self.protocol = "text"
            held += self._held_text
        if self.protocol is not None:
            self._held_binary, self._held_text = [], []
        return held

    def counts(self) -> _Counts:
        if self.protocol == "binary":
            b = self.binary.stats
            return _Counts(b.crc_errors, b.bad_frames, 0, b.counter_gaps, b.lost_samples)
        if self.protocol == "text":
            return _Counts(bad_lines=self.text.stats.bad_lines)
        return _Counts()


@dataclass
class _Connection:
    """One open port's state while `SerialLink._serve` runs it."""

    ser: serial.Serial
    port: str
    decoding: _Decoding
    deadline: float  # monotonic: detection gives up then
    info: LinkInfo | None = None  # once the protocol is detected and announced
    held: list[Message] = field(default_factory=list)  # decoded before the announcement
    device: str | None = None  # from the first STATUS frame
    next_heartbeat: float = 0.0  # monotonic
    errors: _Counts = field(default_factory=_Counts)  # bad input logged so far


class SerialLink:
    """Owns the STM32 port in a daemon thread; see the module docstring.

    `on_connection(LinkInfo)` is called once per connection, when the protocol is known (and, for
    the binary protocol, the first STATUS frame has arrived or `detect_timeout_s` has passed);
    `on_connection(None)` when that connection ends. A callback that raises is logged, not fatal.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        on_block: Callable[[RawBlock | EngineeringBlock], None],
        on_status: Callable[[StatusFrame], None],
        on_ack: Callable[[ValveAckFrame | TextAck], None],
        on_connection: Callable[[LinkInfo | None], None],
    ) -> None:
        self._settings = settings
        self._on_block = on_block
        self._on_status = on_status
        self._on_ack = on_ack
        self._on_connection = on_connection
        self._problems = Throttled(log)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()
        self._ser: serial.Serial | None = None  # set while connected (announced)
        self._protocol: Protocol | None = None
        self._stats_lock = threading.Lock()
        self._decoding: _Decoding | None = None
        self._closed_counts = _Counts()  # of the connections that ended
        self._connections = 0
        self._bytes_read = 0
        self._heartbeats = 0

    # --- public API ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("SerialLink.start() called twice")
        self._thread = threading.Thread(target=self._run, name="stm32-link", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close the port (on_connection(None) if it was connected)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("the serial link thread did not stop within %.0f s", JOIN_TIMEOUT_S)

    def set_valves(self, cmd_no: int, mask: int) -> bool:
        """Send a valve pattern (bit i = settings.valves[i]); False if not connected or the write
        failed. The text protocol has no command number: `cmd_no` is only used by binary."""
        n_valves = len(self._settings.valves)
        if not 0 <= mask < 1 << n_valves:
            raise ValueError(f"valve mask {mask:#x} does not fit {n_valves} valves")
        return self._command(
            lambda protocol: (
                encode_set_valves(cmd_no, mask)
                if protocol == "binary"
                else text_protocol.encode_valves(mask, n_valves)
            )
        )

    def go_safe(self, cmd_no: int) -> bool:
        """Close every valve; False if not connected or the write failed."""
        n_valves = len(self._settings.valves)
        return self._command(
            lambda protocol: (
                encode_go_safe(cmd_no) if protocol == "binary" else text_protocol.encode_go_safe(n_valves)
            )
        )

    @property
    def stats(self) -> LinkStats:
        with self._stats_lock:
            decoding = self._decoding
            counts = self._closed_counts + (decoding.counts() if decoding else _Counts())
        protocol = self._protocol
        return LinkStats(
            crc_errors=counts.crc_errors,
            bad_frames=counts.bad_frames,
            bad_lines=counts.bad_lines,
            counter_gaps=counts.counter_gaps,
            lost_samples=counts.lost_samples,
            reconnects=max(self._connections - 1, 0),
            bytes_read=self._bytes_read,
            connected=protocol is not None,
            protocol=protocol,
        )

    # --- link thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        stm32 = self._settings.stm32
        baud_rates = stm32.baud_rates()
        attempt = 0  # advances only when a protocol was not detected: a working rate is kept
        while not self._stop.is_set():
            port = find_stm32_port(self._settings)
            baudrate = baud_rates[attempt % len(baud_rates)]
            opened = open_serial(port, stm32.vid_pids, baudrate, self._problems)
            if opened is not None and not self._serve(*opened):
                attempt += 1
            self._stop.wait(stm32.reconnect_s)

    def _serve(self, ser: serial.Serial, port: str) -> bool:
        """Run one connection until the port fails, detection times out or stop() is called.

        Returns whether a protocol was detected."""
        stm32 = self._settings.stm32
        conn = _Connection(ser, port, _Decoding(self._settings), time.monotonic() + stm32.detect_timeout_s)
        with self._stats_lock:
            self._decoding = conn.decoding
        try:
            if stm32.protocol != "text":
                # Harmless to legacy text firmware, which ignores all input but `Valves:` lines: HELLO
                # is 0x00-delimited and holds no newline. Once text is detected a lone newline ends
                # the junk line it may have left in the firmware's input buffer.
                self._write(ser, encode_hello())
            while not self._stop.is_set():
                data = self._read_burst(ser)
                now = time.monotonic()
                self._heartbeat(conn, now)
                messages = self._decode(conn, data)
                if conn.info is None:
                    released = self._detect(conn, messages, now)
                    if released is None and now >= conn.deadline:
                        self._problems.warning(
                            "detect",
                            "%s: no binary frame and no text sample line within %.1f s; reopening",
                            port,
                            stm32.detect_timeout_s,
                        )
                        return False
                    if released is None:
                        continue  # held until announced: on_connection comes first
                    messages = released
                self._deliver(messages)
        except (serial.SerialException, OSError) as exc:
            self._problems.warning("lost", "%s: connection lost: %s", port, exc)
        except Exception:  # a bug must cost this connection, not the acquisition service
            self._problems.warning("bug", "%s: closing after an unexpected error", port, exc_info=True)
        finally:
            self._close(conn)
        return conn.info is not None

    def _read_burst(self, ser: serial.Serial) -> bytes:
        """What the port has, waiting up to its timeout for one byte; a burst's first byte waits for
        the rest of the burst (COALESCE_S)."""
        data: bytes = ser.read(ser.in_waiting or 1)
        if len(data) == 1:
            self._stop.wait(COALESCE_S)
            data += ser.read(ser.in_waiting)
        return data

    def _heartbeat(self, conn: _Connection, now: float) -> None:
        """Send the binary protocol's HEARTBEAT when one is due."""
        if conn.decoding.protocol == "binary" and now >= conn.next_heartbeat:
            self._write(conn.ser, encode_heartbeat(self._heartbeats))
            self._heartbeats += 1
            conn.next_heartbeat = now + self._settings.stm32.heartbeat_ms / 1000

    def _decode(self, conn: _Connection, data: bytes) -> list[Message]:
        """The messages in `data`; a change in the connection's bad-input counts is logged (throttled)."""
        if not data:
            return []
        self._bytes_read += len(data)
        messages = conn.decoding.feed(data, time.time())
        counts = conn.decoding.counts()
        if counts != conn.errors:
            conn.errors = counts
            self._problems.warning("input", "%s: bad input on this connection so far: %s", conn.port, counts)
        return messages

    def _detect(self, conn: _Connection, messages: list[Message], now: float) -> list[Message] | None:
        """Hold `messages` until the protocol is known, then announce the connection.

        Returns every message held so far once announced, else None. Text is known from its sample
        lines; binary waits for the STATUS frame that names the device, at most until the deadline.
        """
        conn.held += messages
        if conn.device is None:
            conn.device = next((m.device for m in messages if isinstance(m, StatusFrame)), None)
        protocol = conn.decoding.protocol
        if protocol is None or (protocol == "binary" and conn.device is None and now < conn.deadline):
            return None
        if protocol == "text" and self._settings.stm32.protocol == "auto":
            self._write(conn.ser, b"\n")
        conn.info = LinkInfo(conn.port, protocol, conn.device or "")
        self._announce(conn.ser, conn.info)
        released, conn.held = conn.held, []
        return released

    def _close(self, conn: _Connection) -> None:
        """Forget the port for commands, close it, keep its error counts, tell on_connection (None)."""
        with self._write_lock:
            self._ser = None
            self._protocol = None
        try:
            conn.ser.close()
        except (serial.SerialException, OSError) as exc:
            log.debug("closing %s: %s", conn.port, exc)
        with self._stats_lock:
            self._closed_counts += conn.decoding.counts()
            self._decoding = None
        if conn.info is not None:
            log.info("STM32 on %s disconnected", conn.port)
            self._call("on_connection", self._on_connection, None)

    def _announce(self, ser: serial.Serial, info: LinkInfo) -> None:
        with self._write_lock:
            self._ser = ser
            self._protocol = info.protocol
        self._connections += 1
        log.info("STM32 on %s: %s protocol, device %r", info.port, info.protocol, info.device)
        self._call("on_connection", self._on_connection, info)

    def _deliver(self, messages: list[Message]) -> None:
        for message in messages:
            if isinstance(message, RawBlock | EngineeringBlock):
                self._call("on_block", self._on_block, message)
            elif isinstance(message, StatusFrame):
                self._call("on_status", self._on_status, message)
            else:
                self._call("on_ack", self._on_ack, message)

    def _call(self, name: str, callback: Callable[[_T], None], arg: _T) -> None:
        try:
            callback(arg)
        except Exception:
            self._problems.warning(name, "%s callback failed", name, exc_info=True)

    def _write(self, ser: serial.Serial, data: bytes) -> None:
        with self._write_lock:
            ser.write(data)

    def _command(self, encode: Callable[[Protocol], bytes]) -> bool:
        """Write a command for the connected protocol from any thread."""
        with self._write_lock:
            if self._ser is None or self._protocol is None:
                return False
            try:
                self._ser.write(encode(self._protocol))
            except (serial.SerialException, OSError) as exc:
                self._problems.warning("command", "command not sent: %s", exc)
                return False
            return True
