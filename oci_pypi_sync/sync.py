"""The sync: read the index, select files, write them to a store in a safe order.

Per project: fetch its page, select files, and per version push every
file's blobs and manifest before the version's index is tagged, so a tag
never points at missing children. Per file the store is asked first (a
blob already there is not downloaded again); bytes stream from the index
into the store, which verifies the sha256 before the blob is visible.

Failures of one file or one project are recorded in the report and do not
stop the others; a target that cannot be reached or refuses our
credentials stops the whole run, since nothing else could succeed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from oci_pypi_sync.errors import (
    AuthenticationError,
    IndexError_,
    IndexUnreachableError,
    OciPypiError,
    RegistryUnreachableError,
)
from oci_pypi_sync.oci.format import (
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    FileArtifact,
    build_file_artifact,
    build_release_index,
    empty_config,
    merge_entries,
    normalize_version,
    parse_release_index,
    repository_name,
    version_tag,
)
from oci_pypi_sync.select import ProjectSelection, SelectedFile, SelectionOptions, select_files

if TYPE_CHECKING:
    from oci_pypi_sync.index.client import IndexClient
    from oci_pypi_sync.index.records import CoreMetadata, DistributionFile
    from oci_pypi_sync.oci.store import Store

log = logging.getLogger(__name__)

Action = Literal["pushed", "skipped", "failed", "planned"]
FATAL_ERRORS = (RegistryUnreachableError, AuthenticationError, IndexUnreachableError)


@dataclass(frozen=True, slots=True)
class FileResult:
    """What happened to one file."""

    project: str
    version: str
    filename: str
    sha256: str
    size: int | None
    action: Action
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    """What happened to one version's index."""

    project: str
    version: str
    tag: str
    digest: str | None
    action: Literal["pushed", "unchanged", "failed", "planned"]
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ProjectError:
    """A project that could not be synced at all (not found, page unreadable)."""

    project: str
    error: str


@dataclass(frozen=True, slots=True)
class SyncReport:
    """The outcome of a sync: per file, per release, and per failed project."""

    target: str
    files: tuple[FileResult, ...]
    releases: tuple[ReleaseResult, ...]
    project_errors: tuple[ProjectError, ...]
    dry_run: bool = False

    @property
    def failed(self) -> bool:
        return bool(
            self.project_errors
            or any(f.action == "failed" for f in self.files)
            or any(r.action == "failed" for r in self.releases)
        )

    def count(self, action: str) -> int:
        return sum(1 for f in self.files if f.action == action)

    @property
    def bytes_pushed(self) -> int:
        return sum(f.size or 0 for f in self.files if f.action == "pushed")


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """How to sync, beyond what to select."""

    selection: SelectionOptions = field(default_factory=SelectionOptions)
    dry_run: bool = False
    jobs: int = 8
    probe_metadata: bool = True


ProgressCallback = Callable[[FileResult], None]


class Syncer:
    """Runs one sync of requirements from an index into a store."""

    def __init__(
        self,
        index: IndexClient,
        store: Store,
        options: SyncOptions = SyncOptions(),
        *,
        on_file: ProgressCallback | None = None,
    ) -> None:
        self.index = index
        self.store = store
        self.options = options
        self._on_file = on_file
        self._slots = asyncio.Semaphore(max(1, options.jobs))
        self._small_blobs: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def run(self, requirements: Sequence[Requirement]) -> SyncReport:
        files: list[FileResult] = []
        releases: list[ReleaseResult] = []
        errors: list[ProjectError] = []
        grouped = group_requirements(requirements)
        outcomes = await asyncio.gather(
            *(self._sync_project(reqs) for reqs in grouped.values()), return_exceptions=True
        )
        for project, outcome in zip(grouped, outcomes, strict=True):
            if isinstance(outcome, FATAL_ERRORS):
                raise outcome
            if isinstance(outcome, OciPypiError):
                log.warning("%s: %s", project, outcome)
                errors.append(ProjectError(project, str(outcome)))
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                files.extend(outcome[0])
                releases.extend(outcome[1])
        return SyncReport(
            target=self.store.display_name,
            files=tuple(files),
            releases=tuple(releases),
            project_errors=tuple(errors),
            dry_run=self.options.dry_run,
        )

    async def _sync_project(
        self, requirements: Sequence[Requirement]
    ) -> tuple[list[FileResult], list[ReleaseResult]]:
        page = await self.index.get_project_page(requirements[0].name)
        selection = select_files(page, requirements, self.options.selection)
        for rejection in selection.rejected:
            log.info("%s: not mirrored: %s", rejection.filename, rejection.reason)
        if self.options.dry_run:
            return self._plan(selection), []
        results = await asyncio.gather(
            *(
                self._sync_release(selection, version, files)
                for version, files in selection.releases
            )
        )
        file_results = [f for release_files, _ in results for f in release_files]
        return file_results, [release for _, release in results]

    def _plan(self, selection: ProjectSelection) -> list[FileResult]:
        planned = [_result(selection, selected, "planned") for selected in selection.files]
        for result in planned:
            self._notify(result)
        return planned

    async def _sync_release(
        self, selection: ProjectSelection, version: str, files: tuple[SelectedFile, ...]
    ) -> tuple[list[FileResult], ReleaseResult]:
        repo = str(selection.project)
        tag = version_tag(version)
        outcomes = await asyncio.gather(*(self._sync_file(repo, selected) for selected in files))
        results = [result for result, _ in outcomes]
        artifacts = [artifact for _, artifact in outcomes if artifact is not None]
        if not artifacts:
            error = "no file of this version could be mirrored"
            return results, ReleaseResult(repo, version, tag, None, "failed", error)
        try:
            digest, changed = await self._tag_release(repo, version, tag, artifacts)
        except FATAL_ERRORS:
            raise
        except OciPypiError as exc:
            log.warning("%s:%s: %s", repo, tag, exc)
            return results, ReleaseResult(repo, version, tag, None, "failed", str(exc))
        action: Literal["pushed", "unchanged"] = "pushed" if changed else "unchanged"
        return results, ReleaseResult(repo, version, tag, digest, action)

    async def _tag_release(
        self, repo: str, version: str, tag: str, artifacts: list[FileArtifact]
    ) -> tuple[str, bool]:
        """Merge the files into the version's index and tag it, unless nothing changed."""
        existing = await self.store.get_manifest(repo, tag)
        old_entries: tuple[Descriptor, ...] = ()
        if existing is not None and existing.media_type == OCI_INDEX:
            try:
                _, old_entries = parse_release_index(existing.body)
            except (ValueError, KeyError, TypeError):
                log.warning("%s:%s holds an index this tool cannot read; replacing it", repo, tag)
        fresh = [entry for artifact in artifacts for entry in artifact.entries]
        entries = merge_entries(old_entries, fresh)
        index = build_release_index(repo, version, entries)
        if existing is not None and existing.digest == index.descriptor.digest:
            return index.descriptor.digest, False
        digest = await self.store.put_manifest(repo, tag, OCI_INDEX, index.data)
        log.info("tagged %s:%s (%s)", repo, tag, digest)
        return digest, True

    async def _sync_file(
        self, repo: str, selected: SelectedFile
    ) -> tuple[FileResult, FileArtifact | None]:
        async with self._slots:
            try:
                artifact, uploaded, size = await self._transfer(repo, selected)
            except FATAL_ERRORS:
                raise
            except OciPypiError as exc:
                log.warning("%s: %s", selected.file.filename, exc)
                result = FileResult(
                    project=repo,
                    version=selected.version,
                    filename=selected.file.filename,
                    sha256=selected.file.sha256 or "",
                    size=selected.file.size,
                    action="failed",
                    error=str(exc),
                )
                self._notify(result)
                return result, None
        action: Action = "pushed" if uploaded else "skipped"
        result = FileResult(
            project=repo,
            version=selected.version,
            filename=selected.file.filename,
            sha256=selected.file.sha256 or "",
            size=size,
            action=action,
        )
        self._notify(result)
        return result, artifact

    async def _transfer(self, repo: str, selected: SelectedFile) -> tuple[FileArtifact, bool, int]:
        """Blobs first (file, metadata, config), then the manifest."""
        file = selected.file
        sha256 = file.sha256
        assert sha256 is not None  # selection keeps only files with a sha256
        digest = "sha256:" + sha256
        uploaded = False
        size = file.size
        if await self.store.has_blob(repo, digest):
            if size is None:
                size = await self.index.get_file_size(file)
        else:
            counter = _ByteCounter()

            def open_file() -> AsyncIterator[bytes]:
                counter.count = 0
                return counter.wrap(self._file_chunks(file))

            await self.store.put_blob(repo, digest, size, open_file(), reopen=open_file)
            size = counter.count
            uploaded = True
        metadata_raw = await self._core_metadata(selected)
        artifact = build_file_artifact(file, repo, size, metadata_raw)
        config = empty_config()
        await self._ensure_small_blob(repo, config.descriptor.digest, config.data)
        if metadata_raw is not None:
            await self._ensure_small_blob(repo, artifact.layers[1].digest, metadata_raw)
        manifest = artifact.manifest
        if not await self.store.has_manifest(repo, manifest.descriptor.digest):
            await self.store.put_manifest(
                repo, manifest.descriptor.digest, OCI_MANIFEST, manifest.data
            )
        return artifact, uploaded, size

    async def _file_chunks(self, file: DistributionFile) -> AsyncIterator[bytes]:
        """The file's bytes; a connection lost mid-file fails this file, not the run."""
        async with self.index.stream_file(file) as chunks:
            try:
                async for chunk in chunks:
                    yield chunk
            except IndexUnreachableError as exc:
                raise IndexError_(f"download of {file.filename} interrupted: {exc}") from exc

    async def _core_metadata(self, selected: SelectedFile) -> bytes | None:
        """The file's core metadata: as advertised (hash-checked), or probed for wheels.

        A probed ``.metadata`` has no advertised hash; it is kept only when it
        names the wheel's own project and version.
        """
        file = selected.file
        probe = self.options.probe_metadata and selected.name.is_wheel
        metadata = await self.index.get_core_metadata(file, probe=probe)
        if metadata is None:
            return None
        if file.core_metadata is None and not _metadata_matches(metadata, selected):
            log.warning(
                "%s: ignoring %s.metadata: it names %s %s",
                file.filename,
                file.filename,
                metadata.name,
                metadata.version,
            )
            return None
        return metadata.raw

    async def _ensure_small_blob(self, repo: str, digest: str, data: bytes) -> None:
        """Store a small blob once per repository, however many files ask at once.

        Platform wheels of one release often share their core metadata, and
        every manifest shares the empty config: concurrent uploads of one
        digest make registries answer 500 or DIGEST_INVALID, so they are
        single-flighted here.
        """
        key = (repo, digest)
        task = self._small_blobs.get(key)
        if task is None or (task.done() and task.exception() is not None):
            task = asyncio.ensure_future(self._put_small_blob(repo, digest, data))
            self._small_blobs[key] = task
        await asyncio.shield(task)

    async def _put_small_blob(self, repo: str, digest: str, data: bytes) -> None:
        if not await self.store.has_blob(repo, digest):
            await self.store.put_blob_bytes(repo, digest, data)

    def _notify(self, result: FileResult) -> None:
        if self._on_file is not None:
            self._on_file(result)


def _metadata_matches(metadata: CoreMetadata, selected: SelectedFile) -> bool:
    if metadata.name is None or metadata.version is None:
        return False
    return canonicalize_name(metadata.name) == selected.name.project and normalize_version(
        metadata.version
    ) == normalize_version(selected.name.version)


class _ByteCounter:
    """Counts the bytes that pass through an async iterator."""

    def __init__(self) -> None:
        self.count = 0

    async def wrap(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self.count += len(chunk)
            yield chunk


def _result(selection: ProjectSelection, selected: SelectedFile, action: Action) -> FileResult:
    return FileResult(
        project=str(selection.project),
        version=selected.version,
        filename=selected.file.filename,
        sha256=selected.file.sha256 or "",
        size=selected.file.size,
        action=action,
    )


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
    options: SyncOptions = SyncOptions(),
    *,
    on_file: ProgressCallback | None = None,
) -> SyncReport:
    """Mirror what ``requirements`` select from ``index`` into ``store``."""
    return await Syncer(index, store, options, on_file=on_file).run(requirements)
