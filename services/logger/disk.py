"""Whether the logger can write its data directory: a failure is said once (an ERROR line, a
`disk_error` event, `disk: "error"` in the retained status) until writing works again, which is said
once too (`disk_ok`). Every failure counts in `disk_errors_total`. Recorder thread only."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from pathlib import Path

from services.logger.stats import LoggerStats

log = logging.getLogger("rcs.logger")


class DiskHealth:
    def __init__(
        self,
        data_dir: Path,
        stats: LoggerStats,
        *,
        publish_event: Callable[..., None],
        set_status: Callable[..., None],
    ) -> None:
        self._data_dir = data_dir
        self._stats = stats
        self._publish_event = publish_event
        self._set_status = set_status
        self.error: str | None = None  # why writing fails, None while it works

    def failed(self, exc: OSError, *, action: str) -> None:
        self._stats.disk_errors_total += 1
        reason = f"{errno.errorcode.get(exc.errno or 0, 'error')}: {exc.strerror or exc}"
        if self.error is None:
            log.error("cannot write to %s (%s): %s", self._data_dir, reason, action)
            self._publish_event("disk_error", reason=reason, data_dir=str(self._data_dir))
            self._set_status(disk="error", disk_error=reason)
        self.error = reason

    def recovered(self) -> None:
        if self.error is not None:
            log.warning("writing to %s again", self._data_dir)
            self._publish_event("disk_ok", data_dir=str(self._data_dir))
            self._set_status(disk="ok", disk_error=None)
            self.error = None
