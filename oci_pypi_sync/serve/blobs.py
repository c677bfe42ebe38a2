"""Reading a byte range of a blob from any store, as cheaply as the store allows.

The :class:`~oci_pypi_sync.stores.protocols.Store` protocol streams whole blobs.
Serving ``Range`` requests (and large files without blocking the event
loop) wants more: a store that declares
:class:`~oci_pypi_sync.stores.protocols.ReadsRanges` (a layout reads its
blob file in a thread from the offset, a registry is asked for the range)
reads only what is asked; any other store, and every whole blob, is
streamed from the start (and skipped to the range).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from oci_pypi_sync.stores.protocols import ReadsRanges, Store
from oci_pypi_sync.stores.streams import skip_stream


async def read_blob(
    store: Store, repo: str, digest: str, start: int = 0, stop: int | None = None
) -> AsyncGenerator[bytes, None]:
    """Yield the blob's bytes ``start`` to ``stop`` (exclusive; ``None``: to the end)."""
    source: AsyncGenerator[bytes, None]
    if (start or stop is not None) and isinstance(store, ReadsRanges):
        source = store.read_range(repo, digest, start, stop)
    else:
        source = skip_stream(store.open_blob(repo, digest), start, stop)
    async with aclosing(source) as chunks:
        async for chunk in chunks:
            yield chunk


async def read_blob_bytes(store: Store, repo: str, digest: str) -> bytes:
    """A small blob (core metadata) in memory."""
    return b"".join([chunk async for chunk in read_blob(store, repo, digest)])
