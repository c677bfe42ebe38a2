"""What a sync did: typed, frozen records per file, per release and per project.

The engine produces them, the report renders them (``--json``), and
observers hear them as they happen (progress bars, logs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal, Protocol

#: ``pushed``: the file's bytes were uploaded. ``present``: the target held
#: them, as checked this run (its manifest answered, or the store had or
#: mounted the blob). ``unchanged``: not checked this run; the state file
#: says the target holds it, and the target is the one the state describes.
#: ``replaced-upstream``: the index now gives the file other bytes than the
#: mirrored ones, which stay. ``failed``: see ``error``. ``planned``: dry run.
FileAction = Literal["pushed", "present", "unchanged", "failed", "replaced-upstream", "planned"]
ReleaseAction = Literal["pushed", "unchanged", "failed", "planned"]
ProvenanceStatus = Literal["stored", "unchanged", "none"]


@dataclass(frozen=True, slots=True)
class FileProvenance:
    """A file's PEP 740 provenance in this run.

    ``stored``: verified and written; ``unchanged``: verified, the mirror
    held it already; ``none``: the index serves none. ``publishers`` are
    written as ``--trusted-publisher`` takes them.
    """

    status: ProvenanceStatus
    publishers: tuple[str, ...] = ()
    attestations: int = 0


#: What counts as a failure of the run (exit code 1).
FAILED_ACTIONS: frozenset[str] = frozenset({"failed", "replaced-upstream"})


@dataclass(frozen=True, slots=True)
class FileResult:
    """What happened to one file.

    ``note`` says what the report should (a file mirrored without its core
    metadata, and why); ``mirrored_sha256`` is the sha256 the target holds
    for a file the index replaced (``replaced-upstream``).
    """

    project: str
    version: str
    filename: str
    sha256: str
    size: int | None
    action: FileAction
    error: str | None = None
    provenance: FileProvenance | None = None
    note: str | None = None
    mirrored_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    """What happened to one version's index.

    ``removed_upstream`` names files the target lists for this version but
    the index no longer has; ``pruned`` says whether they were taken out.
    """

    project: str
    version: str
    tag: str
    digest: str | None
    action: ReleaseAction
    error: str | None = None
    removed_upstream: tuple[str, ...] = ()
    pruned: bool = False


@dataclass(frozen=True, slots=True)
class ProjectError:
    """A project that could not be synced at all (not found, page unreadable, quarantined)."""

    project: str
    error: str
    quarantined: bool = False
    not_found: bool = False


@dataclass(frozen=True, slots=True)
class ProjectWarning:
    """Something a person should look at that did not fail the run (a publisher change)."""

    project: str
    message: str


@dataclass(frozen=True, slots=True)
class Excluded:
    """A file (or a version, ``name==version``) of the index that is not mirrored, and why.

    ``kind`` is the rule's stable code (see ``REJECT_*`` in :mod:`.plan.select`),
    ``reason`` the same in words.
    """

    project: str
    filename: str
    reason: str
    kind: str = ""


@dataclass(frozen=True, slots=True)
class ReportTotals:
    """What a run's records add up to, counted as they pass (see :class:`Tally`)."""

    files: int = 0
    pushed: int = 0
    present: int = 0
    unchanged: int = 0
    failed: int = 0
    replaced_upstream: int = 0
    planned: int = 0
    bytes_pushed: int = 0
    bytes_planned: int = 0
    releases_tagged: int = 0
    releases_failed: int = 0
    excluded: int = 0

    def files_with(self, action: FileAction) -> int:
        return {
            "pushed": self.pushed,
            "present": self.present,
            "unchanged": self.unchanged,
            "failed": self.failed,
            "replaced-upstream": self.replaced_upstream,
            "planned": self.planned,
        }[action]


#: Everything a report holds, one record at a time (what a streamed report is made of).
ReportRecord = FileResult | ReleaseResult | ProjectError | Excluded | ProjectWarning


class Tally:
    """Counts records into :class:`ReportTotals`: the one place the totals are made."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = dict.fromkeys(ReportTotals.__dataclass_fields__, 0)

    def add(self, record: ReportRecord) -> None:
        counts = self._counts
        if isinstance(record, FileResult):
            counts["files"] += 1
            action = record.action.replace("-", "_")
            counts[action] += 1
            if record.action == "pushed":
                counts["bytes_pushed"] += record.size or 0
            elif record.action == "planned":
                counts["bytes_planned"] += record.size or 0
        elif isinstance(record, ReleaseResult):
            if record.action == "pushed":
                counts["releases_tagged"] += 1
            elif record.action == "failed":
                counts["releases_failed"] += 1
        elif isinstance(record, Excluded):
            counts["excluded"] += 1

    def totals(self) -> ReportTotals:
        return ReportTotals(**self._counts)

    @classmethod
    def of(cls, *records: Iterable[ReportRecord]) -> ReportTotals:
        tally = cls()
        for group in records:
            for record in group:
                tally.add(record)
        return tally.totals()


class ReportSink(Protocol):
    """Takes a streamed run's records as projects finish (JSON Lines, a plan table...)."""

    def record(self, item: ReportRecord) -> None:
        """One more record; called from the event loop, so it must return quickly."""


class DiscardingSink:
    """A sink for a streamed run whose records nobody reads (the counts are kept anyway)."""

    def record(self, item: ReportRecord) -> None:
        return None


class CollectingSink:
    """A sink that keeps every record, for a report held whole (``--json``) of a streamed run."""

    def __init__(self) -> None:
        self.files: list[FileResult] = []
        self.releases: list[ReleaseResult] = []
        self.excluded: list[Excluded] = []

    def record(self, item: ReportRecord) -> None:
        if isinstance(item, FileResult):
            self.files.append(item)
        elif isinstance(item, ReleaseResult):
            self.releases.append(item)
        elif isinstance(item, Excluded):
            self.excluded.append(item)

    def attach(self, report: SyncReport) -> SyncReport:
        """The report with every file, release and exclusion heard (errors it keeps itself)."""
        if report.streamed is None:
            return report
        return replace(
            report,
            files=tuple(self.files),
            releases=tuple(self.releases),
            excluded=tuple(self.excluded),
        )


@dataclass(frozen=True, slots=True)
class SyncReport:
    """The outcome of a sync: per file, per release, per failed project, and what was left out.

    ``started`` is when the run began (ISO 8601, UTC) and ``seconds`` how long
    it took, both set by the job that ran it. A run over the whole index
    streams its records to a :class:`ReportSink` instead of keeping them:
    its report keeps only what failed (files, projects) and the warnings,
    and ``streamed`` holds the totals of everything.
    """

    target: str
    files: tuple[FileResult, ...]
    releases: tuple[ReleaseResult, ...]
    project_errors: tuple[ProjectError, ...]
    dry_run: bool = False
    projects: int = 0
    projects_unchanged: int = 0
    excluded: tuple[Excluded, ...] = ()
    started: str | None = None
    seconds: float | None = None
    warnings: tuple[ProjectWarning, ...] = ()
    #: Why the run stopped before its end (a fatal error, an interrupt); ``None`` when it did not.
    aborted: str | None = None
    streamed: ReportTotals | None = None

    @property
    def totals(self) -> ReportTotals:
        if self.streamed is not None:
            return self.streamed
        return Tally.of(self.files, self.releases, self.excluded)

    @property
    def failed(self) -> bool:
        totals = self.totals
        return bool(
            self.aborted
            or self.project_errors
            or totals.failed
            or totals.replaced_upstream
            or totals.releases_failed
        )

    def count(self, action: FileAction) -> int:
        """How many files ended with ``action``."""
        return self.totals.files_with(action)

    @property
    def bytes_pushed(self) -> int:
        return self.totals.bytes_pushed


Phase = Literal["resolving", "reading"]


class SyncObserver(Protocol):
    """Hears a sync as it happens; every method must return quickly.

    The phases: ``phase("resolving", requirements)`` while the dependency
    closure is resolved (``--with-deps`` only), then ``phase("reading",
    projects)`` as the projects' pages are read and their files selected;
    each project then says ``project_planned`` once (whatever became of it),
    and once every project has, the total of the run is known. A run that
    plans first (named requirements, not ``--all``) then says
    ``transfer_planned`` before its first transfer.
    """

    def phase(self, name: Phase, count: int) -> None:
        """A phase begins, over ``count`` requirements (resolving) or projects (reading)."""

    def project_planned(self, project: str) -> None:
        """A project's files are selected (or it is unchanged, or it failed): once each."""

    def files_planned(self, count: int, total_bytes: int) -> None:
        """More files were selected (called once per project)."""

    def transfer_planned(self, count: int, total_bytes: int) -> None:
        """Every project is planned, no transfer has started: up to ``count`` files and
        ``total_bytes`` to transfer (projects unchanged since their last sync aside).

        Called once, when the run plans first and has something to transfer.
        """

    def transfer_started(self, filename: str, size: int | None) -> None:
        """A file's bytes started to flow."""

    def bytes_transferred(self, filename: str, count: int) -> None:
        """``count`` more bytes of ``filename`` were stored."""

    def file_finished(self, result: FileResult) -> None:
        """A file is pushed, found present or unchanged, or failed."""

    def release_finished(self, result: ReleaseResult) -> None:
        """A version's index is tagged, unchanged or failed."""


class NullObserver:
    """An observer that ignores everything."""

    def phase(self, name: Phase, count: int) -> None:
        return None

    def project_planned(self, project: str) -> None:
        return None

    def files_planned(self, count: int, total_bytes: int) -> None:
        return None

    def transfer_planned(self, count: int, total_bytes: int) -> None:
        return None

    def transfer_started(self, filename: str, size: int | None) -> None:
        return None

    def bytes_transferred(self, filename: str, count: int) -> None:
        return None

    def file_finished(self, result: FileResult) -> None:
        return None

    def release_finished(self, result: ReleaseResult) -> None:
        return None


class ReportCollector:
    """An observer that keeps what it hears, passing it on to another one.

    When a run stops before its end (a fatal error, an interrupt), the
    engine returns no report; :meth:`partial` makes one of what had finished.
    For a streamed run (``keep=False``) it counts instead, keeping only the
    files that failed: its records went out as they came.
    """

    def __init__(self, inner: SyncObserver | None = None, *, keep: bool = True) -> None:
        self._inner: SyncObserver = inner or NullObserver()
        self._keep = keep
        self._tally = Tally()
        self.files: list[FileResult] = []
        self.releases: list[ReleaseResult] = []

    def phase(self, name: Phase, count: int) -> None:
        self._inner.phase(name, count)

    def project_planned(self, project: str) -> None:
        self._inner.project_planned(project)

    def files_planned(self, count: int, total_bytes: int) -> None:
        self._inner.files_planned(count, total_bytes)

    def transfer_planned(self, count: int, total_bytes: int) -> None:
        self._inner.transfer_planned(count, total_bytes)

    def transfer_started(self, filename: str, size: int | None) -> None:
        self._inner.transfer_started(filename, size)

    def bytes_transferred(self, filename: str, count: int) -> None:
        self._inner.bytes_transferred(filename, count)

    def file_finished(self, result: FileResult) -> None:
        if self._keep or result.action in FAILED_ACTIONS:
            self.files.append(result)
        if not self._keep:
            self._tally.add(result)
        self._inner.file_finished(result)

    def release_finished(self, result: ReleaseResult) -> None:
        if self._keep:
            self.releases.append(result)
        else:
            self._tally.add(result)
        self._inner.release_finished(result)

    def partial(self, target: str, aborted: str, *, dry_run: bool = False) -> SyncReport:
        """The report of a run that stopped, with what had finished before ``aborted``."""
        if not self._keep:
            return SyncReport(
                target=target,
                files=tuple(self.files),
                releases=(),
                project_errors=(),
                dry_run=dry_run,
                aborted=aborted,
                streamed=self._tally.totals(),
            )
        return SyncReport(
            target=target,
            files=tuple(self.files),
            releases=tuple(self.releases),
            project_errors=(),
            dry_run=dry_run,
            projects=len({f.project for f in self.files} | {r.project for r in self.releases}),
            aborted=aborted,
        )
