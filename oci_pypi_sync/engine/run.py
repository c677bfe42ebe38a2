"""The sync engine: read the index, select files, write them to a store in a safe order.

Per project: fetch its page, select files, and per version read the
target's current index once; files it already holds are reused, the others
stream from the index into the store (verified against the sha256 before
they become visible), then the version's index is tagged, children first,
so a tag never points at missing content.

Transient faults are retried per step (:mod:`.retry`); a file or project
that still fails is recorded and reported without stopping the others; a
target that cannot be reached or refuses our credentials stops the run,
since nothing else could succeed. With a journal (:mod:`.journal`), an
unchanged project costs one page fetch, blobs known elsewhere in the
registry are mounted instead of downloaded, and projects that keep failing
are quarantined.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from packaging.requirements import Requirement

from oci_pypi_sync.engine.binding import bind_state
from oci_pypi_sync.engine.metadata import MetadataSource
from oci_pypi_sync.engine.provenance import ProvenanceStep
from oci_pypi_sync.engine.release import ReleaseSync, TagsListed, file_result
from oci_pypi_sync.engine.results import (
    FAILED_ACTIONS,
    Excluded,
    FileAction,
    FileResult,
    NullObserver,
    ProjectError,
    ProjectWarning,
    ReleaseResult,
    ReportRecord,
    ReportSink,
    SyncObserver,
    SyncReport,
    Tally,
)
from oci_pypi_sync.engine.retry import RetryPolicy, with_retries
from oci_pypi_sync.engine.writer import Writer
from oci_pypi_sync.errors import (
    FATAL_ERRORS,
    BudgetExceededError,
    IndexUnreachableError,
    OciPypiError,
    ProjectNotFoundError,
    RegistryUnreachableError,
    first_error,
    unexpected_error,
)
from oci_pypi_sync.format import (
    FORMAT_VERSION,
    FileName,
    UnsupportedFileError,
    canonical_json,
    is_project_repository,
    is_release_tag,
    parse_filename,
    read_release_index,
    repository_name,
    version_tag,
)
from oci_pypi_sync.index.cache import NO_PAGES, PagesRead
from oci_pypi_sync.ops.catalog import (
    ACTIVE,
    CATALOG_REPOSITORY,
    CatalogChange,
    ProjectStatus,
    update_catalog,
)
from oci_pypi_sync.plan.listed import ListedProject, ListedProjects
from oci_pypi_sync.plan.select import (
    UNTRUSTED_LISTINGS,
    ProjectSelection,
    SelectedFile,
    SelectionOptions,
    select_files,
    version_sort_key,
)
from oci_pypi_sync.provenance.policy import ProvenanceOptions
from oci_pypi_sync.provenance.publishers import publisher_changes
from oci_pypi_sync.sizes import human_bytes
from oci_pypi_sync.stores.protocols import ListsRepositoriesWithin

if TYPE_CHECKING:
    from oci_pypi_sync.index.client import IndexClient
    from oci_pypi_sync.index.records import DistributionFile, ProjectPage
    from oci_pypi_sync.plan.shard import Shard
    from oci_pypi_sync.state.journal import Journal, ProjectState
    from oci_pypi_sync.stores.protocols import Store

__all__ = [
    "FileResult",
    "ProjectError",
    "ReleaseResult",
    "SyncOptions",
    "SyncReport",
    "Syncer",
    "group_requirements",
    "sync",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# From this many projects new to the state file, a run may read the target's
# catalog instead of their tag lists, if the catalog is this many pages at most:
# its pages come one after another while tag lists go in parallel, so only a
# short catalog (a registry being filled for the first time) saves time.
CATALOG_MIN_PROJECTS = 32
CATALOG_MAX_PAGES = 2


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """How to sync, beyond what to select."""

    selection: SelectionOptions = field(default_factory=SelectionOptions)
    dry_run: bool = False
    jobs: int = 8
    probe_metadata: bool = True
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    prune: bool = False
    shard: Shard | None = None
    recheck: bool = False
    retry_quarantined: bool = False
    provenance: ProvenanceOptions = field(default_factory=ProvenanceOptions)
    #: Refuse the run, before any transfer, when its selected files are larger.
    max_bytes: int | None = None
    #: Read every project's page before the first transfer, so that the run's
    #: total is known (and said) before it starts. Off for ``--all``, whose
    #: projects are too many to hold planned at once.
    plan_first: bool = True
    #: Projects taken because the index lists them (``--all``), not because a
    #: requirement names them: for these, selecting no file is no failure.
    optional: frozenset[str] = frozenset()
    accept_replaced: bool = False


@dataclass(frozen=True, slots=True)
class _ProjectOutcome:
    files: tuple[FileResult, ...] = ()
    releases: tuple[ReleaseResult, ...] = ()
    error: ProjectError | None = None
    unchanged: bool = False
    excluded: tuple[Excluded, ...] = ()
    warnings: tuple[ProjectWarning, ...] = ()
    unmatched: tuple[ProjectError, ...] = ()  # requirements that select no file
    status: ProjectStatus | None = None  # as the page read in this run says
    tags: frozenset[str] | None = None  # the project's tags in the target, when listed

    @property
    def changes_catalog(self) -> bool:
        """Whether the catalog may need this outcome: new releases, or a status to record."""
        if self.unchanged:
            return False
        return bool(self.releases) or (self.status is not None and not self.status.active)


class Syncer:
    """Runs one sync of requirements from an index into a store."""

    def __init__(
        self,
        index: IndexClient,
        store: Store,
        options: SyncOptions | None = None,
        *,
        journal: Journal | None = None,
        observer: SyncObserver | None = None,
        pages: PagesRead | None = None,
    ) -> None:
        self.index = index
        # Pages this run already read (for the dependency closure).
        self._known_pages = pages or NO_PAGES
        self.store = store
        self.options = options or SyncOptions()
        self.journal = journal if not self.options.dry_run else None
        self.observer: SyncObserver = observer or NullObserver()
        jobs = max(1, self.options.jobs)
        self._project_slots = asyncio.Semaphore(max(4, jobs))
        retry = self.options.retry
        self.writer = Writer(store, retry, self.journal)
        self._provenance = ProvenanceStep(
            index, self.writer, self.options.provenance, retry, recheck=self.options.recheck
        )
        self.releases = ReleaseSync(
            index,
            self.writer,
            MetadataSource(
                index, probe=self.options.probe_metadata, retry=retry, cache=self.journal
            ),
            retry=retry,
            observer=self.observer,
            journal=self.journal,
            provenance=self._provenance,
            file_slots=asyncio.Semaphore(jobs),
            prune=self.options.prune,
            accept_replaced=self.options.accept_replaced,
        )
        # The target's repositories from its catalog, read once when a project
        # new to the state file first needs its tags (see _listed_repositories).
        self._catalog_pages = 0
        self._repositories: asyncio.Future[tuple[frozenset[str] | None, float]] | None = None
        # Projects whose files are selected: (files, bytes) to transfer each; when all
        # are, the run's total is known (and --max-bytes can be checked).
        self._planned_projects: dict[str, tuple[int, int]] = {}
        self._project_count = 0
        self._all_planned = asyncio.Event()
        self._over_budget: str | None = None  # why the run is refused, once the total is known
        self._keys = SelectionKeys(self.options)

    async def run(
        self, requirements: Sequence[Requirement], serials: Mapping[str, int] | None = None
    ) -> SyncReport:
        """Sync ``requirements``; ``serials`` are the project list's ``_last-serial`` by
        normalized name: a project whose serial has not moved since its last complete
        sync costs no request at all."""
        if not self.options.dry_run:
            self._provenance.prepare()
        grouped = group_requirements(requirements)
        shard = self.options.shard
        if shard is not None:
            grouped = {name: reqs for name, reqs in grouped.items() if shard.owns(name)}
            log.info("shard %s: %d projects", shard, len(grouped))
        outcomes: dict[str, _ProjectOutcome] = {}
        if self.journal is not None:
            # Before anything trusts the state file: is it this target's?
            await bind_state(self.writer, self.journal, self.options.retry)
        serials = serials or {}
        listed = [(name, serials.get(name)) for name in grouped]
        for project in self._unmoved(listed, lambda name: self._keys.of(grouped[name])):
            outcomes[project] = _ProjectOutcome(unchanged=True)
        if outcomes:
            log.info("%d projects unchanged since their last sync, by serial", len(outcomes))
        self._catalog_pages = self._catalog_budget(
            lambda journal: len(grouped.keys() - (journal.project_names() if journal else set()))
        )
        self._project_count = len(grouped)
        self.observer.phase("reading", len(grouped))
        for project in outcomes:  # unmoved by serial: planned, nothing to transfer
            self._mark_planned(project, 0, 0)

        async def one(project: str, reqs: Sequence[Requirement]) -> None:
            outcomes[project] = await self._guarded_project(
                project,
                reqs,
                serial=serials.get(project),
                optional=project in self.options.optional,
            )

        try:
            async with asyncio.TaskGroup() as group:
                for project, reqs in grouped.items():
                    if project not in outcomes:
                        group.create_task(one(project, reqs))
            draft = _CatalogDraft()
            for name in grouped:
                if name in outcomes:
                    draft.add(name, outcomes[name])
            catalog_error, settled = await self._finish(draft)
            ordered = [outcomes[name] for name in grouped if name in outcomes]
            releases = [self._settled(r, settled) for o in ordered for r in o.releases]
        except BaseExceptionGroup as group_error:
            raise first_error(group_error) from None
        finally:
            self.writer.abandon()
        if not self.options.dry_run:
            self.writer.commit()
        errors = [o.error for o in ordered if o.error is not None]
        errors += [unmatched for o in ordered for unmatched in o.unmatched]
        if catalog_error is not None:
            errors.append(catalog_error)
        return SyncReport(
            target=self.store.display_name,
            files=tuple(f for o in ordered for f in o.files),
            releases=tuple(releases),
            project_errors=tuple(errors),
            dry_run=self.options.dry_run,
            projects=len(grouped),
            projects_unchanged=sum(1 for o in ordered if o.unchanged),
            warnings=tuple(w for o in ordered for w in o.warnings),
            excluded=tuple(e for o in ordered for e in o.excluded),
        )

    async def stream(
        self, projects: ListedProjects | Sequence[ListedProject], sink: ReportSink
    ) -> SyncReport:
        """Sync the projects of a run over the whole index, a bounded number at a time.

        What :meth:`run` does for requirements it is given, for a list that can
        hold a million projects: projects are taken from ``projects`` as room
        frees up (at most :data:`STREAM_WINDOW` at once), those whose serial
        did not move are passed over in batches without being made into
        requirements, and each finished project's records go to ``sink`` and
        are counted, not kept. Memory does not grow with the number of
        projects: the report keeps what failed and the warnings, and the
        catalog's additions are written every :data:`CATALOG_FLUSH` changed
        projects. Records come in the order projects finish.
        """
        if self.options.max_bytes is not None:
            raise ValueError("a budget needs every page read first: use run()")
        # Projects flow through: none waits for the others' plans.
        self.options = replace(self.options, plan_first=False)
        if not self.options.dry_run:
            self._provenance.prepare()
        if self.journal is not None:
            # Before anything trusts the state file: is it this target's?
            await bind_state(self.writer, self.journal, self.options.retry)
        count = len(projects)
        if self.options.shard is not None:
            log.info("shard %s: %d projects", self.options.shard, count)
        self._catalog_pages = self._catalog_budget(
            lambda journal: count - (journal.project_count() if journal is not None else 0)
        )
        self.observer.phase("reading", count)
        streamed = _Streamed(sink)
        draft = _CatalogDraft()
        room = asyncio.Semaphore(STREAM_WINDOW)
        in_flight: set[str] = set()

        async def one(item: ListedProject) -> None:
            try:
                outcome = await self._guarded_project(
                    item.name, item.requirements(), serial=item.serial, optional=item.optional
                )
                streamed.add(outcome)
                draft.add(item.name, outcome)
            finally:
                in_flight.discard(item.name)
                self._planned_projects.pop(item.name, None)
                room.release()

        try:
            async with asyncio.TaskGroup() as group:
                for batch in _batches(projects, STREAM_BATCH):
                    unmoved = self._unmoved(
                        [(item.name, item.serial) for item in batch],
                        partial(_listed_key, self._keys, {item.name: item for item in batch}),
                    )
                    for item in batch:
                        if item.name in unmoved or item.name in in_flight:
                            streamed.passed_over(item.name in unmoved)
                            self.observer.project_planned(item.name)
                            continue
                        await room.acquire()
                        in_flight.add(item.name)
                        group.create_task(one(item))
                    if len(draft) >= CATALOG_FLUSH:
                        streamed.failed(await self._write_catalog(draft))
            streamed.failed((await self._finish(draft))[0])
        except BaseExceptionGroup as group_error:
            raise first_error(group_error) from None
        finally:
            self.writer.abandon()
        if not self.options.dry_run:
            self.writer.commit()
        if unmoved_total := streamed.unchanged:
            log.info("%d projects unchanged since their last sync, by serial", unmoved_total)
        return SyncReport(
            target=self.store.display_name,
            files=tuple(streamed.failed_files),
            releases=(),
            project_errors=tuple(streamed.errors),
            dry_run=self.options.dry_run,
            projects=count,
            projects_unchanged=streamed.unchanged,
            warnings=tuple(streamed.warnings),
            streamed=streamed.tally.totals(),
        )

    async def _finish(
        self, draft: _CatalogDraft
    ) -> tuple[ProjectError | None, Mapping[tuple[str, str], str | None]]:
        """The end of a run: the catalog written, the tags settled, the lease released.

        The catalog is written with the digests as tagged while the tags'
        settle checks run, so one settle wait covers both; a tag another
        writer moved meanwhile is recorded again with what it holds now.
        Returns the catalog's error, if any, and the tags that moved.
        """
        error = await self._write_catalog(draft)
        settled = await self.writer.settle()
        await self._moved_after_write(draft, settled)
        if len(draft):
            error = await self._write_catalog(draft) or error
            await self.writer.settle()  # the catalog's own tag, written again
        await self.writer.close()
        return error, settled

    async def _moved_after_write(
        self, draft: _CatalogDraft, settled: Mapping[tuple[str, str], str | None]
    ) -> None:
        """Releases written to the catalog already whose tags another writer moved since:
        recorded again with the digest they have now (their version read back)."""
        for (project, tag), digest in settled.items():
            if digest is None or not is_release_tag(tag):
                continue
            if not is_project_repository(project):
                continue
            stored = await self._retry(
                f"{project}:{tag}: index", partial(self.store.get_manifest, project, tag)
            )
            if stored is None or stored.digest != digest:
                continue
            try:
                version = read_release_index(stored.body).version
            except ValueError:
                continue
            if self.journal is not None:
                self.journal.record_release(project, version, tag, digest)
            draft.add_release(ReleaseResult(project, version, tag, digest, "pushed"))

    async def _write_catalog(self, draft: _CatalogDraft) -> ProjectError | None:
        """Record what the draft holds in the target's catalog (nothing in a dry run).

        A catalog that cannot be written leaves its projects to be read again
        by the next run (their state is marked incomplete), so they reach the
        catalog then.
        """
        change, projects = draft.take()
        if self.options.dry_run or change.empty:
            return None
        try:
            latest = await self._retry("catalog", lambda: update_catalog(self.writer, change))
        except FATAL_ERRORS:
            raise
        except (OciPypiError, ValueError) as exc:
            log.warning("catalog: %s", exc)
            if self.journal is not None:
                self.journal.mark_incomplete(projects)
            return ProjectError(CATALOG_REPOSITORY, f"catalog not updated: {exc}")
        if self.journal is not None:
            # The catalog this state last wrote: the next run's check (bind_state).
            written = None
            if latest is not None:
                try:
                    written = await self._retry(
                        "catalog", partial(self.store.get_manifest, CATALOG_REPOSITORY, latest)
                    )
                except FATAL_ERRORS:
                    raise
                except OciPypiError as exc:  # the next run reads the whole catalog instead
                    log.info("catalog %s not read back (%s)", latest, exc)
            self.journal.record_catalog(latest, written.body if written is not None else None)
        return None

    def _settled(
        self, release: ReleaseResult, settled: Mapping[tuple[str, str], str | None]
    ) -> ReleaseResult:
        """The release with the digest its tag has after the settle checks."""
        digest = settled.get((release.project, release.tag))
        if digest is None or digest == release.digest or release.action != "pushed":
            return release
        if self.journal is not None:
            self.journal.record_release(release.project, release.version, release.tag, digest)
        return replace(release, digest=digest)

    def _unmoved(
        self, projects: Sequence[tuple[str, int | None]], key: Callable[[str], str]
    ) -> set[str]:
        """Those of ``(project, listed serial)`` whose serial is where their last complete
        sync of the same selection left it: nothing to ask the index. ``key`` gives a
        project's selection key, asked only of projects whose serial did not move."""
        journal = self.journal
        if journal is None or self.options.recheck:
            return set()
        listed = [(name, serial) for name, serial in projects if serial is not None]
        if not listed:
            return set()
        synced = journal.synced_serials([name for name, _ in listed])
        unmoved = set()
        for name, serial in listed:
            known = synced.get(name)
            if known is not None and known[0] >= serial and known[1] == key(name):
                unmoved.add(name)
        return unmoved

    # --- projects --------------------------------------------------------------

    async def _guarded_project(
        self,
        project: str,
        reqs: Sequence[Requirement],
        *,
        serial: int | None = None,
        optional: bool = False,
    ) -> _ProjectOutcome:
        """One project, its failures recorded; only fatal errors escape.

        ``serial`` is the one the project list gives the project; ``optional``
        says it is taken because the index lists it (see :attr:`SyncOptions.optional`).
        """
        try:
            async with self._project_slots:
                return await self._guarded_project_in_slot(project, reqs, serial, optional)
        finally:
            self._mark_planned(project, 0, 0)  # a project that ended before its plan

    async def _guarded_project_in_slot(
        self, project: str, reqs: Sequence[Requirement], serial: int | None, optional: bool
    ) -> _ProjectOutcome:
        journal = self.journal
        state = journal.project_state(project) if journal is not None else None
        if state is not None and not self.options.retry_quarantined and state.is_quarantined():
            message = f"quarantined after repeated failures (last: {state.last_error})"
            log.warning("%s: %s", project, message)
            return _ProjectOutcome(error=ProjectError(project, message, quarantined=True))
        try:
            return await self._sync_project(project, reqs, state, serial, optional)
        except FATAL_ERRORS:
            raise
        except ProjectNotFoundError as exc:
            # A name the index does not have is no transient fault: reported
            # every run, never counted towards quarantine.
            return _ProjectOutcome(error=ProjectError(project, str(exc), not_found=True))
        except OciPypiError as exc:
            message = str(exc)
        except Exception as exc:  # one project's surprise must not stop the rest
            log.debug("%s: unexpected error", project, exc_info=True)
            message = unexpected_error(exc)
        log.warning("%s: %s", project, message)
        if journal is not None:
            journal.record_project_failure(project, message)
        return _ProjectOutcome(error=ProjectError(project, message))

    async def _sync_project(
        self,
        project: str,
        reqs: Sequence[Requirement],
        state: ProjectState | None,
        expected: int | None,
        optional: bool,
    ) -> _ProjectOutcome:
        options_key = self._keys.of(reqs)
        known = state if not self.options.recheck else None
        validator = _validator(known, options_key)
        if validator is not None and self._known_pages.etag(project) == validator:
            maybe_page = None  # read this run already: what a conditional GET would say
        else:
            maybe_page = self._known_pages.page(project) or await self._retry(
                f"{project}: project page",
                lambda: self.index.get_project_page_if_changed(
                    reqs[0].name, validator, min_serial=expected
                ),
            )
        if maybe_page is None:
            if self.journal is not None and expected is not None:
                self.journal.record_serial(project, expected)
            return self._not_modified(project)
        page = maybe_page
        status = page_status(page)
        if status.quarantined:
            # PEP 792: no file of a quarantined project is to be offered, so none is taken.
            log.warning("%s: quarantined by the index%s", project, _reason(status))
            page = replace(page, files=())
        selection = select_files(page, reqs, self.options.selection)
        for rejection in selection.rejected:
            level = logging.WARNING if rejection.kind in UNTRUSTED_LISTINGS else logging.INFO
            log.log(level, "%s: not mirrored: %s", rejection.filename, rejection.reason)
        excluded = tuple(
            Excluded(project, r.filename, r.reason, r.kind) for r in selection.rejected
        )
        # A quarantined project offers nothing: no requirement of it is a failure.
        unmatched = () if status.quarantined or optional else self._unmatched(project, selection)
        self.observer.files_planned(
            len(selection.files), sum(f.file.size or 0 for f in selection.files)
        )
        if self.options.dry_run:
            await self._await_plan(project, selection.files)
            planned = tuple(
                ReleaseResult(project, version, version_tag(version), None, "planned")
                for version, _ in selection.releases
            )
            return _ProjectOutcome(
                tuple(self._planned(selection)),
                planned,
                excluded=excluded,
                unmatched=unmatched,
                status=status,
            )
        fingerprint = project_fingerprint(page, options_key)
        unchanged = self._unchanged(project, known, selection, fingerprint)
        if unchanged is not None:
            return replace(unchanged, excluded=excluded, unmatched=unmatched)
        await self._await_plan(project, selection.files)
        upstream = _page_files(page, project)
        listed = await self._existing_tags(project, new=state is None)
        results = await asyncio.gather(
            *(
                self.releases.sync(project, version, files, upstream, listed)
                for version, files in selection.releases
            )
        )
        files = tuple(f for release_files, _ in results for f in release_files)
        outcome = _ProjectOutcome(
            files=files,
            releases=tuple(release for _, release in results),
            warnings=_publisher_warnings(repository_name(project), files),
            excluded=excluded,
            unmatched=unmatched,
            status=status,
            tags=listed.tags if listed is not None else None,
        )
        if self.journal is not None:
            failures = [f.error for f in outcome.files if f.action == "failed"] + [
                r.error for r in outcome.releases if r.action == "failed"
            ]
            failures += [u.error for u in unmatched]
            if failures:
                self.journal.record_project_failure(project, failures[0] or "failed")
            else:
                # A file replaced upstream is reported again by every run until
                # it is accepted: the project is not complete, but not failing.
                refused = any(f.action == "replaced-upstream" for f in outcome.files)
                self.journal.record_project_ok(
                    project,
                    page_digest=_remember(fingerprint, page, state),
                    etag=f"{options_key} {page.etag or ''}",
                    last_serial=page.last_serial if page.last_serial is not None else expected,
                    complete=not refused,
                )
        return outcome

    def _mark_planned(self, project: str, files: int, size: int) -> None:
        """Count a project as planned (once); the last one makes the run's total known."""
        if project in self._planned_projects:
            return
        self._planned_projects[project] = (files, size)
        self.observer.project_planned(project)
        if len(self._planned_projects) >= self._project_count:
            self._plan_known()

    @property
    def _plans_first(self) -> bool:
        """Whether no transfer starts before every project is planned."""
        options = self.options
        return options.max_bytes is not None or (options.plan_first and not options.dry_run)

    def _plan_known(self) -> None:
        """Every project is planned: check the budget, say the total, let transfers start."""
        count = sum(n for n, _ in self._planned_projects.values())
        total = sum(size for _, size in self._planned_projects.values())
        budget = self.options.max_bytes
        if budget is not None and total > budget:
            self._over_budget = (
                f"this run would transfer up to {human_bytes(total)} ({count} files), more "
                f"than --max-bytes {human_bytes(budget)}; raise --max-bytes or narrow the "
                "selection (--latest, --only-binary, --target, --allow)"
            )
        elif self._plans_first and not self.options.dry_run and count:
            self.observer.transfer_planned(count, total)
        self._all_planned.set()

    async def _await_plan(self, project: str, files: Sequence[SelectedFile]) -> None:
        """Plan the project's files; when the run plans first, wait for every plan.

        A run plans first unless it streams its projects (``--all``), and
        always with ``max_bytes``: no transfer starts before the total is
        known, said and checked. The project's slot is given back while it
        waits, so the projects after it can be planned.
        """
        self._mark_planned(project, len(files), sum(f.file.size or 0 for f in files))
        if not self._plans_first:
            return
        self._project_slots.release()
        try:
            await self._all_planned.wait()
        finally:
            await self._project_slots.acquire()
        if self._over_budget is not None:
            raise BudgetExceededError(self._over_budget)

    def _unmatched(self, project: str, selection: ProjectSelection) -> tuple[ProjectError, ...]:
        """The requirements that select no file: failures, as pip would fail on them."""
        errors = tuple(ProjectError(project, u.reason) for u in selection.unmatched)
        for error in errors:
            log.warning("%s: %s", project, error.error)
        return errors

    def _not_modified(self, project: str) -> _ProjectOutcome:
        """The outcome of a project whose page the index says is unchanged (304)."""
        journal = self.journal
        assert journal is not None  # a validator is only sent with a journal
        files = tuple(
            FileResult(project, f.version, f.filename, f.sha256, f.size, "unchanged")
            for f in journal.files_of(project)
            if f.status == "done"
        )
        self.observer.files_planned(len(files), sum(f.size or 0 for f in files))
        for result in files:
            self.observer.file_finished(result)
        releases = []
        digests = journal.release_digests(project)
        for version in sorted({f.version for f in files}, key=version_sort_key):
            tag = version_tag(version)
            release = ReleaseResult(project, version, tag, digests.get(tag), "unchanged")
            self.observer.release_finished(release)
            releases.append(release)
        log.info("%s: not modified since the last sync", project)
        return _ProjectOutcome(files=files, releases=tuple(releases), unchanged=True)

    def _unchanged(
        self,
        project: str,
        state: ProjectState | None,
        selection: ProjectSelection,
        fingerprint: str,
    ) -> _ProjectOutcome | None:
        """The outcome of a project the journal saw complete with the same page and options."""
        journal = self.journal
        if journal is None or state is None:
            return None
        if not state.complete or fingerprint not in _fingerprints(state)[1]:
            return None
        files = tuple(self._result(selection, s, "unchanged") for s in selection.files)
        for result in files:
            self.observer.file_finished(result)
        releases = []
        digests = journal.release_digests(project)
        for version, _ in selection.releases:
            tag = version_tag(version)
            release = ReleaseResult(project, version, tag, digests.get(tag), "unchanged")
            self.observer.release_finished(release)
            releases.append(release)
        log.info("%s: unchanged since the last sync", project)
        return _ProjectOutcome(files=files, releases=tuple(releases), unchanged=True)

    def _planned(self, selection: ProjectSelection) -> list[FileResult]:
        planned = [self._result(selection, selected, "planned") for selected in selection.files]
        for result in planned:
            self.observer.file_finished(result)
        return planned

    @staticmethod
    def _result(
        selection: ProjectSelection, selected: SelectedFile, action: FileAction
    ) -> FileResult:
        return file_result(str(selection.project), selected, action)

    # --- releases ----------------------------------------------------------------

    def _catalog_budget(self, new: Callable[[Journal | None], int]) -> int:
        """How many catalog pages are worth reading instead of new projects' tag lists.

        A project the state file has never seen most likely has no
        repository yet; with many of them (a first sync), one catalog read
        saves a tag list each. None for a run of few new projects or a
        store without a catalog. ``new`` counts the run's projects the state
        file does not know.
        """
        if self.options.dry_run or not isinstance(self.store, ListsRepositoriesWithin):
            return 0
        count = new(self.journal)
        return min(CATALOG_MAX_PAGES, count // 2) if count >= CATALOG_MIN_PROJECTS else 0

    async def _listed_repositories(self) -> tuple[frozenset[str] | None, float]:
        """The target's repositories, read once; ``None`` if not listed within the budget.

        With the time the read started (see :meth:`.writer.Writer.read_point`).
        """
        if self._repositories is None:
            self._repositories = asyncio.ensure_future(self._read_catalog())
        return await asyncio.shield(self._repositories)

    async def _read_catalog(self) -> tuple[frozenset[str] | None, float]:
        read_at = await self.writer.read_point()
        return await self._read_repositories(), read_at

    async def _read_repositories(self) -> frozenset[str] | None:
        store = self.store
        assert isinstance(store, ListsRepositoriesWithin)  # see _catalog_budget
        within = store.repositories_within
        try:
            listed: frozenset[str] | None = await self._retry(
                "repository list", lambda: within(self._catalog_pages)
            )
        except (RegistryUnreachableError, IndexUnreachableError):
            raise
        except OciPypiError as exc:  # refused, credentials without catalog access included
            log.info("repositories not listed (%s); listing each project's tags", exc)
            return None
        if listed is None:
            log.info(
                "the catalog is longer than %d pages; listing each project's tags",
                self._catalog_pages,
            )
        return listed

    async def _existing_tags(self, project: str, *, new: bool) -> TagsListed | None:
        """The project's tags in one request, so new versions need no read; ``None``: unknown.

        A project ``new`` to the state file whose repository the catalog
        does not list has none (see :meth:`_catalog_budget`). What was read
        carries when it was read: while the run is the target's only writer
        it stands for the read before each tag's write (see ``Writer.tag``).
        """
        if new and self._catalog_pages:
            repositories, read_at = await self._listed_repositories()
            if repositories is not None and project not in repositories:
                return TagsListed(frozenset(), read_at)
        read_at = await self.writer.read_point()
        try:
            tags = await self._retry(f"{project}: tags", lambda: self.store.list_tags(project))
        except FATAL_ERRORS:
            raise
        except OciPypiError as exc:
            log.info("%s: tags not listed (%s); reading each version's tag", project, exc)
            return None
        return TagsListed(frozenset(tags), read_at)

    async def _retry(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        return await with_retries(self.options.retry, what, step)


#: Projects of a streamed run in flight at once (each also waits for a project slot).
STREAM_WINDOW = 64
#: Projects of a streamed run compared with the state file in one query.
STREAM_BATCH = 512
#: A streamed run writes the catalog's additions once it holds this many releases.
CATALOG_FLUSH = 20_000


def _batches(items: Iterable[ListedProject], size: int) -> Iterator[list[ListedProject]]:
    batch: list[ListedProject] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Streamed:
    """What a streamed run keeps: counts, what failed, and the warnings; every record
    goes to the sink."""

    def __init__(self, sink: ReportSink) -> None:
        self.sink = sink
        self.tally = Tally()
        self.errors: list[ProjectError] = []
        self.failed_files: list[FileResult] = []
        self.warnings: list[ProjectWarning] = []
        self.unchanged = 0

    def add(self, outcome: _ProjectOutcome) -> None:
        records: list[ReportRecord] = [*outcome.files, *outcome.releases]
        records += [e for e in (outcome.error, *outcome.unmatched) if e is not None]
        records += [*outcome.excluded, *outcome.warnings]
        for record in records:
            self.sink.record(record)
            self.tally.add(record)
        self.failed_files += [f for f in outcome.files if f.action in FAILED_ACTIONS]
        self.errors += [e for e in (outcome.error, *outcome.unmatched) if e is not None]
        self.warnings += outcome.warnings
        if outcome.unchanged:
            self.unchanged += 1

    def passed_over(self, unchanged: bool) -> None:
        """A project not synced: unchanged by its serial, or listed twice and in flight."""
        self.unchanged += unchanged

    def failed(self, error: ProjectError | None) -> None:
        """An error of the run's own (the catalog not written), reported like a project's."""
        if error is not None:
            self.errors.append(error)
            self.sink.record(error)


class _CatalogDraft:
    """The catalog's share of a run: outcomes with new releases or a status, until written."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._releases: list[ReleaseResult] = []
        self._statuses: dict[str, ProjectStatus] = {}
        self._holds: dict[str, frozenset[str]] = {}
        self._projects: set[str] = set()

    def add(self, project: str, outcome: _ProjectOutcome) -> None:
        if not outcome.changes_catalog:
            return
        self._projects.add(project)
        self._releases += outcome.releases
        if outcome.status is not None:
            self._statuses[project] = outcome.status
        if outcome.tags is not None:
            self._holds[project] = outcome.tags

    def add_release(self, release: ReleaseResult) -> None:
        self._projects.add(release.project)
        self._releases.append(release)

    def __contains__(self, project: object) -> bool:
        return project in self._projects

    def __len__(self) -> int:
        return len(self._releases) + len(self._statuses)

    def take(self) -> tuple[CatalogChange, list[str]]:
        """The change to write, and its projects; the draft starts empty again."""
        change = CatalogChange.of_releases(self._releases, self._statuses, self._holds)
        projects = sorted(self._projects)
        self._reset()
        return change, projects


#: Fingerprints kept per project, one per selection synced complete at the same page:
#: targets alternating on one state file do not make each other's projects look changed.
FINGERPRINTS_KEPT = 4
_PAGE = "page:"


def _fingerprints(state: ProjectState | None) -> tuple[str | None, list[str]]:
    """The page digest the kept fingerprints were recorded at, and the fingerprints."""
    if state is None or not state.page_digest:
        return None, []
    words = state.page_digest.split()
    if words and words[0].startswith(_PAGE):
        return words[0][len(_PAGE) :], words[1:]
    return None, words  # one fingerprint, as older state files keep it


def _remember(fingerprint: str, page: ProjectPage, state: ProjectState | None) -> str:
    """What to store: this page's digest and this selection's fingerprint first.

    The fingerprints of other selections are kept only while the page is the
    one they were recorded at: each of those syncs left its files in the
    target (writers merge), and nothing since has had a reason to change
    them. A changed page drops them all.
    """
    page_digest = project_fingerprint(page, "")
    recorded_at, older = _fingerprints(state)
    kept = [f for f in older if f != fingerprint] if recorded_at == page_digest else []
    return " ".join([_PAGE + page_digest, fingerprint, *kept][: FINGERPRINTS_KEPT + 1])


def _validator(state: ProjectState | None, options_key: str) -> str | None:
    """The ETag to send, when the last complete sync of this selection stored one.

    The journal keeps it prefixed with the selection's key, so a 304 is only
    trusted for the requirements and options it was recorded with.
    """
    if state is None or not state.complete or not state.etag:
        return None
    key, _, etag = state.etag.partition(" ")
    return etag if key == options_key and etag else None


def _publisher_warnings(project: str, files: Sequence[FileResult]) -> tuple[ProjectWarning, ...]:
    """A warning for each change of publisher from one version to the next."""
    by_version: dict[str, set[str]] = {}
    for result in files:
        if result.provenance is not None:
            by_version.setdefault(result.version, set()).update(result.provenance.publishers)
    ordered = sorted(by_version.items(), key=lambda item: version_sort_key(item[0]))
    changes = publisher_changes(project, ordered)
    for change in changes:
        log.warning("%s", change)
    return tuple(ProjectWarning(project, str(change)) for change in changes)


def _page_files(page: ProjectPage, project: str) -> dict[str, tuple[DistributionFile, FileName]]:
    files = {}
    for file in page.files:
        try:
            files[file.filename] = (file, parse_filename(file.filename, project))
        except UnsupportedFileError:
            continue
    return files


class SelectionKeys:
    """A digest of what decides a project's selection and the bytes written, the page
    aside, for the many projects of one run.

    The options' part of the document is serialised once; each project
    then costs one hash over its requirements spliced in (a run over a
    million projects compares each against the state file). The digest is
    the same as serialising the whole document each time.
    """

    _SLOT = "\x00requirements\x00"

    def __init__(self, options: SyncOptions) -> None:
        document = {
            "format": FORMAT_VERSION,
            "requirements": [self._SLOT],
            **options.selection.key(),
            **options.provenance.key(),
            "probe_metadata": options.probe_metadata,
            "prune": options.prune,
        }
        slot = canonical_json(self._SLOT)
        head, found, tail = canonical_json(document).partition(slot)
        if not found or slot in tail:
            raise AssertionError("the requirements' place in the selection key is not unique")
        self._head = hashlib.sha256(head)
        self._tail = tail

    def of(self, requirements: Sequence[Requirement]) -> str:
        return self.of_texts(texts(requirements))

    def of_listed(self, project: ListedProject) -> str:
        """The key of a project of a run over the index, without making its requirements."""
        if project.named or not project.listed:
            return self.of_texts(project.requirement_texts())
        # Taken whole by its normalized name, which needs no escape: most of such a run.
        digest = self._head.copy()
        digest.update(b'"' + project.name.encode() + b'"' + self._tail)
        return "sha256:" + digest.hexdigest()

    def of_texts(self, requirements: Sequence[str]) -> str:
        """The key of requirements given as text (``str(requirement)``)."""
        if len(requirements) == 1:  # a project taken whole: most of a run over the index
            listed = _json_string(requirements[0])
        else:
            listed = b",".join(_json_string(text) for text in sorted(requirements))
        digest = self._head.copy()
        digest.update(listed + self._tail)
        return "sha256:" + digest.hexdigest()


def _listed_key(keys: SelectionKeys, items: Mapping[str, ListedProject], name: str) -> str:
    return keys.of_listed(items[name])


def _json_string(text: str) -> bytes:
    """``canonical_json(text)``, without the encoder for text that needs no escape."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'.encode()
    return canonical_json(text)


def texts(requirements: Sequence[Requirement]) -> list[str]:
    return [str(r) for r in requirements]


def project_fingerprint(page: ProjectPage, options_key: str) -> str:
    """A digest of everything that decides what a project's sync writes.

    The page's files (with yank state, metadata hashes...) and the
    selection key: when neither changed since a complete sync, nothing
    would be written.
    """
    files = sorted(
        (
            f.filename,
            f.sha256 or "",
            f.yanked,
            f.yanked_reason or "",
            f.requires_python or "",
            f.upload_time or "",
            f.size if f.size is not None else -1,
            [list(pair) for pair in (f.core_metadata.hashes if f.core_metadata else ())],
            f.core_metadata is not None,
            # the provenance URL only when there is one, so pages without
            # provenance keep the fingerprints recorded before it was read
            *((f.provenance,) if f.provenance else ()),
        )
        for f in page.files
    )
    document: dict[str, Any] = {"selection": options_key, "files": files}
    status = page_status(page)
    if not status.active:
        # Only then: the fingerprints of active projects stay those of earlier versions.
        document["status"] = [status.status, status.reason or ""]
    return "sha256:" + hashlib.sha256(canonical_json(document)).hexdigest()


def page_status(page: ProjectPage) -> ProjectStatus:
    """The page's PEP 792 status; a page that gives none is ``active``."""
    if not page.status:
        return ProjectStatus(ACTIVE)
    return ProjectStatus(page.status.strip().lower(), page.status_reason or None)


def _reason(status: ProjectStatus) -> str:
    return f" ({status.reason})" if status.reason else ""


def group_requirements(requirements: Sequence[Requirement]) -> dict[str, list[Requirement]]:
    """Requirements by normalized project name, in first-seen order.

    Several requirements for one project select the union of their files,
    so each version's index is written once.
    """
    grouped: dict[str, list[Requirement]] = {}
    for req in requirements:
        grouped.setdefault(str(repository_name(req.name)), []).append(req)
    return grouped


async def sync(
    requirements: Sequence[Requirement],
    index: IndexClient,
    store: Store,
    options: SyncOptions | None = None,
    *,
    journal: Journal | None = None,
    observer: SyncObserver | None = None,
    pages: PagesRead | None = None,
    serials: Mapping[str, int] | None = None,
) -> SyncReport:
    """Mirror what ``requirements`` select from ``index`` into ``store``.

    ``pages``: project pages this run already read, used instead of reading them again.
    ``serials``: the project list's ``_last-serial`` by normalized name (see
    :meth:`Syncer.run`).
    """
    syncer = Syncer(index, store, options, journal=journal, observer=observer, pages=pages)
    return await syncer.run(requirements, serials)
