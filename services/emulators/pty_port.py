"""A pseudo-terminal standing in for a USB serial device, reachable through a stable symlink.

The host opens `link_path` with pyserial as it would open /dev/ttyACM0. The device side puts the
slave in raw mode so nothing is echoed or translated (the mode outlives closes of the slave).

By default the device side keeps the slave open too. With `hold_slave=False` it does not, and can
then see the host open and close the port, as a USB serial device sees DTR rise and fall:
`host_attached` is whether any process has the slave open (on Linux, poll() on the master reports
POLLHUP exactly while none has), and `host_opens` counts the opens that found the port closed,
from inotify events on the slave's device node (poll() alone misses a close and a quick reopen).
The pty lives as long as the master, so hosts may open and close it any number of times. While no
host is attached, reads return b"" and writes are accepted by the kernel but never reach a pyserial
host, which flushes its input on open.

Writes never block. Like a USB CDC device's transmit ring buffer, the port queues whole messages
while the host is slow, up to `tx_buffer_bytes`, and passes them on as the pty takes them. When the
buffer is full the oldest whole messages make room (`discarded` counts them), so what a host finds
on opening the port is the most recent, unbroken stretch of output. `close` is a USB unplug: the
queue is lost, the host's next read or write on the old port fails, and the symlink disappears
until `open` makes a new pty behind it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import struct
import time
import tty
from collections import deque
from pathlib import Path

READ_CHUNK = 4096
TX_BUFFER_BYTES = 64 * 1024  # ~185 ms of the binary protocol at 10 kHz

# <sys/inotify.h>
_IN_OPEN = 0x20
_IN_CLOSE = 0x08 | 0x10  # IN_CLOSE_WRITE | IN_CLOSE_NOWRITE
_IN_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (of the name that follows)


class _OpenWatch:
    """inotify on one device node: its opens (+1) and closes (-1), in order."""

    def __init__(self, device: str) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd: int = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if libc.inotify_add_watch(self._fd, os.fsencode(device), _IN_OPEN | _IN_CLOSE) < 0:
            error = ctypes.get_errno()
            os.close(self._fd)
            raise OSError(error, f"cannot watch {device}")

    def fileno(self) -> int:
        return self._fd

    def changes(self) -> list[int]:
        """+1 per open, -1 per close since the last call."""
        try:
            data = os.read(self._fd, READ_CHUNK)
        except BlockingIOError:
            return []
        changes: list[int] = []
        offset = 0
        while offset < len(data):
            _, mask, _, name_length = _IN_EVENT.unpack_from(data, offset)
            offset += _IN_EVENT.size + name_length
            if mask & _IN_OPEN:
                changes.append(1)
            elif mask & _IN_CLOSE:
                changes.append(-1)
        return changes

    def close(self) -> None:
        os.close(self._fd)


class PtyPort:
    """One emulated serial device; see the module docstring. Use from a single thread."""

    def __init__(
        self, link_path: Path, tx_buffer_bytes: int = TX_BUFFER_BYTES, *, hold_slave: bool = True
    ) -> None:
        self.link_path = link_path
        self._capacity = tx_buffer_bytes
        self._hold_slave = hold_slave
        self._master: int | None = None
        self._slave: int | None = None  # None while closed, or always with hold_slave=False
        self._watch: _OpenWatch | None = None  # with hold_slave=False, while open
        self._host_opens = 0  # processes that have the slave open, as far as inotify told
        self._device: str | None = None
        self._queue: deque[memoryview] = deque()  # messages the pty has not taken (all) yet
        self._queued = 0  # bytes in _queue
        self._head_started = False  # the pty has taken part of _queue[0]: it must go out whole
        self.discarded = 0  # queued messages never delivered: evicted when full, or lost at close

    @property
    def is_open(self) -> bool:
        return self._master is not None

    @property
    def device(self) -> str | None:
        """The current /dev/pts/N behind the link, None while closed."""
        return self._device

    def fileno(self) -> int:
        """The master side, for select(); raises OSError while closed."""
        if self._master is None:
            raise OSError(f"{self.link_path}: port is closed")
        return self._master

    def open(self) -> None:
        """Create a new pty and point the link at it; the link must be absent or a symlink."""
        if self._master is not None:
            return
        if self.link_path.exists() and not self.link_path.is_symlink():
            raise FileExistsError(f"{self.link_path} exists and is not a symlink; refusing to replace it")
        self.link_path.parent.mkdir(parents=True, exist_ok=True)
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        device = os.ttyname(slave)
        held: int | None = slave
        if not self._hold_slave:
            os.close(slave)
            held = None
            self._watch = _OpenWatch(device)
            self._host_opens = 0
        staging = self.link_path.with_name(f".{self.link_path.name}.{os.getpid()}")
        staging.unlink(missing_ok=True)
        os.symlink(device, staging)
        os.replace(staging, self.link_path)  # atomic: the link never dangles half-made
        self._master, self._slave, self._device = master, held, device

    def close(self) -> None:
        """Close both sides and remove the link if it still points here. Idempotent."""
        if self._master is None:
            return
        if self.link_path.is_symlink() and os.readlink(self.link_path) == self._device:
            self.link_path.unlink()
        os.close(self._master)
        if self._slave is not None:
            os.close(self._slave)
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self._master = self._slave = self._device = None
        self.discarded += len(self._queue)
        self._queue.clear()
        self._queued = 0
        self._head_started = False

    def write(self, message: bytes) -> bool:
        """Queue `message` whole and pass on what the pty takes now.

        Returns False, not queueing it, if the port is closed or a partly sent message leaves no room.
        """
        if self._master is None:
            return False
        self.flush()
        while self._queued + len(message) > self._capacity:
            oldest = 1 if self._head_started else 0
            if oldest >= len(self._queue):
                return False
            self._queued -= len(self._queue[oldest])
            del self._queue[oldest]
            self.discarded += 1
        self._queue.append(memoryview(message))
        self._queued += len(message)
        self.flush()
        return True

    def flush(self) -> None:
        """Pass queued bytes to the pty as far as it takes them (never blocks)."""
        while self._queue and self._master is not None:
            head = self._queue[0]
            try:
                written = os.write(self._master, head)
            except BlockingIOError:
                return
            self._queued -= written
            if written < len(head):
                self._queue[0] = head[written:]
                self._head_started = True
                return
            self._queue.popleft()
            self._head_started = False

    def read(self) -> bytes:
        """Bytes the host has written, b"" if none (never blocks)."""
        if self._master is None:
            return b""
        try:
            return os.read(self._master, READ_CHUNK)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:  # no process has the slave open
                return b""
            raise

    def host_attached(self) -> bool:
        """Whether any process has the port open (with the slave held: always, while open)."""
        if self._master is None:
            return False
        poller = select.poll()
        poller.register(self._master, select.POLLIN)
        return not any(events & select.POLLHUP for _, events in poller.poll(0))

    def host_opens(self) -> int:
        """How many times a host opened the port while no process had it open, since the last call:
        each is a DTR rising edge on a USB serial device. Always 0 with the slave held."""
        if self._watch is None:
            return 0
        edges = 0
        for change in self._watch.changes():
            if change > 0 and self._host_opens == 0:
                edges += 1
            self._host_opens = max(self._host_opens + change, 0)
        return edges

    def wait(self, timeout: float) -> None:
        """Sleep up to `timeout` s, waking early when the host writes, or opens or closes the port."""
        watched = [self._watch.fileno()] if self._watch is not None else []
        if self._master is not None and self.host_attached():
            watched.append(self._master)  # while nobody has the slave open it is always "readable"
        if watched:
            select.select(watched, [], [], timeout)
        else:
            time.sleep(timeout)

    def __enter__(self) -> PtyPort:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
