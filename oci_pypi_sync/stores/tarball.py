"""An OCI image layout packed in one ``.tar`` file: what crosses an air gap.

Reading never unpacks: the members are indexed once (name -> offset and
size) and a blob is streamed by seeking into the tar file, so a tar of any
size is read with constant memory.

Writing goes into a staging layout beside the tar, ``<name>.tar.staging/``,
and :meth:`TarWriteStore.aclose` packs it deterministically (fixed member
order, mtime, owner and mode) into ``<name>.tar.partial``, then renames that
over ``<name>.tar``. A crash leaves the staging directory, and the next
writer reuses it, so an interrupted copy resumes where it stopped. Writing
into an existing tar first unpacks it into the staging directory (verified
blob by blob), so new content adds to the old.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import io
import os
import shutil
import tarfile
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from oci_pypi_sync.errors import DigestMismatchError, LayoutError
from oci_pypi_sync.format import canonical_json, is_sha256_hex
from oci_pypi_sync.limits import loads_json
from oci_pypi_sync.stores.layout import (
    LAYOUT_FILE,
    LayoutStore,
    Refs,
    check_manifest_size,
    checked_manifest,
    digests_by_repository,
    format1_ref_names,
    read_error,
    refs_in,
    repositories_in,
    tag_digest,
    tags_of,
    write_error,
)
from oci_pypi_sync.stores.layout_refs import INDEX_FILE, LayoutRefs
from oci_pypi_sync.stores.protocols import (
    BlobFile,
    BlobStat,
    HashesBlobs,
    KnowsTagDigests,
    LocalBlobFiles,
    ReadsRanges,
    StatsBlobs,
    StoredManifest,
    TagMerge,
)

__all__ = [
    "STAGING_SUFFIX",
    "TarReadStore",
    "TarWriteStore",
    "is_tar_path",
    "open_tar_store",
    "pack_layout",
    "staging_dir",
]

STAGING_SUFFIX = ".staging"
PARTIAL_SUFFIX = ".partial"
_BLOB_PREFIX = "blobs/sha256/"
_CHUNK = 1 << 20
_WRITER_LOCK = ".writer.lock"


def is_tar_path(path: str | os.PathLike[str]) -> bool:
    """Whether an ``oci:PATH`` target names a packed layout rather than a directory."""
    return str(path).endswith(".tar")


def staging_dir(path: str | os.PathLike[str]) -> Path:
    """Where a tar is assembled before packing: ``<name>.tar.staging`` beside it."""
    tar = Path(path)
    return tar.with_name(tar.name + STAGING_SUFFIX)


def open_tar_store(path: str | os.PathLike[str], *, writable: bool) -> TarReadStore | TarWriteStore:
    """A store over ``path``: read-only (a copy's source, verify) or writable (a destination)."""
    if writable:
        return TarWriteStore(path)
    return TarReadStore(path)


# --- reading ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Member:
    offset: int
    size: int


def _member_name(name: str, tar: Path) -> str:
    """A member's name, normalised; one that could leave the layout is refused.

    A packed layout is crafted by whoever made it (it crosses an air gap):
    an absolute name, a ``..`` component or a NUL is refused outright rather
    than skipped, since no layout this tool or any other writes has one.
    """
    normal = name
    while normal.startswith("./"):
        normal = normal[2:]
    normal = normal.rstrip("/")
    parts = normal.split("/")
    if normal.startswith("/") or "\0" in normal or any(part == ".." for part in parts):
        raise LayoutError(
            f"{tar}: member {name[:120]!r} points outside the layout; refusing this tar"
        )
    return normal


def _blob_name(name: str) -> str | None:
    """The hex digest a member ``blobs/sha256/<hex>`` holds, when its name is exactly that."""
    if not name.startswith(_BLOB_PREFIX):
        return None
    hexdigest = name[len(_BLOB_PREFIX) :]
    return hexdigest if is_sha256_hex(hexdigest) else None


class TarReadStore(StatsBlobs, HashesBlobs, ReadsRanges, LocalBlobFiles, KnowsTagDigests):
    """A packed layout, read in place; every write raises :class:`LayoutError`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._members: dict[str, _Member] = {}
        try:
            with tarfile.open(self.path, mode="r:") as archive:
                for info in archive:
                    name = _member_name(info.name, self.path)
                    if info.isfile():
                        self._members[name] = _Member(info.offset_data, info.size)
        except (OSError, tarfile.TarError) as exc:
            raise LayoutError(f"cannot read {self.path} as a tar file: {exc}") from exc
        try:
            layout = loads_json(self.read_member(LAYOUT_FILE), LAYOUT_FILE)
            version = str(layout["imageLayoutVersion"])
            index = loads_json(self.read_member(INDEX_FILE), INDEX_FILE)
        except (KeyError, ValueError, TypeError) as exc:
            raise LayoutError(f"{self.path} is not a packed OCI image layout: {exc}") from exc
        if not version.startswith("1."):
            raise LayoutError(f"{self.path}: unsupported image layout version {version}")
        if not isinstance(index, dict) or not isinstance(index.get("manifests", []), list):
            raise LayoutError(f"{self.path}: {INDEX_FILE} is not an OCI image index")
        self._index: dict[str, Any] = index

    @property
    def display_name(self) -> str:
        return f"oci:{self.path}"

    def read_member(self, name: str) -> bytes:
        member = self._members.get(name)
        if member is None:
            raise KeyError(name)
        with self.path.open("rb") as handle:
            handle.seek(member.offset)
            return handle.read(member.size)

    def members(self) -> dict[str, _Member]:
        """Regular-file members by normalised name."""
        return self._members

    def _blob_member(self, digest: str) -> _Member | None:
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm != "sha256" or not is_sha256_hex(hexdigest):
            return None
        return self._members.get(_BLOB_PREFIX + hexdigest)

    def blob_file(self, digest: str) -> BlobFile | None:
        """The blob's region of the tar (see :class:`~.protocols.LocalBlobFiles`)."""
        member = self._blob_member(digest)
        return None if member is None else BlobFile(self.path, member.offset, member.size)

    def blob_size(self, digest: str) -> int | None:
        """The stored size of a blob, ``None`` when the tar lacks it."""
        member = self._blob_member(digest)
        return None if member is None else member.size

    async def stat_blob(self, repo: str, digest: str) -> BlobStat | None:
        size = self.blob_size(digest)
        return None if size is None else BlobStat(size)

    async def hash_blob(self, repo: str, digest: str) -> tuple[int, str] | None:
        member = self._blob_member(digest)
        if member is None:
            return None
        return await asyncio.to_thread(self._hash_member, member)

    def _hash_member(self, member: _Member) -> tuple[int, str]:
        hasher = hashlib.sha256()
        count = 0
        with self.path.open("rb") as handle:
            handle.seek(member.offset)
            left = member.size
            while left > 0 and (chunk := handle.read(min(_CHUNK, left))):
                left -= len(chunk)
                count += len(chunk)
                hasher.update(chunk)
        return count, "sha256:" + hasher.hexdigest()

    async def read_range(
        self, repo: str, digest: str, start: int, stop: int | None
    ) -> AsyncGenerator[bytes, None]:
        """Bytes of the blob's member, read in a thread from the offset."""
        member = self._blob_member(digest)
        if member is None:
            raise LayoutError(f"{self.display_name} has no blob {digest}")
        end = member.size if stop is None else min(stop, member.size)
        handle = await asyncio.to_thread(self.path.open, "rb")
        try:
            await asyncio.to_thread(handle.seek, member.offset + start)
            left = end - start
            while left > 0:
                chunk = await asyncio.to_thread(handle.read, min(_CHUNK, left))
                if not chunk:
                    raise LayoutError(f"{self.display_name}: blob {digest} is truncated")
                left -= len(chunk)
                yield chunk
        finally:
            handle.close()

    def read_index(self) -> dict[str, Any]:
        return self._index

    def tags(self) -> Refs:
        """Every ``(repository, tag)`` ``index.json`` names, with its descriptor."""
        return refs_in(self._index)

    def tag_digests(self) -> Mapping[str, Mapping[str, str]]:
        return digests_by_repository(self.tags())

    def format1_refs(self) -> dict[str, tuple[str, str]]:
        return format1_ref_names(self._index)

    async def has_blob(self, repo: str, digest: str) -> bool:
        return self._blob_member(digest) is not None

    async def has_manifest(self, repo: str, digest: str) -> bool:
        return self._blob_member(digest) is not None

    async def open_blob(self, repo: str, digest: str) -> AsyncIterator[bytes]:
        """Stream a blob from its offset in the tar, verifying its digest at the end."""
        hasher = hashlib.sha256()
        async for chunk in self.read_range(repo, digest, 0, None):
            hasher.update(chunk)
            yield chunk
        actual = "sha256:" + hasher.hexdigest()
        if actual != digest:
            raise DigestMismatchError(f"{self.display_name} blob {digest}", digest, actual)

    async def get_manifest(self, repo: str, reference: str) -> StoredManifest | None:
        # a digest is looked up directly; only a tag needs the tag list
        digest = reference if ":" in reference else tag_digest(self.tags(), repo, reference)
        if digest is None:
            return None
        member = self._blob_member(digest)
        if member is None:
            return None
        check_manifest_size(self.display_name, digest, member.size)
        body = self.read_member(_BLOB_PREFIX + digest.partition(":")[2])
        return checked_manifest(self.display_name, digest, body)

    async def list_tags(self, repo: str) -> list[str]:
        return tags_of(self.tags(), repo)

    async def list_repositories(self) -> list[str]:
        return repositories_in(self.tags())

    def _read_only(self) -> LayoutError:
        return LayoutError(f"{self.display_name} is opened read-only")

    async def put_blob(
        self,
        repo: str,
        digest: str,
        size: int | None,
        chunks: AsyncIterable[bytes],
        *,
        reopen: Callable[[], AsyncIterable[bytes]] | None = None,
    ) -> bool:
        raise self._read_only()

    async def put_blob_bytes(self, repo: str, digest: str, data: bytes) -> bool:
        raise self._read_only()

    async def put_manifest(self, repo: str, reference: str, media_type: str, body: bytes) -> str:
        raise self._read_only()

    async def aclose(self) -> None:
        return None


# --- writing ------------------------------------------------------------------


class TarWriteStore(LayoutStore):
    """A layout staged in ``<name>.tar.staging`` and packed into ``<name>.tar`` on close.

    One writer at a time: the staging directory is locked while the store
    is open. :meth:`aclose` packs and removes the staging directory;
    :meth:`abandon` keeps it (for a later run to resume) without packing.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.tar_path = Path(path)
        staging = staging_dir(self.tar_path)
        try:
            staging.mkdir(parents=True, exist_ok=True)
            handle = (staging / _WRITER_LOCK).open("a")
        except OSError as exc:
            raise write_error(f"oci:{self.tar_path}", exc) from exc
        self._lock_handle: IO[str] | None = handle
        try:
            fcntl.flock(self._lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock_handle.close()
            self._lock_handle = None
            raise LayoutError(f"{staging} is in use by another writer") from exc
        try:
            # A pack cut short by a crash; only a writer holding the lock packs.
            _partial(self.tar_path).unlink(missing_ok=True)
            # ``oci-layout`` is written last, so its presence means a usable staging layout.
            resumed = (staging / LAYOUT_FILE).is_file()
            if not resumed:
                for entry in staging.iterdir():
                    if entry.name != _WRITER_LOCK:
                        _remove(entry)
                if self.tar_path.exists():
                    _unpack(TarReadStore(self.tar_path), staging)
            super().__init__(staging, create=True)
        except BaseException:
            self._release()
            raise
        # Pack on close when there is anything the tar does not hold yet.
        self._dirty = resumed or not self.tar_path.exists()

    @property
    def display_name(self) -> str:
        return f"oci:{self.tar_path}"

    async def put_blob(
        self,
        repo: str,
        digest: str,
        size: int | None,
        chunks: AsyncIterable[bytes],
        *,
        reopen: Callable[[], AsyncIterable[bytes]] | None = None,
    ) -> bool:
        self._dirty = True
        return await super().put_blob(repo, digest, size, chunks, reopen=reopen)

    async def put_blob_bytes(self, repo: str, digest: str, data: bytes) -> bool:
        self._dirty = True
        return await super().put_blob_bytes(repo, digest, data)

    async def put_manifest(self, repo: str, reference: str, media_type: str, body: bytes) -> str:
        self._dirty = True
        return await super().put_manifest(repo, reference, media_type, body)

    async def update_tag(self, repo: str, tag: str, media_type: str, merge: TagMerge) -> str | None:
        before = self.tagged(repo, tag)
        after = await super().update_tag(repo, tag, media_type, merge)
        if after != before:
            self._dirty = True
        return after

    async def discard_blob(self, repo: str, digest: str) -> None:
        """Remove a blob (a corrupt one, before it is written again)."""
        self._dirty = True
        await super().discard_blob(repo, digest)

    async def aclose(self) -> None:
        """Pack the staging layout into the tar atomically, then remove the staging directory."""
        if self._lock_handle is None:
            return
        try:
            try:
                self.commit()  # index.json complete before it is packed
            finally:
                self._close_scratch()
            if self._dirty:
                self._created()
                try:
                    pack_layout(self.path, self.tar_path)
                except OSError as exc:
                    raise write_error(self.display_name, exc) from exc
            shutil.rmtree(self.path, ignore_errors=True)
        finally:
            self._release()

    def abandon(self) -> None:
        """Close without packing; the staging directory stays for the next writer to resume."""
        self._close_scratch()
        self._release()

    def _release(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None


def _tarinfo(name: str, *, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if directory:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.mode = 0o644
        info.size = size
    return info


def pack_layout(layout: str | os.PathLike[str], tar_path: str | os.PathLike[str]) -> None:
    """Pack a layout directory into a tar, byte for byte the same for the same content.

    Order: ``oci-layout``, ``index.json``, ``blobs/``, ``blobs/sha256/``, then
    blobs by name; mtime 0, owner 0:0 without names, modes 0644/0755. Only
    these members are packed (no temporary or lock files). Written to
    ``.partial``, synced, then renamed, so the tar is either old or new.
    """
    root = Path(layout)
    tar = Path(tar_path)
    partial = _partial(tar)
    blobs = root / "blobs" / "sha256"
    names = sorted(
        entry.name for entry in blobs.iterdir() if entry.is_file() and is_sha256_hex(entry.name)
    )
    try:
        with partial.open("wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:", format=tarfile.PAX_FORMAT) as archive:
                path = root / LAYOUT_FILE
                with path.open("rb") as handle:
                    archive.addfile(_tarinfo(LAYOUT_FILE, size=path.stat().st_size), handle)
                _add_index(archive, root)
                archive.addfile(_tarinfo("blobs", directory=True))
                archive.addfile(_tarinfo("blobs/sha256", directory=True))
                for name in names:
                    path = blobs / name
                    with path.open("rb") as handle:
                        info = _tarinfo(_BLOB_PREFIX + name, size=os.fstat(handle.fileno()).st_size)
                        archive.addfile(info, handle)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, tar)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _add_index(archive: tarfile.TarFile, root: Path) -> None:
    """``index.json`` with every committed tag: its write-ahead log folded in, if it has one."""
    refs = LayoutRefs(root, read_error)
    try:
        refs.refresh()
        if refs.has_log():
            out = io.BytesIO()
            refs.write_folded(out)
            archive.addfile(_tarinfo(INDEX_FILE, size=out.tell()), io.BytesIO(out.getvalue()))
            return
    finally:
        refs.close()
    path = root / INDEX_FILE
    with path.open("rb") as handle:
        archive.addfile(_tarinfo(INDEX_FILE, size=os.fstat(handle.fileno()).st_size), handle)


def _partial(tar: Path) -> Path:
    """Where a tar is packed before it is renamed over the old one."""
    return tar.with_name(tar.name + PARTIAL_SUFFIX)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _inside(root: Path, path: Path) -> Path:
    """``path``, after checking that it resolves to a place under ``root``."""
    if not path.resolve().is_relative_to(root.resolve()):
        raise LayoutError(f"{path} resolves outside {root}; refusing to write it")
    return path


def _unpack(source: TarReadStore, staging: Path) -> None:
    """Seed a staging layout from a tar, each blob verified; ``oci-layout`` last.

    Only members named ``blobs/sha256/<64 hex>`` are written, each to a path
    checked to resolve inside the staging directory before it is opened.
    """
    blobs = staging / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for name, member in sorted(source.members().items()):
        hexdigest = _blob_name(name)
        if hexdigest is None:
            continue
        tmp = _inside(staging, staging / (hexdigest + PARTIAL_SUFFIX))
        final = _inside(staging, blobs / hexdigest)
        hasher = hashlib.sha256()
        with source.path.open("rb") as handle, tmp.open("wb") as out:
            handle.seek(member.offset)
            left = member.size
            while left > 0:
                chunk = handle.read(min(_CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                hasher.update(chunk)
                out.write(chunk)
        actual = "sha256:" + hasher.hexdigest()
        if actual != "sha256:" + hexdigest:
            tmp.unlink(missing_ok=True)
            raise DigestMismatchError(
                f"{source.display_name} blob sha256:{hexdigest}", "sha256:" + hexdigest, actual
            )
        os.replace(tmp, final)
    (staging / INDEX_FILE).write_bytes(canonical_json(source.read_index()))
    (staging / LAYOUT_FILE).write_bytes(source.read_member(LAYOUT_FILE))
