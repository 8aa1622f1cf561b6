"""Logging for every service: one stderr handler on the root logger, text or JSON, and `Throttled`.

A test stand produces problems at the sample rate (a malformed batch every 10 ms, a broker that is
down for a minute); `Throttled` keeps such a problem to one line per interval instead of thousands.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from pythonjsonlogger.json import JsonFormatter

from services.common.codec import WireFormatError

Decoded = TypeVar("Decoded")

_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(service)s %(name)s: %(message)s"
_JSON_FIELDS = ("asctime", "levelname", "name", "message")


class _ServiceFilter(logging.Filter):
    """Stamps the service name on every record (the text format prints it, JSON gets it as a field)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        return True


_installed: logging.Handler | None = None


def setup_logging(service: str, level: str = "INFO", fmt: Literal["text", "json"] = "text") -> None:
    """Send every log record of the process to stderr, tagged with `service`.

    Calling it again replaces the handler it installed before (other handlers, such as pytest's,
    are left alone). Raises ValueError for an unknown level name.
    """
    global _installed  # noqa: PLW0603 - the one handler this module owns
    levelno = logging.getLevelNamesMapping().get(level.upper())
    if levelno is None:
        raise ValueError(f"unknown log level {level!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ServiceFilter(service))
    if fmt == "json":
        handler.setFormatter(JsonFormatter(list(_JSON_FIELDS)))
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
    root.addHandler(handler)
    root.setLevel(levelno)
    _installed = handler


@dataclass
class _Suppressed:
    window_start: float  # clock() when the last line for this key was written
    since_wall: float  # time.time() of the first suppressed occurrence
    count: int = 0


class Throttled:
    """Logs a recurring problem once, then at most one summary line per interval and key.

    The first occurrence of a key is logged at once; later ones within `interval_s` are only counted.
    The next occurrence after the interval is logged with "(N more since HH:MM:SS)". Thread-safe.
    """

    def __init__(
        self, logger: logging.Logger, interval_s: float = 10.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, _Suppressed] = {}

    def warning(self, key: str, msg: str, *args: object, exc_info: bool = False) -> None:
        now = self._clock()
        with self._lock:
            state = self._keys.get(key)
            if state is not None and now - state.window_start < self._interval_s:
                if state.count == 0:
                    state.since_wall = time.time()
                state.count += 1
                return
            suppressed = state.count if state is not None else 0
            since = state.since_wall if state is not None else 0.0
            self._keys[key] = _Suppressed(window_start=now, since_wall=0.0)
        if suppressed:
            stamp = time.strftime("%H:%M:%S", time.localtime(since))
            msg = f"{msg} (%d more since %s)"
            args = (*args, suppressed, stamp)
        self._logger.warning(msg, *args, exc_info=exc_info)


class DropMalformed:
    """The one way a service meets a payload that does not decode: count it, log it once per kind
    (then throttled), drop it.

    `stats.<counter>` (an int field of the service's metrics) goes up by one per dropped payload.
    """

    def __init__(self, stats: object, counter: str, problems: Throttled) -> None:
        if not isinstance(getattr(stats, counter, None), int):
            raise TypeError(f"{type(stats).__name__}.{counter} is not an int counter")
        self._stats = stats
        self._counter = counter
        self._problems = problems

    def __call__(
        self, decode: Callable[[bytes], Decoded], payload: bytes, key: str, what: str
    ) -> Decoded | None:
        """`decode(payload)`, or None when it raises WireFormatError ("ignored malformed <what>")."""
        try:
            return decode(payload)
        except WireFormatError as exc:
            setattr(self._stats, self._counter, getattr(self._stats, self._counter) + 1)
            self._problems.warning(key, "ignored malformed %s: %s", what, exc)
            return None
