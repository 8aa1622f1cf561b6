"""The control thread: the one thread that touches the safety core.

Everything that can change the stand's state — commands, device acknowledgements, telemetry for the
red-lines, the deadman's clock, sequence steps falling due — is posted here as a job and runs in
order, so the core needs no locks and no two decisions ever interleave. The loop sleeps until the
next job or the next deadline a `wake` callback names (a sequence step, an acknowledgement timeout,
the deadman's period), whichever comes first.

Urgent jobs (abort) jump the queue: they run before any ordinary job still waiting, however many.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from services.common.logs import Throttled

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class ControlThread:
    def __init__(self, on_wake: Callable[[float], float | None], *, max_sleep_s: float) -> None:
        """`on_wake(now)` runs after every job and at every deadline; it returns the next deadline."""
        self._on_wake = on_wake
        self._max_sleep_s = max_sleep_s
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._urgent: collections.deque[Callable[[], None]] = collections.deque()  # append/popleft: atomic
        self._problems = Throttled(log)
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=5)

    def post(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def call(self, job: Callable[[], _T], *, urgent: bool = False) -> Future[_T]:
        """Run `job` on the control thread; its result (or exception) arrives in the Future.

        `urgent`: before every ordinary job still queued (after the one running, if any)."""
        future: Future[_T] = Future()

        def run() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(job())
                except Exception as exc:  # handed to the caller, who decides
                    future.set_exception(exc)

        if urgent:
            self._urgent.append(run)
            self._jobs.put(_nothing)  # wakes the loop, which runs urgent jobs first
        else:
            self._jobs.put(run)
        return future

    def _run(self) -> None:
        deadline: float | None = None
        while True:
            timeout = self._max_sleep_s
            if deadline is not None:
                timeout = min(timeout, max(0.0, deadline - time.monotonic()))
            try:
                job = self._jobs.get(timeout=timeout)
            except queue.Empty:
                job = _NOTHING
            if job is None:
                return
            while self._urgent:
                self._run_job(self._urgent.popleft())
            deadline = self._run_job(job) or deadline

    def _run_job(self, job: Callable[[], None]) -> float | None:
        """Run `job`, then `on_wake`; the next deadline (None when the job failed)."""
        try:
            job()
            return self._on_wake(time.monotonic())
        except Exception:  # a bug in one job must not stop the authority that can abort
            self._problems.warning("job", "control job failed", exc_info=True)
            return None


def _nothing() -> None:
    return None


_NOTHING: Callable[[], None] = _nothing
