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
import io
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from oci_pypi_sync.engine.provenance import CheckedProvenance, ProvenanceStep
from oci_pypi_sync.engine.results import (
    Excluded,
    FileAction,
    FileProvenance,
    FileResult,
    NullObserver,
    ProjectError,
    ProjectWarning,
    ReleaseResult,
    SyncObserver,
    SyncReport,
)
from oci_pypi_sync.engine.retry import RetryPolicy, is_transient, with_retries
from oci_pypi_sync.errors import (
    FATAL_ERRORS,
    BudgetExceededError,
    DigestMismatchError,
    IndexError_,
    IndexUnreachableError,
    OciPypiError,
    ProjectNotFoundError,
    RegistryError,
    RegistryUnreachableError,
    unexpected_error,
)
from oci_pypi_sync.format import (
    FORMAT_VERSION,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    FileArtifact,
    FileName,
    UnsupportedFileError,
    build_file_artifact,
    build_release_index,
    canonical_json,
    empty_config,
    normalize_version,
    parse_filename,
    parse_release_index,
    repository_name,
    version_tag,
)
from oci_pypi_sync.format.reconcile import (
    entries_by_title,
    entry_file_size,
    reconcile_release,
    reusable_entries,
)
from oci_pypi_sync.index.remote_wheel import read_metadata_member
from oci_pypi_sync.ops.catalog import CATALOG_REPOSITORY, Catalog, update_catalog
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

if TYPE_CHECKING:
    from oci_pypi_sync.index.client import IndexClient
    from oci_pypi_sync.index.records import CoreMetadata, DistributionFile, ProjectPage
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

#: Wheels up to this size are kept in memory while they stream, so their
#: METADATA can stand in for a separate ``.metadata`` request.
SMALL_WHEEL_BYTES = 1 << 20
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
    #: Projects taken because the index lists them (``--all``), not because a
    #: requirement names them: for these, selecting no file is no failure.
    optional: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class _ProjectOutcome:
    files: tuple[FileResult, ...] = ()
    releases: tuple[ReleaseResult, ...] = ()
    error: ProjectError | None = None
    unchanged: bool = False
    excluded: tuple[Excluded, ...] = ()
    warnings: tuple[ProjectWarning, ...] = ()
    unmatched: tuple[ProjectError, ...] = ()  # requirements that select no file


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
    ) -> None:
        self.index = index
        self.store = store
        self.options = options or SyncOptions()
        self.journal = journal if not self.options.dry_run else None
        self.observer: SyncObserver = observer or NullObserver()
        jobs = max(1, self.options.jobs)
        self._file_slots = asyncio.Semaphore(jobs)
        self._project_slots = asyncio.Semaphore(max(4, jobs))
        # Blob writes by (repository, digest): each digest is stored once per run,
        # however many files ask at once (see _once).
        self._blob_writes: dict[tuple[str, str], asyncio.Future[Any]] = {}
        # Repositories whose empty config the state file vouches for (_holds_config).
        self._config_held: dict[str, bool] = {}
        self._wheel_metadata: dict[tuple[str, str], bytes] = {}
        # Core metadata by (repository, advertised sha256) while a release syncs:
        # files that share it (a release's platform wheels) read it once.
        self._shared_metadata: dict[tuple[str, str], asyncio.Future[bytes | None]] = {}
        # The target's repositories from its catalog, read once when a project
        # new to the state file first needs its tags (see _listed_repositories).
        self._catalog_pages = 0
        self._repositories: asyncio.Future[frozenset[str] | None] | None = None
        # Projects whose files are selected: (files, bytes) to transfer each; when all
        # are, the run's total is known (and --max-bytes can be checked).
        self._planned_projects: dict[str, tuple[int, int]] = {}
        self._project_count = 0
        self._all_planned = asyncio.Event()
        self._provenance = ProvenanceStep(
            index,
            store,
            self.options.provenance,
            self.options.retry,
            recheck=self.options.recheck,
        )

    async def run(self, requirements: Sequence[Requirement]) -> SyncReport:
        if not self.options.dry_run:
            self._provenance.prepare()
        grouped = group_requirements(requirements)
        shard = self.options.shard
        if shard is not None:
            grouped = {name: reqs for name, reqs in grouped.items() if shard.owns(name)}
            log.info("shard %s: %d projects", shard, len(grouped))
        outcomes: dict[str, _ProjectOutcome] = {}
        self._catalog_pages = self._catalog_budget(grouped)
        self._project_count = len(grouped)
        self.observer.phase("reading", len(grouped))
        try:
            async with asyncio.TaskGroup() as group:
                for project, reqs in grouped.items():
                    group.create_task(self._guarded_project(project, reqs, outcomes))
        except BaseExceptionGroup as group_error:
            raise _first_error(group_error) from None
        ordered = [outcomes[name] for name in grouped if name in outcomes]
        releases = [r for o in ordered for r in o.releases]
        catalog_error = None
        if not self.options.dry_run and any(not o.unchanged and o.releases for o in ordered):
            catalog_error = await self._update_catalog(releases)
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

    async def _update_catalog(self, releases: Sequence[ReleaseResult]) -> ProjectError | None:
        """Record this run's releases in the target's catalog (see :mod:`.catalog`)."""
        additions = Catalog.from_releases(releases)
        if not additions.projects:
            return None
        try:
            await self._retry(
                "catalog", lambda: update_catalog(self.store, additions, self.options.shard)
            )
        except FATAL_ERRORS:
            raise
        except (OciPypiError, ValueError) as exc:
            log.warning("catalog: %s", exc)
            return ProjectError(CATALOG_REPOSITORY, f"catalog not updated: {exc}")
        return None

    # --- projects --------------------------------------------------------------

    async def _guarded_project(
        self, project: str, reqs: Sequence[Requirement], outcomes: dict[str, _ProjectOutcome]
    ) -> None:
        """One project, its failures recorded; only fatal errors escape."""
        try:
            await self._guarded_project_in_slot(project, reqs, outcomes)
        finally:
            self._mark_planned(project, 0, 0)  # a project that ended before its plan

    async def _guarded_project_in_slot(
        self, project: str, reqs: Sequence[Requirement], outcomes: dict[str, _ProjectOutcome]
    ) -> None:
        async with self._project_slots:
            journal = self.journal
            state = journal.project_state(project) if journal is not None else None
            if state is not None and not self.options.retry_quarantined and state.is_quarantined():
                message = f"quarantined after repeated failures (last: {state.last_error})"
                log.warning("%s: %s", project, message)
                outcomes[project] = _ProjectOutcome(
                    error=ProjectError(project, message, quarantined=True)
                )
                return
            try:
                outcome = await self._sync_project(project, reqs, state)
            except FATAL_ERRORS:
                raise
            except ProjectNotFoundError as exc:
                # A name the index does not have is no transient fault: reported
                # every run, never counted towards quarantine.
                outcomes[project] = _ProjectOutcome(
                    error=ProjectError(project, str(exc), not_found=True)
                )
                return
            except OciPypiError as exc:
                message = str(exc)
            except Exception as exc:  # one project's surprise must not stop the rest
                log.debug("%s: unexpected error", project, exc_info=True)
                message = unexpected_error(exc)
            else:
                outcomes[project] = outcome
                return
            log.warning("%s: %s", project, message)
            if journal is not None:
                journal.record_project_failure(project, message)
            outcomes[project] = _ProjectOutcome(error=ProjectError(project, message))

    async def _sync_project(
        self, project: str, reqs: Sequence[Requirement], state: ProjectState | None
    ) -> _ProjectOutcome:
        options_key = selection_key(reqs, self.options)
        known = state if not self.options.recheck else None
        validator = _validator(known, options_key)
        maybe_page = await self._retry(
            f"{project}: project page",
            lambda: self.index.get_project_page_if_changed(reqs[0].name, validator),
        )
        if maybe_page is None:
            return self._not_modified(project)
        page = maybe_page
        selection = select_files(page, reqs, self.options.selection)
        for rejection in selection.rejected:
            level = logging.WARNING if rejection.kind in UNTRUSTED_LISTINGS else logging.INFO
            log.log(level, "%s: not mirrored: %s", rejection.filename, rejection.reason)
        excluded = tuple(
            Excluded(project, r.filename, r.reason, r.kind) for r in selection.rejected
        )
        unmatched = self._unmatched(project, selection)
        self.observer.files_planned(
            len(selection.files), sum(f.file.size or 0 for f in selection.files)
        )
        if self.options.dry_run:
            await self._within_budget(project, selection.files)
            planned = tuple(
                ReleaseResult(project, version, version_tag(version), None, "planned")
                for version, _ in selection.releases
            )
            return _ProjectOutcome(
                tuple(self._planned(selection)), planned, excluded=excluded, unmatched=unmatched
            )
        fingerprint = project_fingerprint(page, options_key)
        unchanged = self._unchanged(project, known, selection, fingerprint)
        if unchanged is not None:
            return replace(unchanged, excluded=excluded, unmatched=unmatched)
        await self._within_budget(project, selection.files)
        upstream = _page_files(page, project)
        existing_tags = await self._existing_tags(project, new=state is None)
        results = await asyncio.gather(
            *(
                self._sync_release(selection, version, files, upstream, existing_tags)
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
        )
        if self.journal is not None:
            failures = [f.error for f in outcome.files if f.action == "failed"] + [
                r.error for r in outcome.releases if r.action == "failed"
            ]
            failures += [u.error for u in unmatched]
            if failures:
                self.journal.record_project_failure(project, failures[0] or "failed")
            else:
                self.journal.record_project_ok(
                    project,
                    page_digest=fingerprint,
                    etag=f"{options_key} {page.etag}" if page.etag else None,
                    last_serial=page.last_serial,
                    complete=True,
                )
        return outcome

    def _mark_planned(self, project: str, files: int, size: int) -> None:
        """Count a project as planned (once); the last one makes the run's total known."""
        if project in self._planned_projects:
            return
        self._planned_projects[project] = (files, size)
        self.observer.project_planned(project)
        if len(self._planned_projects) >= self._project_count:
            self._all_planned.set()

    async def _within_budget(self, project: str, files: Sequence[SelectedFile]) -> None:
        """Plan the project's files; with ``max_bytes``, wait for every plan, then check.

        The project's slot is given back while it waits, so the projects after
        it can be planned; no transfer starts before the total is known.
        """
        self._mark_planned(project, len(files), sum(f.file.size or 0 for f in files))
        budget = self.options.max_bytes
        if budget is None:
            return
        self._project_slots.release()
        try:
            await self._all_planned.wait()
        finally:
            await self._project_slots.acquire()
        count = sum(n for n, _ in self._planned_projects.values())
        total = sum(size for _, size in self._planned_projects.values())
        if total > budget:
            raise BudgetExceededError(
                f"this run would transfer up to {human_bytes(total)} ({count} files), more "
                f"than --max-bytes {human_bytes(budget)}; raise --max-bytes or narrow the "
                "selection (--latest, --only-binary, --target, --allow)"
            )

    def _unmatched(self, project: str, selection: ProjectSelection) -> tuple[ProjectError, ...]:
        """The requirements that select no file: failures, as pip would fail on them."""
        if project in self.options.optional:
            return ()
        errors = tuple(ProjectError(project, u.reason) for u in selection.unmatched)
        for error in errors:
            log.warning("%s: %s", project, error.error)
        return errors

    def _not_modified(self, project: str) -> _ProjectOutcome:
        """The outcome of a project whose page the index says is unchanged (304)."""
        journal = self.journal
        assert journal is not None  # a validator is only sent with a journal
        files = tuple(
            FileResult(project, f.version, f.filename, f.sha256, f.size, "skipped")
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
        if not state.complete or state.page_digest != fingerprint:
            return None
        files = tuple(self._result(selection, s, "skipped") for s in selection.files)
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
        return FileResult(
            project=str(selection.project),
            version=selected.version,
            filename=selected.file.filename,
            sha256=selected.file.sha256 or "",
            size=selected.file.size,
            action=action,
        )

    # --- releases ----------------------------------------------------------------

    def _catalog_budget(self, grouped: dict[str, list[Requirement]]) -> int:
        """How many catalog pages are worth reading instead of new projects' tag lists.

        A project the state file has never seen most likely has no
        repository yet; with many of them (a first sync), one catalog read
        saves a tag list each. None for a run of few new projects or a
        store without a catalog.
        """
        if self.options.dry_run or not hasattr(self.store, "repositories_within"):
            return 0
        known = self.journal.project_names() if self.journal is not None else set()
        new = sum(1 for project in grouped if project not in known)
        return min(CATALOG_MAX_PAGES, new // 2) if new >= CATALOG_MIN_PROJECTS else 0

    async def _listed_repositories(self) -> frozenset[str] | None:
        """The target's repositories, read once; ``None`` if not listed within the budget."""
        if self._repositories is None:
            self._repositories = asyncio.ensure_future(self._read_catalog())
        return await asyncio.shield(self._repositories)

    async def _read_catalog(self) -> frozenset[str] | None:
        within = self.store.repositories_within  # type: ignore[attr-defined]
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

    async def _existing_tags(self, project: str, *, new: bool) -> frozenset[str] | None:
        """The project's tags in one request, so new versions need no read; ``None``: unknown.

        A project ``new`` to the state file whose repository the catalog
        does not list has none (see :meth:`_catalog_budget`).
        """
        if new and self._catalog_pages:
            repositories = await self._listed_repositories()
            if repositories is not None and project not in repositories:
                return frozenset()
        try:
            tags = await self._retry(f"{project}: tags", lambda: self.store.list_tags(project))
        except FATAL_ERRORS:
            raise
        except OciPypiError as exc:
            log.info("%s: tags not listed (%s); reading each version's tag", project, exc)
            return None
        return frozenset(tags)

    async def _sync_release(
        self,
        selection: ProjectSelection,
        version: str,
        files: tuple[SelectedFile, ...],
        upstream: dict[str, tuple[DistributionFile, FileName]],
        existing_tags: frozenset[str] | None = None,
    ) -> tuple[list[FileResult], ReleaseResult]:
        repo = str(selection.project)
        tag = version_tag(version)
        try:
            existing = (
                None
                if existing_tags is not None and tag not in existing_tags
                else await self._retry(
                    f"{repo}:{tag}: current index", lambda: self.store.get_manifest(repo, tag)
                )
            )
        except FATAL_ERRORS:
            raise
        except OciPypiError as exc:
            results = [replace(self._result(selection, s, "failed"), error=str(exc)) for s in files]
            release = ReleaseResult(repo, version, tag, None, "failed", str(exc))
            self.observer.release_finished(release)
            return results, release
        old_entries: tuple[Descriptor, ...] = ()
        if existing is not None and existing.media_type == OCI_INDEX:
            try:
                _, old_entries = parse_release_index(existing.body)
            except (ValueError, KeyError, TypeError):
                log.warning("%s:%s holds an index this tool cannot read; replacing it", repo, tag)
        known = entries_by_title(old_entries)
        try:
            outcomes = await asyncio.gather(
                *(self._sync_file(repo, selected, known) for selected in files)
            )
        finally:
            for selected in files:
                self._shared_metadata.pop((repo, _advertised_metadata(selected.file) or ""), None)
        results = [result for result, _ in outcomes]
        fresh = [entry for _, entries in outcomes if entries for entry in entries]
        entries, removed = reconcile_release(old_entries, fresh, upstream, prune=self.options.prune)
        for filename in removed:
            log.warning(
                "%s:%s lists %s, which the index no longer has%s",
                repo,
                tag,
                filename,
                "; pruned" if self.options.prune else " (use --prune to take it out)",
            )
        release = await self._tag(repo, version, tag, entries, existing, removed)
        self.observer.release_finished(release)
        return results, release

    async def _tag(
        self,
        repo: str,
        version: str,
        tag: str,
        entries: tuple[Descriptor, ...],
        existing: object,
        removed: tuple[str, ...],
    ) -> ReleaseResult:
        """Tag the version's index, unless nothing changed; children are all stored by now."""
        pruned = self.options.prune and bool(removed)
        if not entries:
            error = "no file of this version could be mirrored"
            return ReleaseResult(repo, version, tag, None, "failed", error, removed, pruned)
        index = build_release_index(repo, version, entries)
        digest = index.descriptor.digest
        current = getattr(existing, "digest", None)
        if current == digest:
            self._record_release(repo, version, tag, digest)
            return ReleaseResult(repo, version, tag, digest, "unchanged", None, removed, pruned)
        try:
            stored = await self._retry(
                f"{repo}:{tag}: tag",
                lambda: self.store.put_manifest(repo, tag, OCI_INDEX, index.data),
            )
        except FATAL_ERRORS:
            raise
        except OciPypiError as exc:
            log.warning("%s:%s: %s", repo, tag, exc)
            return ReleaseResult(repo, version, tag, None, "failed", str(exc), removed, pruned)
        self._record_release(repo, version, tag, stored)
        return ReleaseResult(repo, version, tag, stored, "pushed", None, removed, pruned)

    def _record_release(self, repo: str, version: str, tag: str, digest: str) -> None:
        if self.journal is not None:
            self.journal.record_release(repo, version, tag, digest)

    # --- files -------------------------------------------------------------------

    async def _sync_file(
        self, repo: str, selected: SelectedFile, known: dict[str, list[Descriptor]]
    ) -> tuple[FileResult, tuple[Descriptor, ...] | None]:
        file = selected.file
        sha256 = file.sha256 or ""
        try:
            # Before any byte is written: a file whose provenance fails is not mirrored.
            checked = await self._provenance.check(repo, file)
        except FATAL_ERRORS:
            raise
        except OciPypiError as exc:
            return self._file_failed(repo, selected, exc)
        reused = reusable_entries(known, file, selected.name)
        if reused is not None:
            size = entry_file_size(reused[0], file)
            subject = Descriptor(OCI_MANIFEST, reused[0].digest, reused[0].size)
            try:
                entries, provenance = await self._store_provenance(
                    repo, file, subject, checked, reused
                )
            except FATAL_ERRORS:
                raise
            except OciPypiError as exc:
                return self._file_failed(repo, selected, exc)
            self._record_done(repo, selected, size, reused[0].digest)
            result = FileResult(
                repo, selected.version, file.filename, sha256, size, "skipped", None, provenance
            )
            self.observer.file_finished(result)
            return result, entries
        if self.journal is not None:
            self.journal.record_file_pending(
                repo, selected.version, file.filename, sha256, file.size
            )
        try:
            artifact, uploaded, size = await self._transfer(repo, selected)
            entries, provenance = await self._store_provenance(
                repo, file, artifact.manifest.descriptor, checked, artifact.entries
            )
        except FATAL_ERRORS:
            raise
        except OciPypiError as exc:
            return self._file_failed(repo, selected, exc)
        self._record_done(repo, selected, size, artifact.manifest.descriptor.digest)
        action: FileAction = "pushed" if uploaded else "skipped"
        result = FileResult(
            repo, selected.version, file.filename, sha256, size, action, None, provenance
        )
        self.observer.file_finished(result)
        return result, entries

    async def _store_provenance(
        self,
        repo: str,
        file: DistributionFile,
        subject: Descriptor,
        checked: CheckedProvenance | None,
        entries: tuple[Descriptor, ...],
    ) -> tuple[tuple[Descriptor, ...], FileProvenance | None]:
        """The file's entries, annotated once its provenance is stored as referrers."""
        if checked is None:
            return entries, FileProvenance("none") if self._provenance.active else None
        return await self._provenance.store_referrers(
            repo, file.filename, subject, checked, entries
        )

    def _file_failed(
        self, repo: str, selected: SelectedFile, exc: OciPypiError
    ) -> tuple[FileResult, None]:
        file = selected.file
        sha256 = file.sha256 or ""
        log.warning("%s: %s", file.filename, exc)
        if self.journal is not None:
            self.journal.record_file_failed(
                repo, selected.version, file.filename, sha256, file.size, str(exc)
            )
        result = FileResult(
            repo, selected.version, file.filename, sha256, file.size, "failed", str(exc)
        )
        self.observer.file_finished(result)
        return result, None

    def _record_done(self, repo: str, selected: SelectedFile, size: int, manifest: str) -> None:
        journal = self.journal
        if journal is None:
            return
        file = selected.file
        state = journal.file_state(repo, file.filename)
        if (
            state is not None
            and state.status == "done"
            and state.sha256 == file.sha256
            and state.manifest_digest == manifest
        ):
            return
        journal.record_file_done(
            repo, selected.version, file.filename, file.sha256 or "", size, manifest
        )

    async def _transfer(self, repo: str, selected: SelectedFile) -> tuple[FileArtifact, bool, int]:
        """Blobs first (file, metadata, config), then the manifest; each step retried.

        ``--jobs`` bounds the file transfers (the mount or the streamed
        upload); the small requests after them (metadata, config, manifest)
        do not hold a slot, so a slot is not kept idle while they wait.
        """
        file = selected.file
        sha256 = file.sha256
        if sha256 is None:  # selection keeps only files with a sha256
            raise IndexError_(f"{file.filename} has no sha256")
        digest = "sha256:" + sha256
        uploaded = False
        size = file.size
        what = f"{repo}: {file.filename}"
        stored: int | None = None
        async with self._file_slots:
            if not await self._mount(repo, digest):
                # Identical bytes published under two filenames are uploaded once.
                first, stored = await self._once(
                    (repo, digest), lambda: self._upload(repo, digest, selected)
                )
                uploaded = first and stored is not None
        if stored is not None:
            size = stored
        elif size is None:
            size = await self._retry(f"{what}: size", lambda: self.index.get_file_size(file))
        if self.journal is not None:
            self.journal.record_blob(repo, digest)
        metadata_raw = await self._retry(
            f"{what}: core metadata", lambda: self._core_metadata(repo, selected)
        )
        artifact = build_file_artifact(file, repo, size, metadata_raw)
        config = empty_config()
        config_held = self._holds_config(repo)
        if not config_held:
            await self._ensure_small_blob(repo, config.descriptor.digest, config.data)
        if metadata_raw is not None:
            await self._ensure_small_blob(repo, artifact.layers[1].digest, metadata_raw)
        manifest = artifact.manifest

        async def put_manifest() -> str:
            # A PUT by digest is idempotent and costs what a HEAD would.
            return await self.store.put_manifest(
                repo, manifest.descriptor.digest, OCI_MANIFEST, manifest.data
            )

        try:
            await self._retry(f"{what}: manifest", put_manifest)
        except RegistryError as exc:
            if not config_held or exc.code != "MANIFEST_BLOB_UNKNOWN":
                raise
            # The state file said the repository holds the config; the registry
            # does not (deleted behind the state file's back): store it, send again.
            log.info("%s: the empty config is missing; storing it again", repo)
            await self._ensure_small_blob(repo, config.descriptor.digest, config.data)
            await self._retry(f"{what}: manifest", put_manifest)
        return artifact, uploaded, size

    def _holds_config(self, repo: str) -> bool:
        """Whether ``repo`` holds the empty config without asking: the state file has a
        release this tool wrote there, whose manifests reference it.

        A new release of a known project then costs no config request. The
        state file is trusted here as it is for the files it records done.
        """
        held = self._config_held.get(repo)
        if held is None:
            held = self.journal is not None and bool(self.journal.release_digests(repo))
            self._config_held[repo] = held
        return held

    async def _mount(self, repo: str, digest: str) -> bool:
        """Mount the blob from another repository of the target where the journal saw it."""
        journal = self.journal
        mount = getattr(self.store, "mount_blob", None)
        if journal is None or mount is None:
            return False
        for source in journal.blob_repositories(digest):
            if source == repo:
                continue
            try:
                mounted = await mount(repo, digest, source)
            except FATAL_ERRORS:
                raise
            except OciPypiError as exc:
                log.info("%s: mount of %s from %s failed: %s", repo, digest, source, exc)
                continue
            if mounted:
                log.info("%s: mounted %s from %s", repo, digest, source)
                return True
        return False

    async def _upload(self, repo: str, digest: str, selected: SelectedFile) -> int | None:
        """Stream the file from the index into the store; each attempt starts over.

        Returns the bytes stored, or ``None`` when the store already had the
        blob (then nothing was downloaded: the store answers before reading).
        """
        file = selected.file
        observer = self.observer
        mismatches = 0

        def transient(exc: BaseException) -> bool:
            # A digest mismatch at the advertised size is the index's bytes, not
            # a cut connection: one more download settles it, more would not.
            nonlocal mismatches
            if isinstance(exc, DigestMismatchError):
                mismatches += 1
                return mismatches < 2
            return is_transient(exc)

        advertised = _advertised_metadata(file)
        keep = (
            selected.name.is_wheel
            and file.size is not None
            and file.size <= SMALL_WHEEL_BYTES
            and advertised is not None
        )
        # The first small wheel of a release to start promises its METADATA to
        # the release's files that advertise the same hash (its sdist, say).
        promise: asyncio.Future[bytes | None] | None = None
        if keep and advertised is not None:
            first, shared = self._metadata_share(repo, advertised)
            promise = shared if first else None

        async def attempt() -> int | None:
            counter = _ByteCounter(observer, file.filename, file.size, keep=keep)
            # Closed here, in this task, however the store stopped reading them:
            # left to the garbage collector, a download's close fails noisily.
            opened: list[AsyncGenerator[bytes, None]] = []

            def open_file() -> AsyncIterator[bytes]:
                counter.restart()
                download = self._file_chunks(file)
                counted = counter.wrap(download)
                opened.extend((counted, download))
                return counted

            try:
                stored = await self.store.put_blob(
                    repo, digest, file.size, open_file(), reopen=open_file
                )
            except BaseException:
                counter.restart()
                raise
            finally:
                for generator in opened:
                    await generator.aclose()
            if stored and counter.kept is not None:
                inside = await asyncio.to_thread(_wheel_metadata, counter.kept, file.filename)
                # kept only when it is the advertised .metadata (PEP 658)
                if inside is not None and hashlib.sha256(inside).hexdigest() == advertised:
                    self._wheel_metadata[(repo, digest)] = inside
            return counter.count if stored else None

        try:
            return await with_retries(
                self.options.retry, f"{repo}: {file.filename}: upload", attempt, transient=transient
            )
        finally:
            if promise is not None:
                promise.set_result(self._wheel_metadata.get((repo, digest)))

    async def _file_chunks(self, file: DistributionFile) -> AsyncGenerator[bytes, None]:
        """The file's bytes; a connection lost mid-file fails this attempt, not the run."""
        async with self.index.stream_file(file) as chunks:
            try:
                async for chunk in chunks:
                    yield chunk
            except IndexUnreachableError as exc:
                raise IndexError_(f"download of {file.filename} interrupted: {exc}") from exc

    async def _core_metadata(self, repo: str, selected: SelectedFile) -> bytes | None:
        """The file's core metadata: as advertised (hash-checked), or probed for wheels.

        A probed ``.metadata`` has no advertised hash; it is kept only when it
        names the wheel's own project and version.
        """
        file = selected.file
        advertised = _advertised_metadata(file)
        inside = self._wheel_metadata.pop((repo, f"sha256:{file.sha256}"), None)
        if inside is not None:
            # PEP 658: the .metadata file is the wheel's METADATA; the one just
            # streamed has the advertised hash (checked as it was kept).
            return inside
        if advertised is not None:
            # Bytes with the advertised hash are the advertised bytes, whichever
            # file of the release brought them.
            first, shared = self._metadata_share(repo, advertised)
            if not first:
                raw = await asyncio.shield(shared)
                if raw is not None:
                    return raw
            else:
                raw = None
                try:
                    fetched = await self.index.get_core_metadata(file)
                    raw = fetched.raw if fetched is not None else None
                finally:
                    shared.set_result(raw)  # None: the others fetch their own
                return raw
        probe = self.options.probe_metadata and selected.name.is_wheel
        metadata = await self.index.get_core_metadata(file, probe=probe)
        if metadata is None:
            return None
        if file.core_metadata is None and not _metadata_matches(metadata, selected):
            log.warning(
                "%s: ignoring its .metadata, which names %s %s",
                file.filename,
                metadata.name,
                metadata.version,
            )
            return None
        return metadata.raw

    def _metadata_share(
        self, repo: str, advertised: str
    ) -> tuple[bool, asyncio.Future[bytes | None]]:
        """The release's shared core metadata for a hash; True if the caller is to bring it."""
        key = (repo, advertised)
        shared = self._shared_metadata.get(key)
        if shared is not None:
            return False, shared
        shared = self._shared_metadata[key] = asyncio.get_running_loop().create_future()
        return True, shared

    async def _ensure_small_blob(self, repo: str, digest: str, data: bytes) -> None:
        """Store a small blob once per repository (the empty config, shared metadata)."""
        await self._once((repo, digest), lambda: self._put_small_blob(repo, digest, data))

    async def _once(
        self, key: tuple[str, str], write: Callable[[], Awaitable[T]]
    ) -> tuple[bool, T]:
        """Run ``write`` once per key; callers meanwhile (or later) share its result.

        Concurrent uploads of one digest make registries answer 500 or
        DIGEST_INVALID, and platform wheels of a release share their core
        metadata, every manifest the empty config. A failed write is tried
        again by the next caller. Returns whether this caller ran it.
        """
        running = self._blob_writes.get(key)
        if running is not None and not (running.done() and running.exception() is not None):
            shared: T = await asyncio.shield(running)
            return False, shared
        future = asyncio.ensure_future(write())
        self._blob_writes[key] = future
        return True, await asyncio.shield(future)

    async def _put_small_blob(self, repo: str, digest: str, data: bytes) -> None:
        # The store says itself when it already has the blob (no separate HEAD).
        await self._retry(
            f"{repo}: blob {digest}: upload", lambda: self.store.put_blob_bytes(repo, digest, data)
        )

    async def _retry(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        return await with_retries(self.options.retry, what, step)


class _ByteCounter:
    """Counts the bytes that pass, telling the observer; a restart takes them back."""

    def __init__(
        self, observer: SyncObserver, filename: str, size: int | None, *, keep: bool = False
    ) -> None:
        self.count = 0
        self._observer = observer
        self._filename = filename
        self._size = size
        self._keep = keep
        self.kept: bytearray | None = bytearray() if keep else None

    def restart(self) -> None:
        if self.count:
            self._observer.bytes_transferred(self._filename, -self.count)
        self.count = 0
        if self._keep:
            self.kept = bytearray()

    async def wrap(self, chunks: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
        self._observer.transfer_started(self._filename, self._size)
        async for chunk in chunks:
            if self.kept is not None:
                self.kept += chunk
            self.count += len(chunk)
            self._observer.bytes_transferred(self._filename, len(chunk))
            yield chunk


def _advertised_metadata(file: DistributionFile) -> str | None:
    """The sha256 the page gives for the file's core metadata, if it gives one."""
    return file.core_metadata.sha256 if file.core_metadata is not None else None


def _wheel_metadata(data: bytes | bytearray, filename: str) -> bytes | None:
    """The ``METADATA`` of a wheel held in memory, if it has a readable one within the bounds.

    Run in a thread: a small wheel may still be a zip bomb, which the shared
    reader refuses without inflating it whole. Without a usable member the
    ``.metadata`` file is fetched instead.
    """
    try:
        return read_metadata_member(io.BytesIO(data), filename)
    except IndexError_ as exc:
        log.debug("%s: METADATA not read from the wheel: %s", filename, exc)
        return None


def _validator(state: ProjectState | None, options_key: str) -> str | None:
    """The ETag to send, when the last complete sync of this selection stored one.

    The journal keeps it prefixed with the selection's key, so a 304 is only
    trusted for the requirements and options it was recorded with.
    """
    if state is None or not state.complete or not state.etag:
        return None
    key, _, etag = state.etag.partition(" ")
    return etag if key == options_key and etag else None


def _metadata_matches(metadata: CoreMetadata, selected: SelectedFile) -> bool:
    if metadata.name is None or metadata.version is None:
        return False
    return canonicalize_name(metadata.name) == selected.name.project and normalize_version(
        metadata.version
    ) == normalize_version(selected.name.version)


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


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from a failed task group: a fatal one if any."""
    leaves: list[BaseException] = []

    def walk(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                walk(inner)
        else:
            leaves.append(error)

    walk(group)
    for leaf in leaves:
        if isinstance(leaf, FATAL_ERRORS):
            return leaf
    return leaves[0]


def selection_key(requirements: Sequence[Requirement], options: SyncOptions) -> str:
    """A digest of what decides the selection and the bytes written, the page aside."""
    document = {
        "format": FORMAT_VERSION,
        "requirements": sorted(str(r) for r in requirements),
        **options.selection.key(),
        **options.provenance.key(),
        "probe_metadata": options.probe_metadata,
        "prune": options.prune,
    }
    return "sha256:" + hashlib.sha256(canonical_json(document)).hexdigest()


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
    document = {"selection": options_key, "files": files}
    return "sha256:" + hashlib.sha256(canonical_json(document)).hexdigest()


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
) -> SyncReport:
    """Mirror what ``requirements`` select from ``index`` into ``store``."""
    return await Syncer(index, store, options, journal=journal, observer=observer).run(requirements)
