"""Closed segments -> Parquet on one converter thread (off the recorder's path), then retention.

A conversion the disk refuses leaves its .arrows file where it is: the recorder retries it
(`retry_failed`) once writing works again, or recover() does at the next start."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from services.common.logs import Throttled
from services.common.settings import LoggerSettings
from services.logger.retention import enforce
from services.logger.segments import convert_segment
from services.logger.stats import LoggerStats

log = logging.getLogger("rcs.logger")


class Conversion:
    def __init__(
        self,
        data_dir: Path,
        settings: LoggerSettings,
        stats: LoggerStats,
        *,
        post: Callable[[Callable[[], None]], None],
        open_segment: Callable[[], Path | None],
    ) -> None:
        """`post` runs a job on the recorder thread; `open_segment` is the file being written now
        (retention never deletes it)."""
        self._data_dir = data_dir
        self._settings = settings
        self._stats = stats
        self._post = post
        self._open_segment = open_segment
        self._problems = Throttled(log)
        self._converting: set[Path] = set()
        self._failed: list[Path] = []  # conversions the disk refused; recorder thread only
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="logger-convert")

    def submit(self, arrows: Path) -> Future[Path | None]:
        """Convert `arrows`; the future's result is the Parquet file (None: nothing, or it failed)."""
        self._converting.add(arrows)
        return self._executor.submit(self._convert, arrows)

    def retry_failed(self) -> None:
        """Convert again what the disk refused before (recorder thread, while writing works)."""
        for arrows in self._failed:
            self.submit(arrows)
        self._failed.clear()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)

    def _convert(self, arrows: Path) -> Path | None:
        try:
            parquet = convert_segment(arrows, self._settings)
        except OSError as exc:  # the .arrows stays; retried once writing works (or by recover())
            self._problems.warning("convert", "cannot convert %s: %s", arrows.name, exc)
            self._post(lambda: self._failed.append(arrows))
            return None
        finally:
            self._converting.discard(arrows)
        if parquet is not None:
            self._stats.files_total += 1
            log.info("wrote %s", parquet.name)
            self._enforce_retention(parquet)
        return parquet

    def _enforce_retention(self, newest: Path) -> None:
        protect = {newest, *self._converting}
        open_segment = self._open_segment()
        if open_segment is not None:
            protect.add(open_segment)
        for path in enforce(
            self._data_dir,
            max_bytes=self._settings.retention_max_bytes,
            max_age_days=self._settings.retention_max_age_days,
            now=time.time(),
            protect=protect,
        ):
            log.info("retention: deleted %s", path.name)
