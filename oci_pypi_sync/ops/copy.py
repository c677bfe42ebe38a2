"""Copy a mirror between any two stores (registry, layout, packed tar), byte for byte.

Tools such as ``skopeo copy`` re-serialise what they copy and drop
``artifactType``, which changes every index digest; this copy moves
manifests and indexes as the exact bytes it read, so every digest is
preserved. It writes through the same :class:`~oci_pypi_sync.engine.writer.Writer`
as a sync: per tag, children go first (blobs, then child manifests by
digest, then the tag), so the destination never has a tag pointing at
missing content. A referrers fallback tag (``sha256-<hex>``) brings its
subject along. What the destination already holds is not sent again (a
tag at the same digest, a manifest it has, a blob it has or can mount), so
a rerun after an interruption copies only what is missing.

A destination tag is never overwritten blindly: when the destination's
version index lists files the source's does not (a mirror fed from two
places), the two are merged and the tag is reported ``merged``; its digest
is then the destination's own. A fallback tag listing other referrers is
merged likewise.

A tag that fails is recorded and the others go on; an unreachable
destination or refused credentials stop the copy, since nothing else could
succeed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal, Protocol, TypeVar

from oci_pypi_sync.engine.flight import SingleFlight
from oci_pypi_sync.engine.referrers import referrers_merge
from oci_pypi_sync.engine.retry import RetryPolicy, with_retries
from oci_pypi_sync.engine.writer import Writer
from oci_pypi_sync.errors import FATAL_ERRORS, OciPypiError, TargetError, first_error
from oci_pypi_sync.format import (
    OCI_INDEX,
    OCI_MANIFEST,
    build_release_index,
    entry_filename,
    format2_entry,
    is_referrers_tag,
    parse_referrers_index,
    read_release_index,
)
from oci_pypi_sync.format.leases import is_lease_tag
from oci_pypi_sync.ops.catalog import CATALOG_REPOSITORY, IDENTITY_TAG
from oci_pypi_sync.ops.walk import Listed, each_tag_list, mirror_repositories
from oci_pypi_sync.stores.protocols import Store, StoredManifest, TagMerge

__all__ = [
    "CopyObserver",
    "CopyReport",
    "TagCopy",
    "copy",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_MANIFEST_TYPES = frozenset(
    {
        OCI_INDEX,
        OCI_MANIFEST,
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    }
)
_INDEX_TYPES = frozenset({OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json"})
_MAX_DEPTH = 8

TagAction = Literal["copied", "merged", "unchanged", "failed"]


@dataclass(frozen=True, slots=True)
class TagCopy:
    """What happened to one tag: its digest, and why it failed when it did.

    ``merged``: the destination's version index listed files the source's
    does not; both sets are kept, in an index whose digest is the
    destination's own (``digest``), not the source's.
    """

    repository: str
    tag: str
    action: TagAction
    digest: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class CopyReport:
    """Per-tag results (sorted by repository and tag) and blob totals."""

    source: str
    destination: str
    tags: tuple[TagCopy, ...] = ()
    blobs_copied: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    bytes_copied: int = 0
    manifests_copied: int = 0
    repository_errors: tuple[tuple[str, str], ...] = ()

    @property
    def failed(self) -> bool:
        return bool(self.repository_errors) or any(t.action == "failed" for t in self.tags)

    def count(self, action: TagAction) -> int:
        return sum(1 for t in self.tags if t.action == action)


class CopyObserver(Protocol):
    """Hears about progress (a progress display, tests counting transfers)."""

    def blob_copied(self, repository: str, digest: str, size: int) -> None: ...

    def tag_finished(self, result: TagCopy) -> None: ...


class _NullObserver:
    def blob_copied(self, repository: str, digest: str, size: int) -> None:
        return None

    def tag_finished(self, result: TagCopy) -> None:
        return None


@dataclass
class _Totals:
    blobs_copied: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    bytes_copied: int = 0
    manifests_copied: int = 0


@dataclass
class _Copier:
    src: Store
    writer: Writer
    jobs: int
    retry: RetryPolicy
    observer: CopyObserver
    totals: _Totals = field(default_factory=_Totals)
    # child manifests copied (or found) this run, shared by the tags that list them
    _manifests: SingleFlight[tuple[str, str]] = field(
        default_factory=lambda: SingleFlight(keep=True)
    )
    # Digests this copy uploaded: found again (a layout's blobs serve every
    # repository), they were not "already there".
    _written: set[str] = field(default_factory=set)

    @property
    def dst(self) -> Store:
        return self.writer.store

    async def step(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        return await with_retries(self.retry, what, call)

    async def copy_tag(self, repo: str, tag: str) -> TagCopy:
        where = f"{repo}:{tag}"
        try:
            source = await self.step(
                f"{where}: read source", lambda: self.src.get_manifest(repo, tag)
            )
            if source is None:
                return TagCopy(repo, tag, "failed", None, "the source no longer has this tag")
            current = await self.step(
                f"{where}: read destination", lambda: self.dst.get_manifest(repo, tag)
            )
            if current is not None and current.digest == source.digest:
                return TagCopy(repo, tag, "unchanged", source.digest)
            if is_referrers_tag(tag):
                return await self.copy_referrers(repo, tag, source)
            await self.copy_children(repo, source, 0)
            merge = copy_merge(repo, source)
            digest = await self.writer.tag(repo, tag, _media_type(source), merge)
            self.totals.manifests_copied += 1
            if digest != source.digest:
                log.warning(
                    "%s: the destination listed files the source does not; kept, in %s",
                    where,
                    digest,
                )
                return TagCopy(repo, tag, "merged", digest)
            return TagCopy(repo, tag, "copied", source.digest)
        except FATAL_ERRORS:
            raise
        except OciPypiError as exc:
            log.warning("%s: %s", where, exc)
            return TagCopy(repo, tag, "failed", None, str(exc))

    async def copy_referrers(self, repo: str, tag: str, source: StoredManifest) -> TagCopy:
        """A referrers fallback tag: its subject first, then the referrers, then the tag.

        A destination without the tag gets the source's bytes (the same
        digest); one whose tag lists other referrers gets the union.
        """
        where = f"{repo}:{tag}"
        subject = "sha256:" + tag.removeprefix("sha256-")
        if await self.step(f"{where}: subject", lambda: self.src.has_manifest(repo, subject)):
            await self._manifests.run(
                (repo, subject), partial(self._copy_manifest, repo, subject, 0)
            )
        await self.copy_children(repo, source, 0)
        try:
            entries = parse_referrers_index(source.body)
        except ValueError as exc:
            raise TargetError(f"{self.src.display_name}: {where}: {exc}") from exc
        union = referrers_merge(repo, subject, entries)

        def merge(now: StoredManifest | None) -> bytes:
            return source.body if now is None else union(now)

        digest = await self.writer.tag(repo, tag, _media_type(source), merge)
        self.totals.manifests_copied += 1
        return TagCopy(repo, tag, "copied" if digest == source.digest else "merged", digest)

    async def copy_children(self, repo: str, manifest: StoredManifest, depth: int) -> None:
        """Everything ``manifest`` references, stored in the destination before it."""
        if depth > _MAX_DEPTH:
            raise TargetError(f"{repo}@{manifest.digest}: manifests nested too deep")
        data = _parse(manifest)
        if _media_type(manifest) in _INDEX_TYPES or "manifests" in data:
            seen: set[str] = set()
            for child in data.get("manifests") or ():
                digest = str(child["digest"])
                if digest not in seen:
                    seen.add(digest)
                    await self._manifests.run(
                        (repo, digest), partial(self._copy_manifest, repo, digest, depth + 1)
                    )
            return
        blobs: list[dict[str, Any]] = []
        if isinstance(data.get("config"), dict):
            blobs.append(data["config"])
        blobs.extend(layer for layer in data.get("layers") or () if isinstance(layer, dict))
        seen_blobs: set[str] = set()
        for blob in blobs:
            digest = str(blob["digest"])
            if digest not in seen_blobs:
                seen_blobs.add(digest)
                await self.copy_blob(repo, digest, int(blob["size"]))

    async def _copy_manifest(self, repo: str, digest: str, depth: int) -> None:
        where = f"{repo}@{digest}"
        # A manifest the destination holds was written children first: nothing below to copy.
        if await self.step(f"{where}: check", lambda: self.dst.has_manifest(repo, digest)):
            return
        child = await self.step(f"{where}: read", lambda: self.src.get_manifest(repo, digest))
        if child is None:
            raise TargetError(f"{self.src.display_name} has no manifest {where}")
        await self.copy_children(repo, child, depth)
        await self.writer.manifest(repo, _media_type(child), child.body)
        self.totals.manifests_copied += 1

    async def copy_blob(self, repo: str, digest: str, size: int) -> None:
        def chunks() -> AsyncIterator[bytes]:
            return self.src.open_blob(repo, digest)

        written = await self.writer.blob(repo, digest, size, chunks)
        if written.outcome == "uploaded":
            self._written.add(digest)
            self.totals.blobs_copied += 1
            self.totals.bytes_copied += size
            self.observer.blob_copied(repo, digest, size)
        elif written.outcome == "mounted":
            self.totals.blobs_mounted += 1
        elif digest not in self._written:  # a layout shares one blob among repositories
            self.totals.blobs_present += 1


def copy_merge(repo: str, source: StoredManifest) -> TagMerge:
    """The source's manifest, verbatim, unless the destination's version index lists more.

    When both are version indexes (format 1 or 2) and the destination's
    lists files the source's does not, the two are merged: the source's
    entries, and the destination's entries of other files. Anything else is
    the source's bytes, so its digest stays the same.
    """

    def merge(current: StoredManifest | None) -> bytes:
        if current is None or current.digest == source.digest:
            return source.body
        try:
            theirs = read_release_index(source.body)
            ours = read_release_index(current.body)
        except ValueError:
            return source.body
        files = {entry_filename(entry) for entry in theirs.entries}
        kept = [format2_entry(e) for e in ours.entries if entry_filename(e) not in files]
        if not kept or theirs.project != repo or ours.project != repo:
            return source.body
        entries = [format2_entry(entry) for entry in theirs.entries] + kept
        return build_release_index(repo, theirs.version, entries).data

    return merge


def _settled(result: TagCopy, settled: dict[tuple[str, str], str | None]) -> TagCopy:
    """The tag's result once another writer's entries were merged in after ours."""
    digest = settled.get((result.repository, result.tag))
    if digest is None or digest == result.digest or result.action == "failed":
        return result
    return replace(result, action="merged", digest=digest)


def _parse(manifest: StoredManifest) -> dict[str, Any]:
    try:
        data = json.loads(manifest.body)
    except ValueError as exc:
        raise TargetError(f"manifest {manifest.digest} is not JSON") from exc
    if not isinstance(data, dict):
        raise TargetError(f"manifest {manifest.digest} is not a JSON object")
    return data


def _media_type(manifest: StoredManifest) -> str:
    """The body's own ``mediaType`` (what a registry must be told), else what the store said."""
    try:
        declared = json.loads(manifest.body).get("mediaType")
    except (ValueError, AttributeError):
        declared = None
    if isinstance(declared, str) and declared in _MANIFEST_TYPES:
        return declared
    return manifest.media_type or OCI_MANIFEST


async def copy(
    src: Store,
    dst: Store,
    *,
    repositories: Sequence[str] | None = None,
    jobs: int = 8,
    retry: RetryPolicy | None = None,
    observer: CopyObserver | None = None,
) -> CopyReport:
    """Copy every tag of ``repositories`` (default: every repository of the mirror, see
    :func:`~oci_pypi_sync.ops.walk.mirror_repositories`) from ``src`` to ``dst``.

    ``jobs`` tags are copied at a time, each streaming one blob at a time,
    so memory stays bounded by ``jobs`` manifests and transfer buffers.
    Repositories whose names contain a dot (catalogs and other artifacts)
    are copied like any other. Tags a registry holds are checked again once
    the writer's settle delay has passed (see
    :meth:`~oci_pypi_sync.engine.writer.Writer.settle`).
    """
    policy = retry or RetryPolicy()
    copier = _Copier(src, Writer(dst, policy), max(1, jobs), policy, observer or _NullObserver())
    if repositories is None:
        names = await copier.step("list repositories", partial(mirror_repositories, src))
    else:
        names = sorted(set(repositories))
    queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue(maxsize=copier.jobs * 2)
    results: list[TagCopy] = []
    repo_errors: list[tuple[str, str]] = []

    async def listed(item: Listed) -> None:
        if item.error is not None:
            log.warning("%s: %s", item.repository, item.error)
            repo_errors.append((item.repository, str(item.error)))
            return
        for tag in item.tags:
            if item.repository == CATALOG_REPOSITORY and (tag == IDENTITY_TAG or is_lease_tag(tag)):
                continue  # each target has its own identity and writers (engine.presence)
            await queue.put((item.repository, tag))

    async def produce() -> None:
        # Tag lists are read jobs at a time, the tags copied as their lists arrive.
        await each_tag_list(src, names, listed, jobs=copier.jobs, step=copier.step)
        for _ in range(copier.jobs):
            await queue.put(None)  # on failure the task group stops the workers instead

    async def work() -> None:
        while (item := await queue.get()) is not None:
            result = await copier.copy_tag(*item)
            results.append(result)
            copier.observer.tag_finished(result)

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(produce())
            for _ in range(copier.jobs):
                group.create_task(work())
        settled = await copier.writer.settle()
        await copier.writer.close()
        copier.writer.commit()
    except BaseExceptionGroup as errors:
        raise first_error(errors) from None
    finally:
        copier.writer.abandon()
    results = [_settled(result, settled) for result in results]
    totals = copier.totals
    return CopyReport(
        source=src.display_name,
        destination=dst.display_name,
        tags=tuple(sorted(results, key=lambda r: (r.repository, r.tag))),
        blobs_copied=totals.blobs_copied,
        blobs_mounted=totals.blobs_mounted,
        blobs_present=totals.blobs_present,
        bytes_copied=totals.bytes_copied,
        manifests_copied=totals.manifests_copied,
        repository_errors=tuple(repo_errors),
    )
