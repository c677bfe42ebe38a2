"""The interface every target (a registry, an OCI layout) implements, and what some do more.

:class:`Store` is what every target offers; the engine writes only through
it (by way of :mod:`oci_pypi_sync.engine.writer`), in the order blobs ->
manifests -> tagged index, so a tag never points at missing children. A
store never keeps bytes under a digest they do not have: ``put_blob``
verifies the digest and size of what it received before the blob becomes
visible, and raises :class:`~oci_pypi_sync.errors.DigestMismatchError` or
:class:`~oci_pypi_sync.errors.SizeMismatchError` otherwise.

What only some stores can do is a capability class below. A store declares
one by inheriting it, and callers ask ``isinstance(store, Capability)``:
the check is nominal, so a store (or a wrapper forwarding attributes) never
claims a behaviour by merely having a method of that name.

``repo`` is the repository name relative to the target's prefix (the
normalized project name); each store adds its prefix itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = [
    "BlobFile",
    "BlobStat",
    "CommitsTags",
    "DiscardsBlobs",
    "EditsLayoutRefs",
    "HashesBlobs",
    "KnowsTagDigests",
    "ListsReferrers",
    "ListsRepositoriesWithin",
    "LocalBlobFiles",
    "MountsBlobs",
    "ReadsRanges",
    "StatsBlobs",
    "Store",
    "StoredManifest",
    "TagMerge",
    "TagRead",
    "UpdatesTagsAtomically",
]


@dataclass(frozen=True, slots=True)
class StoredManifest:
    """A manifest or index as a store holds it."""

    media_type: str
    digest: str
    body: bytes


@dataclass(frozen=True, slots=True)
class BlobStat:
    """What a store says about a blob without reading it: its size, when it tells."""

    size: int | None


@dataclass(frozen=True, slots=True)
class TagRead:
    """What a run read of a tag (``None``: absent), and when it started reading.

    ``read_at`` is a :func:`time.monotonic` taken after ``Writer.read_point``
    (:mod:`oci_pypi_sync.engine.writer`). Given to ``Writer.tag``, it spares
    the read right before the write when no other writer could have written
    the tag since (see :mod:`oci_pypi_sync.engine.presence`).
    """

    manifest: StoredManifest | None
    read_at: float


#: Given the tag's current manifest (``None``: untagged), the body to tag instead,
#: or ``None`` to leave the tag as it is. Called again if the tag moved meanwhile.
TagMerge = Callable[[StoredManifest | None], bytes | None]


class Store(Protocol):
    """A place that holds OCI repositories: a registry or a layout on disk."""

    @property
    def display_name(self) -> str:
        """A human name for messages (never with credentials)."""
        ...

    async def has_blob(self, repo: str, digest: str) -> bool:
        """Whether ``repo`` already holds the blob."""
        ...

    async def put_blob(
        self,
        repo: str,
        digest: str,
        size: int | None,
        chunks: AsyncIterable[bytes],
        *,
        reopen: Callable[[], AsyncIterable[bytes]] | None = None,
    ) -> bool:
        """Store a blob streamed in chunks, verifying digest and size before it is visible.

        Returns ``False``, without reading ``chunks``, when the store already
        has the blob (a registry learns that from the same request that would
        open the upload), ``True`` when the bytes were uploaded.

        ``size`` is ``None`` when the index did not say (PEP 503 HTML pages);
        registries then receive a chunked request body. ``reopen`` gives a
        fresh stream of the same bytes, for a store that must start over
        (a registry refusing a large body switches to chunked uploads).
        """
        ...

    async def put_blob_bytes(self, repo: str, digest: str, data: bytes) -> bool:
        """Store a small blob held in memory (configs, metadata), verifying its digest.

        Returns ``False`` when the store already had it.
        """
        ...

    def open_blob(self, repo: str, digest: str) -> AsyncIterator[bytes]:
        """Stream a blob's bytes; raises if the store does not have it."""
        ...

    async def get_manifest(self, repo: str, reference: str) -> StoredManifest | None:
        """Fetch a manifest or index by tag or digest; ``None`` when it does not exist."""
        ...

    async def has_manifest(self, repo: str, digest: str) -> bool:
        """Whether ``repo`` holds the manifest with this digest."""
        ...

    async def put_manifest(self, repo: str, reference: str, media_type: str, body: bytes) -> str:
        """Store a manifest or index under a tag or its digest; return its digest.

        Every child it references must already be in the store.
        """
        ...

    async def list_tags(self, repo: str) -> list[str]:
        """Every tag of ``repo``, sorted; empty when the repository does not exist."""
        ...

    async def list_repositories(self) -> list[str]:
        """Every repository under the target's prefix (without the prefix), sorted.

        Registries may refuse this (``/v2/_catalog`` is often disabled);
        they raise :class:`~oci_pypi_sync.errors.RegistryError` then.
        """
        ...

    async def aclose(self) -> None:
        """Release connections and locks."""
        ...


# --- capabilities -----------------------------------------------------------------


class MountsBlobs(ABC):
    """Repositories that can take a blob from another repository of the same target."""

    @abstractmethod
    async def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Mount the blob ``from_repo`` holds into ``repo``; ``False`` when it could not."""


class ListsRepositoriesWithin(ABC):
    """A repository listing read page by page (a registry's catalog)."""

    @abstractmethod
    async def repositories_within(self, pages: int) -> frozenset[str] | None:
        """Repositories under the prefix if they are listed in ``pages`` pages or fewer.

        ``None`` when the listing is longer: a caller weighing one request
        per repository it cares about against the pages stops there.
        """


class StatsBlobs(ABC):
    """A blob's presence and size, without reading it."""

    @abstractmethod
    async def stat_blob(self, repo: str, digest: str) -> BlobStat | None:
        """The blob's size as the store reports it; ``None`` when it is absent."""


class HashesBlobs(ABC):
    """Blobs cheap to read back in full (on local disk), hashed off the event loop."""

    @abstractmethod
    async def hash_blob(self, repo: str, digest: str) -> tuple[int, str] | None:
        """Size and ``sha256:`` digest of the stored bytes; ``None`` when the blob is absent."""


class ReadsRanges(ABC):
    """A byte range of a blob, read without the bytes before it."""

    @abstractmethod
    def read_range(
        self, repo: str, digest: str, start: int, stop: int | None
    ) -> AsyncGenerator[bytes, None]:
        """Bytes ``start`` to ``stop`` (exclusive; ``None``: to the end), unverified."""


class DiscardsBlobs(ABC):
    """Stored bytes can be dropped (a corrupt blob, so that it can be written again)."""

    @abstractmethod
    async def discard_blob(self, repo: str, digest: str) -> None:
        """Remove the blob (and a manifest stored as one) if present."""


class KnowsTagDigests(ABC):
    """Every tag's digest known in one cheap read (a layout's ``index.json``)."""

    @abstractmethod
    def tag_digests(self) -> Mapping[str, Mapping[str, str]]:
        """Repository -> tag -> the digest the tag names (even when that manifest is gone)."""

    @abstractmethod
    def format1_refs(self) -> Mapping[str, tuple[str, str]]:
        """Ref names still in format 1's ``<repository>:<tag>`` form, with what they name."""


class EditsLayoutRefs(ABC):
    """Tags a layout's ``index.json`` names, taken out or renamed (format migration)."""

    @abstractmethod
    async def untag(self, repo: str, tag: str) -> bool:
        """Take a tag out (its blobs stay); whether it was there."""

    @abstractmethod
    async def rename_format1_refs(self) -> Mapping[str, tuple[str, str]]:
        """Rename every format-1 ref name to format 2's form; those renamed."""


class UpdatesTagsAtomically(ABC):
    """A tag read, merged and written with no other writer in between (a locked file)."""

    @abstractmethod
    async def update_tag(self, repo: str, tag: str, media_type: str, merge: TagMerge) -> str | None:
        """Tag what ``merge`` makes of the current manifest; the digest now tagged.

        ``None`` when the tag is absent and ``merge`` left it so. Every child
        of the merged manifest must already be stored.
        """


class CommitsTags(ABC):
    """Tags written are committed at once but shown to other tools later (a layout's
    write-ahead log, folded into ``index.json``)."""

    @abstractmethod
    def commit(self) -> None:
        """Make every tag committed so far visible to other tools reading the target."""


class ListsReferrers(ABC):
    """A store that may list referrers itself (a registry with the OCI 1.1 referrers API).

    Stores without this capability (layouts, tars) find referrers only
    through the ``sha256-<hex>`` fallback tag, which the writer keeps.
    """

    @abstractmethod
    async def put_referrer(self, repo: str, digest: str, media_type: str, body: bytes) -> bool:
        """Store a manifest that has a ``subject``, by digest.

        ``True`` when the store lists it among its subject's referrers
        itself, ``False`` when the fallback tag must list it.
        """


@dataclass(frozen=True, slots=True)
class BlobFile:
    """Where a blob's bytes lie on the local disk: ``size`` bytes of ``path`` from ``offset``."""

    path: Path
    offset: int
    size: int


class LocalBlobFiles(ABC):
    """A store whose blobs are regions of local files (a layout, a packed layout).

    Whoever reads them may then read, hash and seek on the file directly
    instead of streaming through :meth:`Store.open_blob`.
    """

    @abstractmethod
    def blob_file(self, digest: str) -> BlobFile | None:
        """The blob's file region; ``None`` when the store does not have it."""
