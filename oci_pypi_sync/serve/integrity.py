"""Serving only verified bytes: no response completes with bytes that fail their digest.

A file's URL names its sha256, and its response is cached for a year as
immutable, so the server must never complete one with other bytes. How it
makes sure depends on where the blob lies:

- a blob in a local file (a layout's blob, a region of a packed layout) is
  hashed before its first byte is served; the verdict is kept by the
  file's identity (device, inode, size, modification time), so the file is
  hashed once, and again only when it changed. A blob that fails is
  answered with an error status before any byte goes out;
- a blob streamed from a registry (or any other store) is hashed as it
  streams, and its last chunk is held back until the digest checks: on a
  mismatch the response is cut short, so no client ever has a complete
  200. A range of it is served from a read of the whole blob, checked the
  same way, unless the whole blob passed within :data:`REMOTE_TRUST`
  seconds; only then, and for local files, is the response marked
  immutable before it starts (:attr:`Blob.verified`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import BinaryIO

from oci_pypi_sync.engine.flight import SingleFlight
from oci_pypi_sync.errors import DigestMismatchError, LayoutError, SizeMismatchError
from oci_pypi_sync.serve.blobs import read_blob
from oci_pypi_sync.serve.view import Lru
from oci_pypi_sync.stores.protocols import BlobFile, LocalBlobFiles, Store

logger = logging.getLogger(__name__)

CHUNK = 256 << 10
#: Verdicts on local blob files kept (a few hundred bytes each).
LOCAL_VERDICTS = 100_000
#: Remote blobs remembered as verified, and for how long (seconds).
REMOTE_VERIFIED = 100_000
REMOTE_TRUST = 3600.0

#: What identifies a local file's content without reading it.
FileKey = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class Blob:
    """A blob ready to serve: ``verified`` when its bytes were checked before the first byte.

    :meth:`read` yields bytes ``start`` to ``stop`` (exclusive; ``None``: to
    the end) and raises before its last byte when they fail their digest.
    """

    verified: bool
    read: Callable[[int, int | None], AsyncGenerator[bytes, None]]


class VerifiedBlobs:
    """Opens blobs of one store for serving, checked as this module says; one per app."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._clock = clock
        # (file identity, region, digest) -> the digest the region really has.
        self._local: Lru[tuple[FileKey, BlobFile, str], str] = Lru(LOCAL_VERDICTS)
        self._remote: Lru[tuple[str, str], float] = Lru(REMOTE_VERIFIED)
        self._hashing: SingleFlight[tuple[FileKey, BlobFile, str]] = SingleFlight()

    async def open(self, repo: str, digest: str) -> Blob:
        """The blob, checked already if it is local (a mismatch raises here, before a byte)."""
        store = self.store
        if isinstance(store, LocalBlobFiles):
            return await self._open_local(store, digest)
        trusted = self._remote.get((repo, digest))
        verified = trusted is not None and trusted > self._clock()

        def read(start: int, stop: int | None) -> AsyncGenerator[bytes, None]:
            if verified and (start or stop is not None):
                return read_blob(store, repo, digest, start, stop)  # a ranged read
            return self._streamed(repo, digest, start, stop)

        return Blob(verified, read)

    # --- local files ---------------------------------------------------------------------

    async def _open_local(self, store: LocalBlobFiles, digest: str) -> Blob:
        where = self.store.display_name
        location = await asyncio.to_thread(store.blob_file, digest)
        if location is None:
            raise LayoutError(f"{where} has no blob {digest}")
        key = (await asyncio.to_thread(_path_key, location), location, digest)
        actual = self._local.get(key)
        if actual is None:
            actual = await self._hashing.run(key, lambda: self._hash(key))
        if actual != digest:
            raise DigestMismatchError(f"{where} blob {digest}", digest, actual)

        async def read(start: int, stop: int | None) -> AsyncGenerator[bytes, None]:
            handle = await asyncio.to_thread(location.path.open, "rb")
            try:
                if _file_key(handle) != key[0]:  # replaced since it was checked: start over
                    raise LayoutError(f"{where}: blob {digest} changed while it was served")
                end = location.size if stop is None else min(stop, location.size)
                await asyncio.to_thread(handle.seek, location.offset + start)
                left = end - start
                while left > 0:
                    chunk = await asyncio.to_thread(handle.read, min(CHUNK, left))
                    if not chunk:
                        raise LayoutError(f"{where}: blob {digest} is shorter than its file says")
                    left -= len(chunk)
                    yield chunk
            finally:
                handle.close()

        return Blob(True, read)

    async def _hash(self, key: tuple[FileKey, BlobFile, str]) -> str:
        """Hash the file region; keep the result when the file did not change meanwhile."""
        file_key, location, digest = key
        hashed_key, actual = await asyncio.to_thread(_hash_region, location)
        if hashed_key == file_key:
            self._local.put(key, actual)
        if actual != digest:
            logger.error(
                "%s: blob %s holds other bytes (%s); `oci-pypi verify --repair` mends it",
                self.store.display_name,
                digest,
                actual,
            )
        return actual

    # --- streamed blobs --------------------------------------------------------------------

    async def _streamed(
        self, repo: str, digest: str, start: int, stop: int | None
    ) -> AsyncGenerator[bytes, None]:
        """Bytes ``start`` to ``stop`` of a blob read whole, the last piece held until it checks."""
        hasher = hashlib.sha256()
        position = 0
        held: bytes | None = None
        async with aclosing(read_blob(self.store, repo, digest)) as chunks:
            async for chunk in chunks:
                hasher.update(chunk)
                low = max(0, start - position)
                high = len(chunk) if stop is None else max(0, min(len(chunk), stop - position))
                position += len(chunk)
                piece = chunk[low:high]
                if piece:
                    if held is not None:
                        yield held
                    held = piece
        actual = "sha256:" + hasher.hexdigest()
        what = f"{self.store.display_name} blob {repo}@{digest}"
        if actual != digest:
            logger.error(
                "%s: blob %s of %s holds other bytes (%s); response cut short; "
                "`oci-pypi verify --repair` mends it",
                self.store.display_name,
                digest,
                repo,
                actual,
            )
            raise DigestMismatchError(what, digest, actual)
        if stop is not None and position < stop:
            raise SizeMismatchError(what, stop, position)
        self._remote.put((repo, digest), self._clock() + REMOTE_TRUST)
        if held is not None:
            yield held


def _path_key(location: BlobFile) -> FileKey:
    stat = location.path.stat()
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _file_key(handle: BinaryIO) -> FileKey:
    stat = os.fstat(handle.fileno())
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _hash_region(location: BlobFile) -> tuple[FileKey, str]:
    """The identity of the file, and the sha256 digest of the region, read in a thread."""
    hasher = hashlib.sha256()
    with location.path.open("rb") as handle:
        key = _file_key(handle)
        handle.seek(location.offset)
        left = location.size
        while left > 0:
            chunk = handle.read(min(1 << 20, left))
            if not chunk:
                break
            left -= len(chunk)
            hasher.update(chunk)
    return key, "sha256:" + hasher.hexdigest()
