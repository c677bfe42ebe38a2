"""Showing a sync as it happens: a rich display on a terminal, log lines elsewhere.

Both are :class:`~oci_pypi_sync.engine.results.SyncObserver` implementations; the
engine only calls them. The terminal display says which phase the run is in
(resolving, reading the index k/N projects, transferring), then overall bytes
and files with rate and an ETA over a total that no longer grows, and one
line per active transfer. Off a terminal, each phase is one plain log line
(resolving, reading the index, what is about to be transferred; the command
prints the summary), and one per finished file at INFO level (``-v``): a cron
job's log gets a few lines free of control characters; ``-q`` silences them.

Before a transfer of :data:`ANNOUNCE_BYTES` or more (anything at ``-v``), the
line ``sync: F files, SIZE planned into TARGET`` is said whatever else is
shown, so a run of unexpected size says so before it starts.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import TYPE_CHECKING

from oci_pypi_sync.engine.results import FileResult, NullObserver, Phase, ReleaseResult
from oci_pypi_sync.sizes import human_bytes

if TYPE_CHECKING:  # rich is imported when a display is made, not for log lines
    from rich.console import Console
    from rich.progress import Task, TaskID

log = logging.getLogger("oci_pypi_sync.cli.progress")


class _Plan:
    """Counts the projects planned, and the files and bytes they selected."""

    def __init__(self) -> None:
        self.projects = 0
        self.planned = 0
        self.files = 0
        self.bytes = 0

    def add_files(self, count: int, total_bytes: int) -> None:
        self.files += count
        self.bytes += total_bytes

    def project_done(self) -> bool:
        """Count a project; true when it was the last, and the total is known."""
        self.planned += 1
        return self.planned == self.projects


#: From this many bytes planned, a run says so before its first transfer.
ANNOUNCE_BYTES = 1 << 30


def _phase_text(name: Phase, count: int) -> str:
    if name == "resolving":
        return f"resolving the dependencies of {count} requirements"
    return f"reading the index: {count} projects"


def planned_text(count: int, total_bytes: int, target: str) -> str:
    """``sync: 2,541 files, 52.9 GiB planned into TARGET``."""
    return f"sync: {count:,} files, {human_bytes(total_bytes)} planned into {target}"


#: The phase lines: INFO, like the rest, unless :func:`show_phases` lets them through.
phase_log = logging.getLogger("oci_pypi_sync.progress.phases")


def show_phases() -> None:
    """Let the phase lines through at the default log level (all but ``-q``)."""
    phase_log.setLevel(logging.INFO)


class LogObserver(NullObserver):
    """One log line per phase (with ``phases``), per finished file and per tagged release.

    The line saying what is about to be transferred is a phase line, said
    even without ``phases`` from ``announce_bytes`` on.
    """

    def __init__(
        self, target: str, *, phases: bool = True, announce_bytes: int = ANNOUNCE_BYTES
    ) -> None:
        self._target = target
        self._phases = phases
        self._announce_bytes = announce_bytes

    def phase(self, name: Phase, count: int) -> None:
        if self._phases:
            phase_log.info("%s", _phase_text(name, count))

    def transfer_planned(self, count: int, total_bytes: int) -> None:
        if self._phases or total_bytes >= self._announce_bytes:
            phase_log.info("%s", planned_text(count, total_bytes, self._target))

    def file_finished(self, result: FileResult) -> None:
        if result.action == "failed":
            return  # the engine logs failures as warnings
        log.info("%s %s (%s bytes)", result.action, result.filename, result.size or "?")

    def release_finished(self, result: ReleaseResult) -> None:
        if result.action == "pushed":
            log.info("tagged %s:%s %s", result.project, result.tag, result.digest)


class RichObserver:
    """A live progress display on a terminal (stderr); use as a context manager."""

    def __init__(
        self,
        console: Console | None = None,
        *,
        target: str = "",
        announce_bytes: int = ANNOUNCE_BYTES,
    ) -> None:
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
        # No total until every project is planned: an ETA over a growing total lies.
        self._bytes_task = self._progress.add_task("starting", total=None)
        self._active: dict[str, TaskID] = {}
        self._plan = _Plan()
        self._done_files = 0
        self._target = target
        self._announce_bytes = announce_bytes

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

    @property
    def overall(self) -> Task:
        """The overall line: its description, total (``None`` while unknown) and bytes done."""
        return self._progress.tasks[0]

    def phase(self, name: Phase, count: int) -> None:
        if name == "reading":
            self._plan.projects = count
            if count == 0:
                return
            text = f"reading the index 0/{count} projects"
        else:
            text = _phase_text(name, count)
        self._progress.update(self._bytes_task, description=text)

    def files_planned(self, count: int, total_bytes: int) -> None:
        self._plan.add_files(count, total_bytes)

    def project_planned(self, project: str) -> None:
        if self._plan.project_done():
            self._progress.update(
                self._bytes_task, total=self._plan.bytes, description=self._files_text()
            )
        else:
            text = f"reading the index {self._plan.planned}/{self._plan.projects} projects"
            self._progress.update(self._bytes_task, description=text)

    def transfer_planned(self, count: int, total_bytes: int) -> None:
        if total_bytes >= self._announce_bytes:
            text = planned_text(count, total_bytes, self._target)
            self._progress.console.print(text, markup=False, highlight=False)

    def _files_text(self) -> str:
        return f"files {self._done_files}/{self._plan.files}"

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
        if self._plan.projects and self._plan.planned >= self._plan.projects:
            self._progress.update(self._bytes_task, description=self._files_text())
        if result.action == "failed":
            self._progress.console.print(f"[red]failed[/red] {result.filename}: {result.error}")

    def release_finished(self, result: ReleaseResult) -> None:
        return None
