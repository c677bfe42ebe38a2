"""Reading a byte range of a blob from any store, as cheaply as the store allows.

The :class:`~oci_pypi_sync.stores.protocols.Store` protocol streams whole blobs.
Serving ``Range`` requests (and large files without blocking the event
loop) wants more, so this adapter reads directly where it can: a layout's
blob file is read in a thread from the offset; a registry is asked for the
range (``Range`` on ``GET /v2/<name>/blobs/<digest>``, through the
registry store's authenticated request plumbing) and, when it answers 200
instead of 206, the stream is skipped to the offset. Any other store is
read from the start and skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import BinaryIO

from oci_pypi_sync.errors import LayoutError
from oci_pypi_sync.stores.http import TransportError
from oci_pypi_sync.stores.layout import LayoutStore
from oci_pypi_sync.stores.protocols import Store
from oci_pypi_sync.stores.registry import RegistryStore, describe_transport_error, repository_name

CHUNK = 256 << 10


async def read_blob(
    store: Store, repo: str, digest: str, start: int = 0, stop: int | None = None
) -> AsyncGenerator[bytes, None]:
    """Yield the blob's bytes ``start`` to ``stop`` (exclusive; ``None``: to the end)."""
    if isinstance(store, LayoutStore):
        source = _layout_range(store, digest, start, stop)
    elif isinstance(store, RegistryStore) and (start or stop is not None):
        source = _registry_range(store, repo, digest, start, stop)
    else:
        source = _skip(store.open_blob(repo, digest), start, stop)
    async with aclosing(source) as chunks:
        async for chunk in chunks:
            yield chunk


async def read_blob_bytes(store: Store, repo: str, digest: str) -> bytes:
    """A small blob (core metadata) in memory."""
    return b"".join([chunk async for chunk in read_blob(store, repo, digest)])


async def _layout_range(
    store: LayoutStore, digest: str, start: int, stop: int | None
) -> AsyncGenerator[bytes, None]:
    path = store.blob_path(digest)
    try:
        handle: BinaryIO = await asyncio.to_thread(path.open, "rb")
    except FileNotFoundError as exc:
        raise LayoutError(f"{store.display_name} has no blob {digest}") from exc
    try:
        await asyncio.to_thread(handle.seek, start)
        left = None if stop is None else stop - start
        while left is None or left > 0:
            size = CHUNK if left is None else min(CHUNK, left)
            chunk = await asyncio.to_thread(handle.read, size)
            if not chunk:
                break
            if left is not None:
                left -= len(chunk)
            yield chunk
    finally:
        handle.close()


async def _registry_range(
    store: RegistryStore, repo: str, digest: str, start: int, stop: int | None
) -> AsyncGenerator[bytes, None]:
    name = repository_name(store.prefix, repo)
    wanted = f"bytes={start}-" + ("" if stop is None else str(stop - 1))
    response = await store._send(  # the store's auth and error plumbing, with a Range header
        "GET",
        store._url(name, "blobs", digest),
        headers={"Range": wanted, "Accept-Encoding": "identity"},
        stream=True,
        follow_redirects=True,
    )
    try:
        if response.status_code == 206:
            body = _limit(response.aiter_bytes(), None if stop is None else stop - start)
        elif response.status_code == 200:
            body = _skip(response.aiter_bytes(), start, stop)
        else:
            raise await store._failure(response, "blob", f"{name}@{digest}")
        try:
            async with aclosing(body) as chunks:
                async for chunk in chunks:
                    yield chunk
        except TransportError as exc:
            raise describe_transport_error(store.host, exc) from exc
    finally:
        await response.aclose()


async def _limit(chunks: AsyncIterator[bytes], length: int | None) -> AsyncGenerator[bytes, None]:
    """At most ``length`` bytes of a stream (all of it for ``None``)."""
    async for chunk in chunks:
        if length is not None:
            chunk = chunk[:length]
            length -= len(chunk)
        if chunk:
            yield chunk
        if length == 0:
            return


async def _skip(
    chunks: AsyncIterator[bytes], start: int, stop: int | None
) -> AsyncGenerator[bytes, None]:
    """Pass through bytes ``start`` to ``stop`` of a stream read from its beginning."""
    position = 0
    try:
        async for chunk in chunks:
            end = position + len(chunk)
            low = max(0, start - position)
            high = None if stop is None else max(0, stop - position)
            position = end
            if piece := chunk[low:high]:
                yield piece
            if stop is not None and position >= stop:
                break
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
