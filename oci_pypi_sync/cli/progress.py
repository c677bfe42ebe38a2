"""Showing a sync as it happens: a rich display on a terminal, log lines elsewhere.

Both are :class:`~oci_pypi_sync.engine.results.SyncObserver` implementations; the
engine only calls them. The terminal display shows overall bytes and files
with rate and ETA, and one line per active transfer. Off a terminal, each
finished file is one plain log line at INFO level (shown with ``-v``), so a
cron job's log stays quiet and free of control characters.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import TYPE_CHECKING

from oci_pypi_sync.engine.results import FileResult, NullObserver, ReleaseResult

if TYPE_CHECKING:  # rich is imported when a display is made, not for log lines
    from rich.console import Console
    from rich.progress import TaskID

log = logging.getLogger("oci_pypi_sync.cli.progress")


class LogObserver(NullObserver):
    """One log line per finished file and tagged release."""

    def file_finished(self, result: FileResult) -> None:
        if result.action == "failed":
            return  # the engine logs failures as warnings
        log.info("%s %s (%s bytes)", result.action, result.filename, result.size or "?")

    def release_finished(self, result: ReleaseResult) -> None:
        if result.action == "pushed":
            log.info("tagged %s:%s %s", result.project, result.tag, result.digest)


class RichObserver:
    """A live progress display on a terminal (stderr); use as a context manager."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}", style="bold"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=True,
        )
        self._bytes_task = self._progress.add_task("files 0/0", total=0)
        self._active: dict[str, TaskID] = {}
        self._planned_files = 0
        self._done_files = 0

    def __enter__(self) -> RichObserver:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def files_planned(self, count: int, total_bytes: int) -> None:
        self._planned_files += count
        task = self._progress.tasks[self._bytes_task]
        self._progress.update(
            self._bytes_task,
            total=(task.total or 0) + total_bytes,
            description=f"files {self._done_files}/{self._planned_files}",
        )

    def transfer_started(self, filename: str, size: int | None) -> None:
        if filename not in self._active:
            self._active[filename] = self._progress.add_task(f"  {filename}", total=size)

    def bytes_transferred(self, filename: str, count: int) -> None:
        self._progress.advance(self._bytes_task, count)
        task = self._active.get(filename)
        if task is not None:
            self._progress.advance(task, count)

    def file_finished(self, result: FileResult) -> None:
        task = self._active.pop(result.filename, None)
        if task is not None:
            self._progress.remove_task(task)
        if result.action != "pushed" and result.size:
            # Bytes that did not flow (already there, planned, failed) count as done.
            self._progress.advance(self._bytes_task, result.size)
        self._done_files += 1
        self._progress.update(
            self._bytes_task, description=f"files {self._done_files}/{self._planned_files}"
        )
        if result.action == "failed":
            self._progress.console.print(f"[red]failed[/red] {result.filename}: {result.error}")

    def release_finished(self, result: ReleaseResult) -> None:
        return None
