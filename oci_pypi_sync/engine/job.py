"""A whole sync job from settings: inputs read, closure resolved, target opened, sync run.

This is what ``oci-pypi sync`` does between parsing its flags and rendering
the report, kept here so that a program can run the same job from a
:class:`~oci_pypi_sync.config.Settings` without the command line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

from oci_pypi_sync.config import Settings
from oci_pypi_sync.engine.results import (
    DiscardingSink,
    ProjectError,
    ReportSink,
    SyncObserver,
    SyncReport,
)
from oci_pypi_sync.engine.retry import RetryPolicy
from oci_pypi_sync.engine.run import Syncer, SyncOptions, sync
from oci_pypi_sync.index.location import IndexLocation
from oci_pypi_sync.plan.inputs import InputFileError, read_pylock, read_requirements_file
from oci_pypi_sync.plan.listed import ListedProjects
from oci_pypi_sync.plan.names import close_names
from oci_pypi_sync.plan.select import SelectionOptions, parse_requirements, project_allowed
from oci_pypi_sync.plan.shard import parse_shard
from oci_pypi_sync.provenance.policy import ProvenanceOptions, ProvenancePolicy
from oci_pypi_sync.provenance.publishers import parse_pins

if TYPE_CHECKING:
    from oci_pypi_sync.index.cache import PagesRead
    from oci_pypi_sync.index.client import IndexClient
    from oci_pypi_sync.state.journal import Journal
    from oci_pypi_sync.stores.protocols import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JobFlags:
    """What a run does beyond the declarative settings (one-off choices of the caller)."""

    dry_run: bool = False
    all_projects: bool = False
    recheck: bool = False
    retry_quarantined: bool = False
    probe_metadata: bool = True
    accept_replaced: bool = False


@dataclass(frozen=True, slots=True)
class JobInputs:
    """The requirements to sync, the hashes that restrict their files, the index they name.

    ``index`` is the ``--index-url`` of the requirements files, if any names
    one (see :func:`~oci_pypi_sync.index.location.resolve_index_url`).
    """

    requirements: tuple[Requirement, ...]
    hashes: dict[NormalizedName, frozenset[str]]
    index: IndexLocation | None = None


def read_inputs(settings: Settings) -> JobInputs:
    """Requirements from the settings, the requirements files and the lock file (no network)."""
    envs = settings.environments()
    requirements = list(parse_requirements(settings.requirements))
    hashes: dict[NormalizedName, frozenset[str]] = {}
    index: IndexLocation | None = None

    def add_hashes(more: dict[NormalizedName, frozenset[str]]) -> None:
        for name, values in more.items():
            hashes[name] = hashes.get(name, frozenset()) | values

    for path in settings.requirement_files:
        found = read_requirements_file(path)
        if found.index_url is not None and found.index_url_source is not None:
            named = IndexLocation(found.index_url, found.index_url_source)
            if index is not None and index.url.rstrip("/") != named.url.rstrip("/"):
                raise InputFileError(
                    f"{named.source}: names another index than {index.source}; "
                    "a sync reads one index"
                )
            index = index or named
        requirements.extend(found.for_environments(envs))
        add_hashes(dict(found.hashes))
    if settings.pylock is not None:
        lock = read_pylock(settings.pylock)
        for warning in lock.warnings:
            log.warning("%s", warning)
        requirements.extend(lock.requirements(envs))
        add_hashes(dict(lock.hashes(envs)))
    return JobInputs(tuple(requirements), hashes, index)


def sync_options(settings: Settings, flags: JobFlags, selection: SelectionOptions) -> SyncOptions:
    provenance = ProvenanceOptions(
        policy=cast(ProvenancePolicy, settings.provenance),
        trusted=parse_pins(settings.trusted_publisher),
        trusted_root=settings.trusted_root,
    )
    return SyncOptions(
        selection=selection,
        dry_run=flags.dry_run,
        jobs=settings.jobs,
        probe_metadata=flags.probe_metadata,
        retry=RetryPolicy(attempts=settings.retries + 1),
        prune=settings.prune,
        shard=parse_shard(settings.shard) if settings.shard else None,
        recheck=flags.recheck,
        retry_quarantined=flags.retry_quarantined,
        max_bytes=settings.max_bytes,
        provenance=provenance,
        accept_replaced=flags.accept_replaced,
    )


async def run_job(
    settings: Settings,
    flags: JobFlags,
    index: IndexClient,
    store: Store,
    *,
    journal: Journal | None = None,
    observer: SyncObserver | None = None,
    inputs: JobInputs | None = None,
    sink: ReportSink | None = None,
) -> SyncReport:
    """Read the inputs, take every project when asked, resolve the closure when asked, sync.

    ``inputs`` are the ones :func:`read_inputs` gave, when the caller has
    read them already (to choose the index they name). A run over the whole
    index (``--all``) streams: its records go to ``sink`` as projects finish
    (see :meth:`~oci_pypi_sync.engine.run.Syncer.stream`) and its report keeps
    only what failed, unless it resolves dependencies or has a byte budget,
    both of which need every project at once.
    """
    started = datetime.now(UTC)
    clock = time.monotonic()
    if inputs is None:
        inputs = read_inputs(settings)
    selection = settings.selection_options(hashes=inputs.hashes)
    options = sync_options(settings, flags, selection)
    if flags.all_projects and streams(settings):
        report = await _stream_all(
            inputs, index, store, options, journal=journal, observer=observer, sink=sink
        )
        return replace(
            report,
            started=started.isoformat(timespec="seconds"),
            seconds=round(time.monotonic() - clock, 3),
        )
    requirements = list(inputs.requirements)
    names: list[str] = []
    serials = None
    if flags.all_projects:
        index_list = await index.get_project_index()
        names = list(index_list.names)
        if options.shard is not None:
            names = [name for name in names if options.shard.owns(name)]
        requirements.extend(Requirement(str(canonicalize_name(name))) for name in names)
        serials = index_list.serials
        log.info(
            "%d projects from the index%s",
            len(names),
            ", with serials" if serials is not None else "",
        )
        # A listed project with nothing for the targets is no failure; a named one is.
        named = {canonicalize_name(r.name) for r in inputs.requirements}
        listed = {str(canonicalize_name(name)) for name in names}
        # Projects streamed, not all planned before the first transfer.
        options = replace(options, optional=frozenset(listed - named), plan_first=False)
    requirements = [r for r in requirements if project_allowed(r.name, selection)]
    if not requirements:
        from oci_pypi_sync.errors import UsageError

        raise UsageError(
            "nothing to sync: give requirements, -r FILE, --pylock FILE, --config FILE or --all"
        )
    unresolved: list[ProjectError] = []
    pages: PagesRead | None = None
    if settings.with_deps:
        if observer is not None:
            observer.phase("resolving", len(requirements))
        cache = journal if not flags.dry_run else None  # a dry run writes nothing
        requirements, unresolved, pages = await _closure(requirements, index, selection, cache)
    report = await sync(
        requirements,
        index,
        store,
        options,
        journal=journal,
        observer=observer,
        pages=pages,
        serials=serials,
    )
    known = names or (sorted(journal.project_names()) if journal is not None else [])
    errors = tuple(_with_close_names(e, known) for e in report.project_errors)
    return replace(
        report,
        project_errors=errors + tuple(unresolved),
        started=started.isoformat(timespec="seconds"),
        seconds=round(time.monotonic() - clock, 3),
    )


def streams(settings: Settings) -> bool:
    """Whether a run over the whole index streams (see :func:`run_job`)."""
    return not settings.with_deps and settings.max_bytes is None


async def _stream_all(
    inputs: JobInputs,
    index: IndexClient,
    store: Store,
    options: SyncOptions,
    *,
    journal: Journal | None,
    observer: SyncObserver | None,
    sink: ReportSink | None,
) -> SyncReport:
    """Every project of the index (this shard's, allowed), with the named ones, streamed."""
    listing = await index.get_project_index()
    selection = options.selection
    allowed = None
    if selection.allow or selection.deny:

        def allowed(name: str) -> bool:
            return project_allowed(name, selection)

    projects = ListedProjects(listing, inputs.requirements, shard=options.shard, allowed=allowed)
    log.info(
        "%d projects from the index%s",
        len(projects),
        ", with serials" if listing.gives_serials else "",
    )
    if not len(projects):
        from oci_pypi_sync.errors import UsageError

        raise UsageError(
            "nothing to sync: give requirements, -r FILE, --pylock FILE, --config FILE or --all"
        )
    syncer = Syncer(index, store, options, journal=journal, observer=observer)
    report = await syncer.stream(projects, sink or DiscardingSink())
    if any(error.not_found for error in report.project_errors):
        known = [str(canonicalize_name(name)) for name, _ in listing]
        errors = tuple(_with_close_names(e, known) for e in report.project_errors)
        report = replace(report, project_errors=errors)
    return report


def _with_close_names(error: ProjectError, known: Sequence[str]) -> ProjectError:
    """A project the index lacks, with the close names of the list at hand, if any."""
    if not error.not_found:
        return error
    close = close_names(error.project, known)
    if not close:
        return error
    return replace(error, error=f"{error.error}; close names: {', '.join(close)}")


async def _closure(
    requirements: Sequence[Requirement],
    index: IndexClient,
    selection: SelectionOptions,
    journal: Journal | None,
) -> tuple[list[Requirement], list[ProjectError], PagesRead]:
    """The requirements pinned as pip would install them, per target, what failed, and
    the pages read (the sync uses them rather than reading each page again).

    The state file keeps the pages, metadata and closure read, so the next
    run only revalidates the pages, reads no metadata it has seen, and
    resolves nothing when no page changed.
    """
    from oci_pypi_sync.plan.resolve import resolve_closure

    closure = await resolve_closure(
        requirements,
        index,
        selection.environments,
        pre=selection.pre,
        only_binary=selection.only_binary,
        cache=journal,
    )
    errors = [
        ProjectError(
            str(canonicalize_name(_requirement_name(u.requirement))),
            f"not resolved for {u.environment}: {u.reason}",
        )
        for u in closure.unresolved
    ]
    # Reported once, with the other project errors, at the end of the run.
    pinned = closure.requirements()
    log.info("dependency closure: %d releases", len(pinned))
    return list(pinned), errors, closure.pages


def _requirement_name(text: str) -> str:
    try:
        return Requirement(text).name
    except Exception:  # a reason may quote something that is not a requirement
        return text.split()[0] if text.split() else text
