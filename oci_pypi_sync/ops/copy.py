"""Copy a mirror between any two stores (registry, layout, packed tar), byte for byte.

Tools such as ``skopeo copy`` re-serialise what they copy and drop
``artifactType``, which changes every index digest; this copy moves
manifests and indexes as the exact bytes it read, so every digest is
preserved. Per tag, children go first (blobs, then child manifests by
digest, then the tag), so the destination never has a tag pointing at
missing content. A referrers fallback tag (``sha256-<hex>``) brings its
subject along, and is merged with one the destination already has. What
the destination already holds is skipped (a tag at the same digest, a
blob it has), so a rerun after an interruption copies only what is
missing.

A tag that fails is recorded and the others go on; an unreachable
destination or refused credentials stop the copy, since nothing else could
succeed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol, TypeVar

from oci_pypi_sync.engine.referrers import update_referrers_tag
from oci_pypi_sync.engine.retry import RetryPolicy, with_retries
from oci_pypi_sync.errors import FATAL_ERRORS, OciPypiError, TargetError
from oci_pypi_sync.format import OCI_INDEX, OCI_MANIFEST, is_referrers_tag, parse_referrers_index
from oci_pypi_sync.stores.protocols import Store, StoredManifest

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

TagAction = Literal["copied", "unchanged", "failed"]


@dataclass(frozen=True, slots=True)
class TagCopy:
    """What happened to one tag: its digest, and why it failed when it did."""

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
    dst: Store
    jobs: int
    retry: RetryPolicy
    observer: CopyObserver
    totals: _Totals = field(default_factory=_Totals)
    # (repo, digest) -> the transfer in flight or done, shared by tags that need the same blob.
    _blobs: dict[tuple[str, str], asyncio.Future[None]] = field(default_factory=dict)
    _manifests: dict[tuple[str, str], asyncio.Future[None]] = field(default_factory=dict)
    # digest -> the first transfer of those bytes, which copies into other repositories await.
    _by_digest: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    # digest -> a destination repository known to hold it, for cross-repository mounts.
    _located: dict[str, str] = field(default_factory=dict)

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
                return await self.copy_referrers(repo, tag, source, current)
            await self.copy_children(repo, source, 0)
            media_type = _media_type(source)
            await self.step(
                f"{where}: tag",
                lambda: self.dst.put_manifest(repo, tag, media_type, source.body),
            )
            self.totals.manifests_copied += 1
            return TagCopy(repo, tag, "copied", source.digest)
        except FATAL_ERRORS:
            raise
        except OciPypiError as exc:
            log.warning("%s: %s", where, exc)
            return TagCopy(repo, tag, "failed", None, str(exc))

    async def copy_referrers(
        self, repo: str, tag: str, source: StoredManifest, current: StoredManifest | None
    ) -> TagCopy:
        """A referrers fallback tag: its subject first, then the referrers, then the tag.

        A destination without the tag gets the source's bytes (the same
        digest); one whose tag lists other referrers gets the union.
        """
        where = f"{repo}:{tag}"
        subject = "sha256:" + tag.removeprefix("sha256-")
        if await self.step(f"{where}: subject", lambda: self.src.has_manifest(repo, subject)):
            await self.copy_manifest(repo, subject, 0)
        await self.copy_children(repo, source, 0)
        if current is None:
            media_type = _media_type(source)
            await self.step(
                f"{where}: tag", lambda: self.dst.put_manifest(repo, tag, media_type, source.body)
            )
            self.totals.manifests_copied += 1
            return TagCopy(repo, tag, "copied", source.digest)
        try:
            entries = parse_referrers_index(source.body)
        except ValueError as exc:
            raise TargetError(f"{self.src.display_name}: {where}: {exc}") from exc
        digest = await self.step(
            f"{where}: merge", lambda: update_referrers_tag(self.dst, repo, subject, entries)
        )
        self.totals.manifests_copied += 1
        return TagCopy(repo, tag, "copied", digest)

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
                    await self.copy_manifest(repo, digest, depth + 1)
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

    async def copy_manifest(self, repo: str, digest: str, depth: int) -> None:
        await self._once(self._manifests, (repo, digest), self._copy_manifest(repo, digest, depth))

    async def _copy_manifest(self, repo: str, digest: str, depth: int) -> None:
        where = f"{repo}@{digest}"
        if await self.step(f"{where}: check", lambda: self.dst.has_manifest(repo, digest)):
            return
        child = await self.step(f"{where}: read", lambda: self.src.get_manifest(repo, digest))
        if child is None:
            raise TargetError(f"{self.src.display_name} has no manifest {where}")
        await self.copy_children(repo, child, depth)
        media_type = _media_type(child)
        await self.step(
            f"{where}: write", lambda: self.dst.put_manifest(repo, digest, media_type, child.body)
        )
        self.totals.manifests_copied += 1

    async def copy_blob(self, repo: str, digest: str, size: int) -> None:
        await self._once(self._blobs, (repo, digest), self._copy_blob(repo, digest, size))

    async def _copy_blob(self, repo: str, digest: str, size: int) -> None:
        where = f"{repo}@{digest}"
        if await self.step(f"{where}: check", lambda: self.dst.has_blob(repo, digest)):
            self.totals.blobs_present += 1
            self._located.setdefault(digest, repo)
            return
        mine = self._blobs.get((repo, digest))
        elsewhere = self._by_digest.setdefault(digest, mine) if mine is not None else None
        try:
            if elsewhere is not mine and elsewhere is not None and hasattr(self.dst, "mount_blob"):
                # The same bytes are on their way into another repository: mount them after.
                await asyncio.wait([elsewhere])
            if await self._mount(repo, digest):
                self.totals.blobs_mounted += 1
                return

            def chunks() -> AsyncIterator[bytes]:
                return self.src.open_blob(repo, digest)

            await self.step(
                f"{where}: copy",
                lambda: self.dst.put_blob(repo, digest, size, chunks(), reopen=chunks),
            )
        finally:
            if mine is not None and self._by_digest.get(digest) is mine:
                del self._by_digest[digest]
        self._located.setdefault(digest, repo)
        self.totals.blobs_copied += 1
        self.totals.bytes_copied += size
        self.observer.blob_copied(repo, digest, size)

    async def _mount(self, repo: str, digest: str) -> bool:
        """Mount from another repository of the destination known to hold the blob."""
        mount = getattr(self.dst, "mount_blob", None)
        source = self._located.get(digest)
        if mount is None or source is None or source == repo:
            return False
        try:
            mounted = bool(await mount(repo, digest, source))
        except FATAL_ERRORS:
            raise
        except OciPypiError as exc:
            log.info("%s: mount of %s from %s failed: %s", repo, digest, source, exc)
            return False
        if mounted:
            self._located.setdefault(digest, repo)
        return mounted

    @staticmethod
    async def _once(
        pending: dict[tuple[str, str], asyncio.Future[None]],
        key: tuple[str, str],
        work: Awaitable[None],
    ) -> None:
        """Run ``work`` once per key; later callers wait for the first one's outcome."""
        existing = pending.get(key)
        if existing is not None:
            if asyncio.iscoroutine(work):
                work.close()
            await asyncio.shield(existing)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending[key] = future
        try:
            await work
        except BaseException as exc:
            # A failure is not remembered: another tag may try the same blob again.
            del pending[key]
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()  # retrieved here, so a failure nobody awaits logs nothing
            else:
                future.cancel()
            raise
        del pending[key]  # done: the destination now answers for it
        future.set_result(None)


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
    """Copy every tag of ``repositories`` (default: all the source lists) from ``src`` to ``dst``.

    ``jobs`` tags are copied at a time, each streaming one blob at a time,
    so memory stays bounded by ``jobs`` manifests and transfer buffers.
    Repositories whose names contain a dot (catalogs and other artifacts)
    are copied like any other.
    """
    copier = _Copier(src, dst, max(1, jobs), retry or RetryPolicy(), observer or _NullObserver())
    if repositories is None:
        names = await copier.step("list repositories", src.list_repositories)
    else:
        names = sorted(set(repositories))
    queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue(maxsize=copier.jobs * 2)
    results: list[TagCopy] = []
    repo_errors: list[tuple[str, str]] = []

    async def produce() -> None:
        for repo in names:
            try:
                tags = await copier.step(f"{repo}: list tags", partial(src.list_tags, repo))
            except FATAL_ERRORS:
                raise
            except OciPypiError as exc:
                log.warning("%s: %s", repo, exc)
                repo_errors.append((repo, str(exc)))
                continue
            for tag in tags:
                await queue.put((repo, tag))
        for _ in range(copier.jobs):
            await queue.put(None)

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
    except BaseExceptionGroup as errors:
        raise _first(errors) from None
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


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first fatal error of a task group, unwrapped (callers catch plain exceptions)."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first(error)
        return error
    return group  # pragma: no cover - a group is never empty
