"""One version of a project, synced: its files made present on the target, then its index tagged.

The target's current index of the version is read once. A file it lists
with the same sha256 is reused once its manifest answers (a ``HEAD``); a
file it lists with another sha256 was replaced upstream, which a published
file never is on a sound index: it is refused (``replaced-upstream``), the
mirrored bytes stay, unless the caller accepts new bytes. Other files
stream from the index into the store through the
:class:`~oci_pypi_sync.engine.writer.Writer`, with their core metadata from
the :class:`~oci_pypi_sync.engine.metadata.MetadataSource`. The index is
then written by merging with what the tag holds at that moment (another
writer's entries are kept), children first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace
from typing import Literal

from oci_pypi_sync.engine.metadata import MetadataScope, MetadataSource, wheel_metadata
from oci_pypi_sync.engine.provenance import CheckedProvenance, ProvenanceStep
from oci_pypi_sync.engine.results import (
    FileAction,
    FileProvenance,
    FileResult,
    ReleaseResult,
    SyncObserver,
)
from oci_pypi_sync.engine.retry import RetryPolicy, with_retries
from oci_pypi_sync.engine.writer import BlobWrite, Child, Writer
from oci_pypi_sync.errors import (
    FATAL_ERRORS,
    IndexError_,
    IndexUnreachableError,
    OciPypiError,
    RegistryError,
)
from oci_pypi_sync.format import (
    A_SHA256,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    FileName,
    build_file_artifact,
    build_release_index,
    empty_config,
    parse_release_index,
    version_tag,
)
from oci_pypi_sync.format.reconcile import (
    entries_by_title,
    entry_file_size,
    reconcile_release,
    reusable_entries,
)
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.index.records import DistributionFile
from oci_pypi_sync.plan.select import SelectedFile
from oci_pypi_sync.state.journal import Journal
from oci_pypi_sync.stores.protocols import StatsBlobs, StoredManifest, TagMerge, TagRead

__all__ = [
    "SMALL_WHEEL_BYTES",
    "ReleaseSync",
    "TagsListed",
    "file_result",
    "release_entries",
    "release_merge",
]

log = logging.getLogger(__name__)

#: Wheels up to this size are kept in memory while they stream, so their
#: METADATA can stand in for a separate ``.metadata`` request.
SMALL_WHEEL_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class TagsListed:
    """A repository's tags as listed (or known absent), and when the listing started."""

    tags: frozenset[str]
    read_at: float


@dataclass(frozen=True, slots=True)
class _FileOutcome:
    result: FileResult
    entries: tuple[Descriptor, ...] | None


def release_entries(manifest: StoredManifest | None) -> tuple[Descriptor, ...]:
    """The entries of a tag's version index; none when absent or not an index of this format."""
    if manifest is None or manifest.media_type != OCI_INDEX:
        return ()
    try:
        return parse_release_index(manifest.body)[1]
    except (ValueError, KeyError, TypeError):
        return ()


def release_merge(
    repo: str,
    version: str,
    fresh: tuple[Descriptor, ...],
    upstream: dict[str, tuple[DistributionFile, FileName]],
    *,
    prune: bool,
) -> TagMerge:
    """Merge this run's entries into whatever the tag holds when it is written.

    Entries of files this run did not sync (another writer's, an earlier
    selection's) are kept; an entry is replaced only by this run's record of
    the same file. A tag holding something this format cannot read is
    replaced.
    """

    def merge(current: StoredManifest | None) -> bytes | None:
        if current is not None and not release_entries(current):
            log.warning("%s: the tag holds an index this tool cannot read; replacing it", repo)
        entries, _ = reconcile_release(release_entries(current), fresh, upstream, prune=prune)
        if not entries:
            return None
        return build_release_index(repo, version, entries).data

    return merge


class ReleaseSync:
    """Syncs the versions of projects into one writer's store, one version at a time."""

    def __init__(
        self,
        index: IndexClient,
        writer: Writer,
        metadata: MetadataSource,
        *,
        retry: RetryPolicy,
        observer: SyncObserver,
        journal: Journal | None,
        provenance: ProvenanceStep,
        file_slots: asyncio.Semaphore,
        prune: bool,
        accept_replaced: bool,
    ) -> None:
        self.index = index
        self.writer = writer
        self.metadata = metadata
        self.provenance = provenance
        self.retry = retry
        self.observer = observer
        self.journal = journal
        self._file_slots = file_slots
        self._prune = prune
        self._accept_replaced = accept_replaced
        # Repositories whose empty config the state file vouches for (_holds_config).
        self._config_held: dict[str, bool] = {}

    async def sync(
        self,
        repo: str,
        version: str,
        files: tuple[SelectedFile, ...],
        upstream: dict[str, tuple[DistributionFile, FileName]],
        listed: TagsListed | None = None,
    ) -> tuple[list[FileResult], ReleaseResult]:
        """Make the version's selected files present, then tag its merged index.

        ``listed``: the repository's tags, as listed earlier this run.
        """
        tag = version_tag(version)
        store = self.writer.store
        try:
            if listed is not None and tag not in listed.tags:
                read = TagRead(None, listed.read_at)
            else:
                read_at = await self.writer.read_point()
                read = TagRead(
                    await with_retries(
                        self.retry,
                        f"{repo}:{tag}: current index",
                        lambda: store.get_manifest(repo, tag),
                    ),
                    read_at,
                )
            existing = read.manifest
        except FATAL_ERRORS:
            raise
        except OciPypiError as exc:
            results = [replace(file_result(repo, s, "failed"), error=str(exc)) for s in files]
            release = ReleaseResult(repo, version, tag, None, "failed", str(exc))
            self.observer.release_finished(release)
            return results, release
        old_entries = release_entries(existing)
        known = entries_by_title(old_entries)
        scope = MetadataScope()
        outcomes = await asyncio.gather(
            *(self._file(repo, selected, known, scope) for selected in files)
        )
        results = [outcome.result for outcome in outcomes]
        fresh = tuple(entry for o in outcomes if o.entries for entry in o.entries)
        entries, removed = reconcile_release(old_entries, fresh, upstream, prune=self._prune)
        for filename in removed:
            log.warning(
                "%s:%s lists %s, which the index no longer has%s",
                repo,
                tag,
                filename,
                "; pruned" if self._prune else " (use --prune to take it out)",
            )
        pruned = self._prune and bool(removed)
        if not entries:
            error = "no file of this version could be mirrored"
            release = ReleaseResult(repo, version, tag, None, "failed", error, removed, pruned)
        elif existing is not None and (
            build_release_index(repo, version, entries).descriptor.digest == existing.digest
        ):
            self._record_release(repo, version, tag, existing.digest)
            release = ReleaseResult(
                repo, version, tag, existing.digest, "unchanged", None, removed, pruned
            )
        else:
            merge = release_merge(repo, version, fresh, upstream, prune=self._prune)
            release = await self._tag(repo, version, tag, merge, read)
            release = replace(release, removed_upstream=removed, pruned=pruned)
        self.observer.release_finished(release)
        return results, release

    async def _tag(
        self, repo: str, version: str, tag: str, merge: TagMerge, read: TagRead
    ) -> ReleaseResult:
        try:
            digest = await self.writer.tag(repo, tag, OCI_INDEX, merge, read=read)
        except FATAL_ERRORS:
            raise
        except OciPypiError as exc:
            log.warning("%s:%s: %s", repo, tag, exc)
            return ReleaseResult(repo, version, tag, None, "failed", str(exc))
        if digest is None:
            error = "no file of this version could be mirrored"
            return ReleaseResult(repo, version, tag, None, "failed", error)
        self._record_release(repo, version, tag, digest)
        return ReleaseResult(repo, version, tag, digest, "pushed")

    def _record_release(self, repo: str, version: str, tag: str, digest: str) -> None:
        if self.journal is not None:
            self.journal.record_release(repo, version, tag, digest)

    # --- files -------------------------------------------------------------------

    async def _file(
        self,
        repo: str,
        selected: SelectedFile,
        known: dict[str, list[Descriptor]],
        scope: MetadataScope,
    ) -> _FileOutcome:
        file = selected.file
        sha256 = file.sha256 or ""
        listed = known.get(file.filename, [])
        mirrored = sorted({e.annotations.get(A_SHA256) or "" for e in listed} - {sha256})
        note = None
        if mirrored and not self._accept_replaced:
            return self._replaced(repo, selected, mirrored[0])
        if mirrored:
            note = f"replaced upstream: the mirrored sha256 {mirrored[0]} gave way to the new bytes"
        try:
            # Before any byte is written: a file whose provenance fails is not mirrored.
            checked = await self.provenance.check(repo, file)
        except FATAL_ERRORS:
            raise
        except OciPypiError as exc:
            return self._failed(repo, selected, exc)
        reused = reusable_entries(known, file, selected.name)
        replace_blob = False
        if reused is not None:
            size = entry_file_size(reused[0], file)
            found = await self._on_target(repo, reused[0].digest, file, size)
            if found == "present":
                try:
                    entries, provenance = await self._provenance(repo, file, checked, reused)
                except FATAL_ERRORS:
                    raise
                except OciPypiError as exc:
                    return self._failed(repo, selected, exc)
                self._record_done(repo, selected, size, reused[0].digest)
                result = FileResult(
                    repo,
                    selected.version,
                    file.filename,
                    sha256,
                    size,
                    "present",
                    provenance=provenance,
                )
                self.observer.file_finished(result)
                return _FileOutcome(result, entries)
            replace_blob = found == "damaged"
            gone = "bytes" if found == "damaged" else "manifest or bytes"
            note = f"the target listed it, but its {gone} were gone or damaged: written again"
        if self.journal is not None:
            self.journal.record_file_pending(
                repo, selected.version, file.filename, sha256, file.size
            )
        try:
            written, action, size, metadata_note = await self._transfer(
                repo, selected, scope, replace_blob
            )
            entries, provenance = await self._provenance(repo, file, checked, written)
        except FATAL_ERRORS:
            raise
        except OciPypiError as exc:
            return self._failed(repo, selected, exc)
        self._record_done(repo, selected, size, entries[0].digest)
        note = "; ".join(n for n in (note, metadata_note) if n) or None
        result = FileResult(
            repo,
            selected.version,
            file.filename,
            sha256,
            size,
            action,
            provenance=provenance,
            note=note,
        )
        self.observer.file_finished(result)
        return _FileOutcome(result, entries)

    async def _provenance(
        self,
        repo: str,
        file: DistributionFile,
        checked: CheckedProvenance | None,
        entries: tuple[Descriptor, ...],
    ) -> tuple[tuple[Descriptor, ...], FileProvenance | None]:
        """The file's entries, annotated once its provenance is stored as referrers."""
        if checked is None:
            return entries, FileProvenance("none") if self.provenance.active else None
        subject = Descriptor(OCI_MANIFEST, entries[0].digest, entries[0].size)
        return await self.provenance.store_referrers(repo, file.filename, subject, checked, entries)

    def _failed(self, repo: str, selected: SelectedFile, exc: OciPypiError) -> _FileOutcome:
        file = selected.file
        log.warning("%s: %s", file.filename, exc)
        if self.journal is not None:
            self.journal.record_file_failed(
                repo, selected.version, file.filename, file.sha256 or "", file.size, str(exc)
            )
        result = replace(file_result(repo, selected, "failed"), error=str(exc))
        self.observer.file_finished(result)
        return _FileOutcome(result, None)

    def _replaced(self, repo: str, selected: SelectedFile, mirrored: str) -> _FileOutcome:
        """A file the index now gives other bytes: refused, the mirrored bytes stay."""
        file = selected.file
        error = (
            f"the index now gives {file.filename} the sha256 {file.sha256}, but the mirror "
            f"holds {mirrored}; published files do not change: the mirrored bytes stay "
            "(--accept-replaced takes the new ones)"
        )
        log.warning("%s", error)
        result = FileResult(
            repo,
            selected.version,
            file.filename,
            file.sha256 or "",
            file.size,
            "replaced-upstream",
            error,
            mirrored_sha256=mirrored,
        )
        self.observer.file_finished(result)
        return _FileOutcome(result, None)

    async def _on_target(
        self, repo: str, manifest: str, file: DistributionFile, size: int
    ) -> Literal["present", "missing", "damaged"]:
        """Whether a file the target's index lists is really there: its manifest and its bytes.

        A ``HEAD`` each (the blob's size checked where the store tells it):
        ``damaged`` is a file blob of another size (a truncated layout file),
        to be replaced; the config and metadata blobs are left to ``verify``.
        """
        store = self.writer.store
        digest = f"sha256:{file.sha256}"

        async def blob_found() -> Literal["present", "missing", "damaged"]:
            if isinstance(store, StatsBlobs):
                stat = await store.stat_blob(repo, digest)
                if stat is None:
                    return "missing"
                return "damaged" if stat.size is not None and stat.size != size else "present"
            return "present" if await store.has_blob(repo, digest) else "missing"

        try:
            has_manifest, blob = await asyncio.gather(
                with_retries(
                    self.retry,
                    f"{repo}@{manifest}: check",
                    lambda: store.has_manifest(repo, manifest),
                ),
                with_retries(self.retry, f"{repo}@{digest}: check", blob_found),
            )
        except FATAL_ERRORS:
            raise
        except OciPypiError as exc:
            log.info("%s: could not be checked (%s); writing it again", file.filename, exc)
            return "missing"
        if blob != "present":
            log.warning(
                "%s: the target lists it, but its bytes are %s; writing them again",
                file.filename,
                "gone" if blob == "missing" else "of another size",
            )
            return blob
        if not has_manifest:
            log.warning(
                "%s: the target lists it, but its manifest is gone; writing it again", file.filename
            )
            return "missing"
        return "present"

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

    async def _transfer(
        self, repo: str, selected: SelectedFile, scope: MetadataScope, replace_blob: bool = False
    ) -> tuple[tuple[Descriptor, ...], FileAction, int, str | None]:
        """The file's blob, then its core metadata, then the manifest with the rest.

        ``--jobs`` bounds the file transfers (the mount or the streamed
        upload); the small requests after them (metadata, config, manifest)
        do not hold a slot, so a slot is not kept idle while they wait.
        """
        file = selected.file
        if file.sha256 is None:  # selection keeps only files with a sha256
            raise IndexError_(f"{file.filename} has no sha256")
        digest = "sha256:" + file.sha256
        async with self._file_slots:
            written, kept = await self._file_blob(repo, digest, selected, scope, replace_blob)
        size = written.size
        if written.outcome != "uploaded" or size is None:
            size = file.size
        if size is None:
            size = await with_retries(
                self.retry, f"{file.filename}: size", lambda: self.index.get_file_size(file)
            )
        name = selected.name
        choice = await self.metadata.for_file(
            file, name.project, name.version, is_wheel=name.is_wheel, wheel=kept, scope=scope
        )
        artifact = build_file_artifact(file, repo, size, choice.raw)
        config = empty_config()
        config_child = Child(config.descriptor.digest, len(config.data), data=config.data)
        config_held = self._holds_config(repo)
        children = [] if config_held else [config_child]
        if choice.raw is not None:
            children.append(Child(artifact.layers[1].digest, len(choice.raw), data=choice.raw))
        body = artifact.manifest.data
        try:
            await self.writer.manifest(repo, OCI_MANIFEST, body, children)
        except RegistryError as exc:
            if not config_held or exc.code != "MANIFEST_BLOB_UNKNOWN":
                raise
            # The state file said the repository holds the config; the registry
            # does not (deleted behind the state file's back): store it, send again.
            log.info("%s: the empty config is missing; storing it again", repo)
            self._config_held[repo] = False
            await self.writer.manifest(repo, OCI_MANIFEST, body, [config_child, *children])
        action: FileAction = "pushed" if written.outcome == "uploaded" else "present"
        note = f"mirrored without core metadata: {choice.note}" if choice.note else None
        if note:
            log.warning("%s: %s", file.filename, note)
        return artifact.entries, action, size, note

    async def _file_blob(
        self,
        repo: str,
        digest: str,
        selected: SelectedFile,
        scope: MetadataScope,
        replace: bool,
    ) -> tuple[BlobWrite, bytes | None]:
        """Upload (or mount) the file's bytes; a small wheel's METADATA comes back with them."""
        file = selected.file
        advertised = file.core_metadata.sha256 if file.core_metadata is not None else None
        # A small wheel's METADATA stands in for its advertised .metadata, or is
        # what an unadvertised one is checked against.
        keep = (
            selected.name.is_wheel
            and file.size is not None
            and file.size <= SMALL_WHEEL_BYTES
            and (advertised is not None or self.metadata.probe)
        )
        counter = _ByteCounter(self.observer, file.filename, file.size, keep=keep)
        # The first small wheel of a release to start promises its METADATA to
        # the release's files that advertise the same hash (its sdist, say).
        promise = scope.promise(advertised) if keep and advertised is not None else None

        def source() -> AsyncIterator[bytes]:
            counter.restart()
            return counter.wrap(self._file_chunks(file))

        kept: bytes | None = None
        try:
            written = await self.writer.blob(
                repo, digest, file.size, source, replace=replace, remember=True
            )
            if written.outcome == "uploaded" and counter.kept is not None:
                kept = await asyncio.to_thread(wheel_metadata, counter.kept, file.filename)
        except BaseException:
            counter.restart()
            raise
        finally:
            if promise is not None:
                promise.set_result(kept)
        return written, kept

    async def _file_chunks(self, file: DistributionFile) -> AsyncGenerator[bytes, None]:
        """The file's bytes; a connection lost mid-file fails this attempt, not the run."""
        async with self.index.stream_file(file) as chunks:
            try:
                async for chunk in chunks:
                    yield chunk
            except IndexUnreachableError as exc:
                raise IndexError_(f"download of {file.filename} interrupted: {exc}") from exc


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
        try:
            async for chunk in chunks:
                if self.kept is not None:
                    self.kept += chunk
                self.count += len(chunk)
                self._observer.bytes_transferred(self._filename, len(chunk))
                yield chunk
        finally:
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()


def file_result(repo: str, selected: SelectedFile, action: FileAction) -> FileResult:
    """A file's result with the index's record of it (sha256, size)."""
    return FileResult(
        project=repo,
        version=selected.version,
        filename=selected.file.filename,
        sha256=selected.file.sha256 or "",
        size=selected.file.size,
        action=action,
    )
