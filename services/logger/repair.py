"""Fill the logger's gaps from acquisition's ring buffer (`rcs/rpc/acquisition/history`).

`Repairer.request` queues a gap and returns at once; a worker thread pages through the history
request (`{seq_from, seq_to, max_samples}`, continuing at `next_seq`) and settles every queued sample
exactly once, through one of the two callbacks, in ascending seq within a gap:

- `on_repaired(Repaired)`: samples acquisition still holds. Each `Repaired` is one run of consecutive
  seqs (`seq == seq[0] + arange(n)`), so it can go straight to `Coverage.new_part(session, seq[0], n)`.
  It may overlap what the logger wrote meanwhile: deduplicating is the caller's business.
- `on_unrepairable(Unrepairable)`: samples gone for good, with the reason:
  - `acquisition restarted: session X is gone`: the reply is from another session (every queued
    range of session X is settled so at once);
  - `older than acquisition's ring buffer`: below the reply's `first_seq` (overwritten);
  - `never received by acquisition`: inside the ring's span but not in it (the device's own gaps);
  - `acquisition's ring buffer is empty`: the ring holds nothing of the session;
  - the server's refusal text (RpcError), or `malformed reply from acquisition: ...`.

A timeout (acquisition or the broker down), or a request the MQTT client could not even queue,
leaves the gap queued and retries with exponential backoff (0.5 s .. 10 s) until `stop()`. An
exception from a callback is logged and retried the same way; what was settled before it is not
settled again.

The callbacks run on the worker thread. Invariant: `requested == repaired + unrepairable + pending`
(in samples), where requested counts only samples that were not queued already.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from services.common import topics
from services.common.rpc import RpcClient, RpcError, RpcTimeout
from services.common.settings import Settings

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0
OLDER_THAN_RING = "older than acquisition's ring buffer"
NEVER_RECEIVED = "never received by acquisition"
RING_EMPTY = "acquisition's ring buffer is empty"


@dataclass(frozen=True, eq=False)
class Repaired:
    """Consecutive samples recovered from acquisition: `seq[i] == seq[0] + i`."""

    session: str
    seq: npt.NDArray[np.int64]  # (n,)
    t: npt.NDArray[np.float64]  # (n,)
    data: npt.NDArray[np.float32]  # (n, len(channels))
    channels: tuple[str, ...]


@dataclass(frozen=True)
class Unrepairable:
    """Samples `seq_from <= seq < seq_to` of `session` that no one can supply any more."""

    session: str
    seq_from: int
    seq_to: int
    reason: str

    @property
    def size(self) -> int:
        return self.seq_to - self.seq_from


@dataclass
class RepairStats:
    requested_samples: int = 0  # newly queued (not already queued) by `request`
    repaired_samples: int = 0  # delivered to on_repaired
    unrepairable_samples: int = 0  # reported to on_unrepairable
    rpc_failures: int = 0  # timeouts and requests not sent, each retried (a refusal is unrepairable)
    callback_failures: int = 0  # a callback raised: retried like a timeout


class _BadReplyError(ValueError):
    """A history reply that breaks the contract: settled as unrepairable, never retried."""


@dataclass(frozen=True, eq=False)
class _Page:
    """A validated history reply."""

    session: str
    channels: tuple[str, ...]
    seq: npt.NDArray[np.int64]
    t: npt.NDArray[np.float64]
    data: npt.NDArray[np.float32]
    next_seq: int
    first_seq: int | None


class _Queue:
    """Queued seq ranges per session: disjoint, merged, ascending; sessions in order of arrival."""

    def __init__(self) -> None:
        self._ranges: dict[str, list[tuple[int, int]]] = {}

    def add(self, session: str, start: int, stop: int) -> int:
        """Queue `[start, stop)`; the number of samples that were not queued already."""
        added = stop - start
        lo, hi = start, stop  # the merged range
        kept: list[tuple[int, int]] = []
        for a, b in self._ranges.get(session, []):
            if b < start or a > stop:
                kept.append((a, b))
            else:  # overlapping or touching: merge
                added -= max(0, min(b, stop) - max(a, start))
                lo, hi = min(lo, a), max(hi, b)
        self._ranges[session] = sorted([*kept, (lo, hi)])
        return added

    def remove(self, session: str, start: int, stop: int) -> int:
        """Unqueue `[start, stop)`; the number of samples that were queued."""
        ranges = self._ranges.get(session, [])
        left: list[tuple[int, int]] = []
        removed = 0
        for a, b in ranges:
            removed += max(0, min(b, stop) - max(a, start))
            left += [(a, min(b, start))] if a < min(b, start) else []
            left += [(max(a, stop), b)] if max(a, stop) < b else []
        if left:
            self._ranges[session] = left
        else:
            self._ranges.pop(session, None)
        return removed

    def ranges(self, session: str) -> list[tuple[int, int]]:
        return list(self._ranges.get(session, []))

    def sessions(self) -> list[str]:
        return list(self._ranges)

    def first(self) -> tuple[str, int, int] | None:
        """The oldest session's lowest range: the one closest to being overwritten in the ring."""
        for session, ranges in self._ranges.items():
            return session, *ranges[0]
        return None

    def samples(self) -> int:
        return sum(b - a for ranges in self._ranges.values() for a, b in ranges)


class Repairer:
    """Queues gaps and repairs them from acquisition on a worker thread (module docstring)."""

    def __init__(
        self,
        rpc: RpcClient,
        settings: Settings,
        *,
        on_repaired: Callable[[Repaired], None],
        on_unrepairable: Callable[[Unrepairable], None],
        rpc_timeout_s: float = 5.0,
    ) -> None:
        self._rpc = rpc
        self._page = settings.logger.repair_page_samples
        self._on_repaired = on_repaired
        self._on_unrepairable = on_unrepairable
        self._timeout = rpc_timeout_s
        self._cond = threading.Condition(threading.Lock())
        self._queue = _Queue()  # guarded by _cond
        self._stats = RepairStats()  # guarded by _cond
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="logger-repair", daemon=True)

    def request(self, session: str, seq_from: int, seq_to: int) -> None:
        """Queue `seq_from <= seq < seq_to` of `session`; never blocks on I/O. Empty ranges are ignored."""
        if seq_from < 0:
            raise ValueError(f"seq_from must be >= 0, got {seq_from}")
        if seq_to <= seq_from:
            return
        with self._cond:
            self._stats.requested_samples += self._queue.add(session, seq_from, seq_to)
            self._cond.notify_all()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the worker (an RPC in flight is abandoned); what is still queued stays unsettled.

        Call it before closing the RpcClient.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def stats(self) -> RepairStats:
        with self._cond:
            return RepairStats(**asdict(self._stats))

    def pending(self) -> dict[str, list[tuple[int, int]]]:
        """The queued ranges `[start, stop)` per session, not settled yet."""
        with self._cond:
            return {session: self._queue.ranges(session) for session in self._queue.sessions()}

    @property
    def pending_samples(self) -> int:
        """Samples queued and not settled yet."""
        with self._cond:
            return self._queue.samples()

    # -- worker ----------------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or self._queue.first() is not None)
                if self._stopping:
                    return
                gap = self._queue.first()
            assert gap is not None  # only this thread unqueues
            if self._repair_page(*gap):
                backoff = BACKOFF_MIN_S
                continue
            with self._cond:
                if self._cond.wait_for(lambda: self._stopping, timeout=backoff):
                    return
            backoff = min(2 * backoff, BACKOFF_MAX_S)

    def _repair_page(self, session: str, start: int, stop: int) -> bool:
        """One history request for `[start, stop)`; False when it is to be retried after a backoff."""
        body = {"seq_from": start, "seq_to": stop, "max_samples": self._page}
        future = self._rpc.request(topics.ACQ_HISTORY, body, timeout=self._timeout)
        # RpcClient fails a request it could not even queue (MQTT outgoing queue full) before returning
        # it, with an RpcError; that is no refusal by acquisition, so it is retried like a timeout.
        sent = not future.done()
        try:
            result = self._wait(future)
            if result is None:
                return True  # stopping: the loop sees it
            page = _parse(result, start, stop)
        except (RpcTimeout, RpcError) as exc:
            if isinstance(exc, RpcError) and sent:
                return self._settle_all(iter([Unrepairable(session, start, stop, str(exc))]))
            log.info("repair of %s [%d, %d) waits for acquisition: %s", session, start, stop, exc)
            with self._cond:
                self._stats.rpc_failures += 1
            return False
        except _BadReplyError as exc:
            reason = f"malformed reply from acquisition: {exc}"
            return self._settle_all(iter([Unrepairable(session, start, stop, reason)]))
        if page.session != session:
            gone = f"acquisition restarted: session {session} is gone"
            with self._cond:
                ranges = self._queue.ranges(session)
            return self._settle_all(Unrepairable(session, a, b, gone) for a, b in ranges)
        return self._settle_all(_outcomes(session, start, page))

    def _wait(self, future: Future[dict[str, Any]]) -> dict[str, Any] | None:
        """The reply, or None when stop() came first (the request is then abandoned)."""

        def wake(_: Future[dict[str, Any]]) -> None:
            with self._cond:
                self._cond.notify_all()

        future.add_done_callback(wake)
        with self._cond:
            self._cond.wait_for(lambda: self._stopping or future.done())
        if not future.done():
            future.cancel()
            return None
        return future.result()

    def _settle_all(self, outcomes: Iterator[Repaired | Unrepairable]) -> bool:
        """Hand each outcome to its callback, then unqueue it; False if a callback failed."""
        for outcome in outcomes:
            try:
                if isinstance(outcome, Repaired):
                    self._on_repaired(outcome)
                else:
                    self._on_unrepairable(outcome)
            except Exception:
                log.exception("repair callback failed; the range stays queued")
                with self._cond:
                    self._stats.callback_failures += 1
                return False
            with self._cond:
                if isinstance(outcome, Repaired):
                    first = int(outcome.seq[0])
                    self._stats.repaired_samples += self._queue.remove(
                        outcome.session, first, first + len(outcome.seq)
                    )
                else:
                    self._stats.unrepairable_samples += self._queue.remove(
                        outcome.session, outcome.seq_from, outcome.seq_to
                    )
        return True


def _outcomes(session: str, start: int, page: _Page) -> Iterator[Repaired | Unrepairable]:
    """What `page` says about `[start, page.next_seq)`, ascending: runs held, and the holes between."""
    seq = page.seq
    breaks = (np.flatnonzero(np.diff(seq) != 1) + 1).tolist()
    cursor = start
    for lo, hi in zip([0, *breaks], [*breaks, len(seq)], strict=True):
        if lo == hi:  # no samples at all
            continue
        yield from _holes(session, cursor, int(seq[lo]), page.first_seq)
        yield Repaired(session, seq[lo:hi], page.t[lo:hi], page.data[lo:hi], page.channels)
        cursor = int(seq[hi - 1]) + 1
    yield from _holes(session, cursor, page.next_seq, page.first_seq)


def _holes(session: str, start: int, stop: int, first_seq: int | None) -> Iterator[Unrepairable]:
    """`[start, stop)` absent from the reply, split at the ring's oldest seq."""
    if start >= stop:
        return
    if first_seq is None:
        yield Unrepairable(session, start, stop, RING_EMPTY)
        return
    if start < first_seq:
        yield Unrepairable(session, start, min(stop, first_seq), OLDER_THAN_RING)
    if stop > first_seq:
        yield Unrepairable(session, max(start, first_seq), stop, NEVER_RECEIVED)


def _parse(result: dict[str, Any], start: int, stop: int) -> _Page:
    """Validate a history reply for the request `[start, stop)`; raises _BadReplyError."""
    session = _get(result, "session", str)
    channels = _get(result, "channels", list)
    if not channels or not all(isinstance(c, str) for c in channels):
        raise _BadReplyError("'channels' is not a non-empty list of strings")
    n = _get(result, "n", int)
    next_seq = _get(result, "next_seq", int)
    first_seq = result.get("first_seq")
    if first_seq is not None and (not isinstance(first_seq, int) or isinstance(first_seq, bool)):
        raise _BadReplyError("'first_seq' is neither an integer nor nil")
    arrays = {}
    for key, dtype, width in (("seq", "<i8", 1), ("t", "<f8", 1), ("data", "<f4", len(channels))):
        raw = _get(result, key, bytes)
        if n < 0 or len(raw) != n * width * np.dtype(dtype).itemsize:
            raise _BadReplyError(f"{key!r} holds {len(raw)} bytes, not {n} x {width} x {dtype}")
        arrays[key] = np.frombuffer(raw, dtype)
    seq = arrays["seq"].astype(np.int64, copy=False)
    if not start < next_seq <= stop:
        raise _BadReplyError(f"next_seq {next_seq} outside ({start}, {stop}]")
    if n and (seq[0] < start or seq[-1] >= next_seq or np.any(np.diff(seq) <= 0)):
        raise _BadReplyError(f"seq not strictly increasing within [{start}, {next_seq})")
    return _Page(
        session=session,
        channels=tuple(channels),
        seq=seq,
        t=arrays["t"].astype(np.float64, copy=False),
        data=arrays["data"].astype(np.float32, copy=False).reshape(n, len(channels)),
        next_seq=next_seq,
        first_seq=first_seq,
    )


def _get(result: dict[str, Any], key: str, kind: type) -> Any:
    value = result.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _BadReplyError(f"{key!r} missing or not {kind.__name__}")
    return value
