"""The interface every target (a registry, an OCI image layout) implements.

The sync engine writes only through this protocol, in the order blobs ->
manifests -> tagged index, so a tag never points at missing children. A
store never keeps bytes under a digest they do not have: ``put_blob``
verifies the digest and size of what it received before the blob becomes
visible, and raises :class:`~oci_pypi_sync.errors.DigestMismatchError` or
:class:`~oci_pypi_sync.errors.SizeMismatchError` otherwise.

``repo`` is the repository name relative to the target's prefix (the
normalized project name); each store adds its prefix itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class StoredManifest:
    """A manifest or index as a store holds it."""

    media_type: str
    digest: str
    body: bytes


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


@runtime_checkable
class ReferrersApi(Protocol):
    """A store that may list referrers itself (a registry with the OCI 1.1 referrers API).

    Stores without this capability (layouts, tars) find referrers only
    through the ``sha256-<hex>`` fallback tag, which the writer keeps.
    """

    async def put_referrer(self, repo: str, digest: str, media_type: str, body: bytes) -> bool:
        """Store a manifest that has a ``subject``, by digest.

        ``True`` when the store lists it among its subject's referrers
        itself, ``False`` when the fallback tag must list it.
        """
        ...


@dataclass(frozen=True, slots=True)
class BlobFile:
    """Where a blob's bytes lie on the local disk: ``size`` bytes of ``path`` from ``offset``."""

    path: Path
    offset: int
    size: int


@runtime_checkable
class LocalBlobFiles(Protocol):
    """A store whose blobs are regions of local files (a layout, a packed layout).

    Whoever reads them may then read, hash and seek on the file directly
    instead of streaming through :meth:`Store.open_blob`.
    """

    def blob_file(self, digest: str) -> BlobFile | None:
        """The blob's file region; ``None`` when the store does not have it."""
        ...
