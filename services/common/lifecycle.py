"""How every rcs process lives: started from settings, stopped by SIGTERM (make run, compose, systemd)
or SIGINT (Ctrl-C)."""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Protocol

from pydantic import ValidationError

from services.common.logs import setup_logging
from services.common.metrics import register_stats, start_metrics_server
from services.common.settings import Settings, describe_problems, load_settings

log = logging.getLogger(__name__)

SIGNAL_POLL_S = 0.2


def stop_requested() -> threading.Event:
    """Install SIGTERM/SIGINT handlers on the main thread; the returned Event is set by either."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def wait_for(stop: threading.Event) -> None:
    """Until `stop` is set, waking now and then. CPython runs signal handlers on the main thread only,
    and a signal the kernel hands to another thread does not wake a main thread blocked on a lock
    (python/cpython#85300): a plain `stop.wait()` then sleeps through SIGTERM. The handler runs at
    the next wake-up instead."""
    while not stop.wait(SIGNAL_POLL_S):
        pass


class Service(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def metrics(self) -> Mapping[str, float]: ...


def run_service(
    name: str, build: Callable[[Settings], Service], metrics_port: Callable[[Settings], int]
) -> None:
    """A service process's life: settings, logging, metrics, start, wait for a stop signal, stop."""
    try:
        settings = load_settings()
    except ValidationError as exc:  # one line per problem, naming the file, the key and the problem
        raise SystemExit(
            f"{name}: refusing to start, invalid configuration:\n{describe_problems(exc)}"
        ) from None
    setup_logging(name, settings.log_level, settings.log_format)
    faulthandler.enable()  # a crash, or SIGABRT sent to a hung process, prints every thread's stack
    service = build(settings)
    register_stats(name, service.metrics)
    start_metrics_server(metrics_port(settings), settings.metrics_host)
    stop = stop_requested()
    service.start()
    wait_for(stop)
    service.stop()
