"""An OCI image layout on disk as a :class:`~oci_pypi_sync.stores.protocols.Store`.

One layout holds every project: blobs are shared under ``blobs/sha256``,
and ``index.json`` lists each tagged index with an
``org.opencontainers.image.ref.name`` of ``<repository>/<tag>`` (format 1
wrote ``<repository>:<tag>``: read too, and renamed whenever ``index.json``
is rewritten). Entries without a ref name (the ORAS CLI adds one per child
manifest it stores) or with one of another shape are kept and ignored. Blobs are
written to a temporary file, verified, then renamed into place, so a blob
path always holds bytes with that digest. A tag change is one line
appended to ``index.json``'s write-ahead log under a file lock, so
concurrent writers never lose a tag and a tag costs the same in a layout
of any size; the log is folded into ``index.json`` (replaced atomically)
when it grows large and when a writer closes (see :mod:`.layout_refs`).
Temporary files live in a directory of the writing process's own (see
:mod:`.scratch`): a writer removes its own when it closes, and what a dead
writer left when it opens.

A file system that refuses writes (full, read-only, not ours) raises
:class:`~oci_pypi_sync.errors.TargetWriteError`, which stops a run; one
that cannot be read raises :class:`~oci_pypi_sync.errors.LayoutError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import os
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterator,
    Mapping,
)
from pathlib import Path
from typing import Any, BinaryIO

from oci_pypi_sync.errors import (
    DigestMismatchError,
    LayoutError,
    LayoutLimitError,
    SizeMismatchError,
    TargetError,
    TargetWriteError,
)
from oci_pypi_sync.format import (
    OCI_INDEX,
    OCI_MANIFEST,
    REF_NAME,
    canonical_json,
    is_format1_ref_name,
    is_referrers_tag,
    is_sha256_hex,
    layout_ref_name,
    parse_layout_ref_name,
)
from oci_pypi_sync.limits import MAX_MANIFEST_BYTES, exceeded, loads_json
from oci_pypi_sync.stores.layout_lines import Change, Entry, empty_index, ref_name
from oci_pypi_sync.stores.layout_refs import INDEX_FILE, LayoutRefs
from oci_pypi_sync.stores.protocols import (
    BlobFile,
    BlobStat,
    CommitsTags,
    DiscardsBlobs,
    EditsLayoutRefs,
    HashesBlobs,
    KnowsTagDigests,
    LocalBlobFiles,
    ReadsRanges,
    StatsBlobs,
    StoredManifest,
    TagMerge,
    UpdatesTagsAtomically,
)
from oci_pypi_sync.stores.scratch import Scratch, remove_abandoned

LAYOUT_FILE = "oci-layout"
LAYOUT_VERSION = "1.0.0"
_LOCK_FILE = ".lock"
_CHUNK = 1 << 20
#: Write failures after which no other write could succeed, and what to do about each.
_REFUSED_WRITES = {
    errno.ENOSPC: "free some space there, or choose another target",
    errno.EDQUOT: "free some space there (the disk quota is reached), or choose another target",
    errno.EROFS: "the file system is read-only: choose a writable target",
    errno.EACCES: "this user may not write there: fix the permissions, or run as its owner",
    errno.EPERM: "this user may not write there: fix the permissions, or run as its owner",
}


def write_error(where: str, exc: OSError) -> TargetError:
    """The error for a failed write into a layout: fatal when every other write would fail too."""
    reason = exc.strerror or str(exc)
    hint = _REFUSED_WRITES.get(exc.errno or 0)
    if hint is not None:
        return TargetWriteError(f"cannot write to {where} ({reason}): {hint}")
    if exc.errno == errno.EFBIG:
        hint = "a file is larger than the file system or this process's file-size limit allows"
        return LayoutError(f"cannot write to {where} ({reason}): {hint}")
    return LayoutError(f"cannot write to {where}: {reason}")


def read_error(path: Path, exc: OSError) -> LayoutError:
    """The error for a layout file that cannot be read, saying what to do."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return LayoutError(
            f"cannot read {path} ({reason}): run as a user who may read the layout, "
            "or fix its permissions"
        )
    return LayoutError(f"cannot read {path}: {reason}")


#: ``(repository, tag)`` -> the ``index.json`` entry tagging it.
Refs = dict[tuple[str, str], dict[str, Any]]


class LayoutStore(
    StatsBlobs,
    HashesBlobs,
    ReadsRanges,
    LocalBlobFiles,
    DiscardsBlobs,
    KnowsTagDigests,
    EditsLayoutRefs,
    UpdatesTagsAtomically,
    CommitsTags,
):
    """A directory in the OCI image-layout format; created on first use.

    Its tags change under an exclusive ``flock``, so a tag is read, merged
    and written with no other writer in between (:meth:`update_tag`), in
    this process or another. A store opened with ``create`` is a writer: it
    folds the write-ahead log into ``index.json`` when it closes.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        self._writer = create
        self._appended = False  # this store changed a tag
        self._index_lock = asyncio.Lock()
        self._refs = LayoutRefs(self.path, read_error)
        # The tags of the whole index, for as long as it is the same parsed document.
        self._tags_cache: tuple[dict[str, Any], Refs] | None = None
        try:
            self._exists = self._validate(create)
        except OSError as exc:
            raise read_error(Path(exc.filename or self.path), exc) from exc
        self._scratch = Scratch(self.path)
        if create and self._exists:
            remove_abandoned(self.path)  # a writer starts by sweeping up after dead ones

    def _validate(self, create: bool) -> bool:
        """Check an existing layout; a missing one is made on the first write."""
        layout_file = self.path / LAYOUT_FILE
        if not layout_file.is_file():
            if not create:
                raise LayoutError(f"{self.path} is not an OCI image layout (no {LAYOUT_FILE} file)")
            if self.path.exists() and not self.path.is_dir():
                raise LayoutError(f"{self.path} exists and is not a directory")
            if self._skeleton():
                return False
            # Another writer can finish making the layout between the two looks.
            if not layout_file.is_file():
                raise LayoutError(
                    f"{self.path} is a non-empty directory without an {LAYOUT_FILE} file; "
                    "refusing to write a layout into it"
                )
        try:
            version = json.loads(layout_file.read_bytes())["imageLayoutVersion"]
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise LayoutError(f"{layout_file} is not a valid oci-layout file") from exc
        if not str(version).startswith("1."):
            raise LayoutError(f"{self.path}: unsupported image layout version {version}")
        return True

    def _skeleton(self) -> bool:
        """Whether the directory is missing, empty, or only what :meth:`_create` writes
        before the ``oci-layout`` file: another writer making the layout right now,
        or one that stopped half-way. Anything else is not ours to write into."""
        try:
            entries = {e.name for e in self.path.iterdir() if not e.name.startswith(".")}
            if not entries <= {"blobs", INDEX_FILE}:
                return False
            if "blobs" in entries:
                blobs = self.path / "blobs"
                if not {e.name for e in blobs.iterdir()} <= {"sha256"}:
                    return False
                if (blobs / "sha256").is_dir() and any((blobs / "sha256").iterdir()):
                    return False
            if INDEX_FILE in entries:
                index = json.loads((self.path / INDEX_FILE).read_bytes())
                return isinstance(index, dict) and not index.get("manifests")
        except FileNotFoundError:
            return True
        except (OSError, ValueError, RecursionError):
            return False
        return True

    def _created(self) -> None:
        if not self._exists:
            self._create()
            self._exists = True

    @property
    def display_name(self) -> str:
        return f"oci:{self.path}"

    # --- layout files ------------------------------------------------------

    def _create(self) -> None:
        """Write the layout's skeleton, unless another writer just did (checked under the lock)."""
        layout_file = self.path / LAYOUT_FILE
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with self._locked():
                if layout_file.is_file():
                    return
                (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
                _atomic_write(self.path / INDEX_FILE, empty_index(), self._scratch)
                _atomic_write(
                    layout_file,
                    canonical_json({"imageLayoutVersion": LAYOUT_VERSION}),
                    self._scratch,
                )
        except OSError as exc:
            raise write_error(f"a new OCI image layout at {self.path}", exc) from exc

    def blob_path(self, digest: str) -> Path:
        """Where a blob lives; the digest is checked against the grammar before any path is made."""
        return self.path / "blobs" / "sha256" / blob_hex(digest)

    def blob_file(self, digest: str) -> BlobFile | None:
        """The blob's file, whole (see :class:`~oci_pypi_sync.stores.protocols.LocalBlobFiles`)."""
        path = self.blob_path(digest)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise read_error(path, exc) from exc
        return BlobFile(path, 0, size)

    def _view(self) -> LayoutRefs | None:
        """The layout's tags, caught up with the files; ``None`` before the layout exists."""
        if not self._exists:
            if not (self.path / LAYOUT_FILE).is_file():
                return None
            self._exists = True  # another writer created it since
        self._refs.refresh()
        return self._refs

    def read_index(self) -> dict[str, Any]:
        """The layout's ``index.json`` with every committed tag (an empty index before the
        first write); a copy."""
        view = self._view()
        if view is None:
            return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        data = view.document()
        return {**data, "manifests": list(data.get("manifests", []))}

    def tags(self) -> Refs:
        """Every ``(repository, tag)`` the index names, with its descriptor."""
        view = self._view()
        if view is None:
            return {}
        document = view.document()
        if self._tags_cache is None or self._tags_cache[0] is not document:
            self._tags_cache = (document, refs_in(document))
        return dict(self._tags_cache[1])

    def tagged(self, repo: str, tag: str) -> str | None:
        """The digest ``repo:tag`` names (one lookup, not a read of every tag)."""
        view = self._view()
        entry = None if view is None else view.lookup(repo, tag)
        return None if entry is None else entry_digest(entry, repo, tag)

    def tag_digests(self) -> Mapping[str, Mapping[str, str]]:
        return digests_by_repository(self.tags())

    def format1_refs(self) -> dict[str, tuple[str, str]]:
        return format1_ref_names(self.read_index())

    async def rename_format1_refs(self) -> dict[str, tuple[str, str]]:
        """Rename every format-1 ref name to ``<repository>/<tag>``; those renamed, parsed."""
        renamed = format1_ref_names(self.read_index())
        if renamed:
            async with self._index_lock:
                with self._locked():
                    self._refs.refresh()
                    self._fold(rename=True)
        return renamed

    async def untag(self, repo: str, tag: str) -> bool:
        """Take a tag out of the index (its blobs stay); whether it was there."""
        if self.tagged(repo, tag) is None:
            return False
        async with self._index_lock:
            with self._locked():
                self._refs.refresh()
                if self._refs.lookup(repo, tag) is None:
                    return False
                names = (layout_ref_name(repo, tag), f"{repo}:{tag}")
                self._commit([Change(name, None) for name in names])
        return True

    def folds(self) -> int:
        """How many times this store rewrote ``index.json`` (the log folded into it)."""
        return self._refs.folds

    # --- Store protocol ------------------------------------------------------

    async def has_blob(self, repo: str, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    async def has_manifest(self, repo: str, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    async def put_blob(
        self,
        repo: str,
        digest: str,
        size: int | None,
        chunks: AsyncIterable[bytes],
        *,
        reopen: Callable[[], AsyncIterable[bytes]] | None = None,
    ) -> bool:
        self._created()
        target = self.blob_path(digest)
        if target.is_file():
            return False
        hasher = hashlib.sha256()
        received = 0
        try:
            fd, tmp = self._scratch.create("blob-")
        except OSError as exc:
            raise write_error(self.display_name, exc) from exc
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    hasher.update(chunk)
                    received += len(chunk)
                    out.write(chunk)
            actual = "sha256:" + hasher.hexdigest()
            if actual != digest:
                raise DigestMismatchError(f"blob {digest}", digest, actual)
            if size is not None and received != size:
                raise SizeMismatchError(f"blob {digest}", size, received)
            os.replace(tmp, target)
        except OSError as exc:
            raise write_error(self.display_name, exc) from exc
        finally:
            tmp.unlink(missing_ok=True)
        return True

    async def put_blob_bytes(self, repo: str, digest: str, data: bytes) -> bool:
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise DigestMismatchError(f"blob {digest}", digest, actual)
        self._created()
        target = self.blob_path(digest)
        if target.is_file():
            return False
        self._write(target, data)
        return True

    def _write(self, path: Path, data: bytes) -> None:
        """Replace ``path`` with ``data`` atomically; a refused write raises the target's error."""
        try:
            _atomic_write(path, data, self._scratch)
        except OSError as exc:
            raise write_error(self.display_name, exc) from exc

    async def open_blob(self, repo: str, digest: str) -> AsyncIterator[bytes]:
        async for chunk in self.read_range(repo, digest, 0, None):
            yield chunk

    async def read_range(
        self, repo: str, digest: str, start: int, stop: int | None
    ) -> AsyncGenerator[bytes, None]:
        """The blob file read in a thread from ``start``, so a large file never blocks the loop."""
        path = self.blob_path(digest)
        try:
            handle: BinaryIO = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError as exc:
            raise LayoutError(f"{self.display_name} has no blob {digest}") from exc
        except OSError as exc:
            raise read_error(path, exc) from exc
        try:
            if start:
                await asyncio.to_thread(handle.seek, start)
            left = None if stop is None else stop - start
            while left is None or left > 0:
                size = _CHUNK if left is None else min(_CHUNK, left)
                chunk = await asyncio.to_thread(handle.read, size)
                if not chunk:
                    break
                if left is not None:
                    left -= len(chunk)
                yield chunk
        finally:
            handle.close()

    async def stat_blob(self, repo: str, digest: str) -> BlobStat | None:
        found = self.blob_file(digest)
        return None if found is None else BlobStat(found.size)

    async def hash_blob(self, repo: str, digest: str) -> tuple[int, str] | None:
        return await asyncio.to_thread(hash_file, self.blob_path(digest))

    async def discard_blob(self, repo: str, digest: str) -> None:
        self.blob_path(digest).unlink(missing_ok=True)

    async def get_manifest(self, repo: str, reference: str) -> StoredManifest | None:
        # a digest is looked up directly; a tag in the index
        digest = reference if ":" in reference else self.tagged(repo, reference)
        if digest is None:
            return None
        return self._read_manifest(digest)

    async def put_manifest(self, repo: str, reference: str, media_type: str, body: bytes) -> str:
        if ":" not in reference:
            tagged = await self.update_tag(repo, reference, media_type, lambda _: body)
            assert tagged is not None  # merge always gives a body
            return tagged
        digest = self._store_manifest(repo, reference, body)
        if reference != digest:
            raise DigestMismatchError(f"manifest {repo}@{reference}", reference, digest)
        return digest

    async def update_tag(self, repo: str, tag: str, media_type: str, merge: TagMerge) -> str | None:
        """Read the tag, merge, write: all under the layout's lock.

        The write is one line appended to the write-ahead log (synced), after
        the merged manifest is stored: its cost does not depend on how many
        tags the layout holds.
        """
        self._created()
        # A referrers fallback tag's subject (a file's manifest, a child of a
        # version index) is listed untagged too: ORAS resolves a digest in a
        # layout only when index.json lists it, and then finds its referrers.
        subject = self._referrers_subject(tag)
        async with self._index_lock:
            with self._locked():
                refs = self._refs
                refs.refresh()
                entry = refs.lookup(repo, tag)
                current = None
                if entry is not None:
                    current = self._read_manifest(entry_digest(entry, repo, tag))
                body = merge(current)
                if body is None:
                    return current.digest if current is not None else None
                digest = self._store_manifest(repo, tag, body)
                name = layout_ref_name(repo, tag)
                named = ref_name(entry) if entry is not None else ""
                if current is not None and current.digest == digest and named == name:
                    return digest
                tagged = {
                    "mediaType": media_type,
                    "digest": digest,
                    "size": len(body),
                    "annotations": {REF_NAME: name},
                }
                changes = [Change(name, tagged)]
                if named and named != name:
                    changes.append(Change(named, None))  # a format-1 name goes
                if subject is not None and not refs.is_listed(str(subject["digest"])):
                    changes.append(Change("", subject))
                self._commit(changes)
                return digest

    def _commit(self, changes: list[Change]) -> None:
        """Append ``changes`` to the log (under the lock); fold it once it is large."""
        try:
            self._appended = True
            self._refs.append(changes)
            if self._refs.needs_fold():
                self._fold(rename=False)
        except OSError as exc:
            raise write_error(self.display_name, exc) from exc

    def _fold(self, *, rename: bool) -> None:
        """The log folded into ``index.json`` (under the lock)."""
        try:
            self._refs.fold(self._replace, rename=rename)
        except OSError as exc:
            raise write_error(self.display_name, exc) from exc

    def _replace(self, path: Path, fill: Callable[[BinaryIO], None]) -> None:
        """Replace ``path`` atomically with what ``fill`` writes, synced first."""
        fd, tmp = self._scratch.create("write-")
        try:
            with os.fdopen(fd, "wb") as out:
                fill(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def commit(self) -> None:
        """Fold the write-ahead log into ``index.json``, so other tools see every tag.

        A writer (a store opened with ``create``, or one that changed a tag)
        does this when it closes, whoever's the log's lines are; a reader
        never writes.
        """
        if not (self._writer or self._appended) or not self._exists:
            return
        self._refs.refresh()
        if not self._refs.has_log():
            return
        with self._locked():
            self._refs.refresh()
            self._fold(rename=False)

    def _read_manifest(self, digest: str) -> StoredManifest | None:
        """A manifest stored as a blob, bounded and checked against its digest; ``None``: gone."""
        path = self.blob_path(digest)
        try:
            with path.open("rb") as handle:
                check_manifest_size(self.display_name, digest, os.fstat(handle.fileno()).st_size)
                body = handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise read_error(path, exc) from exc
        return checked_manifest(self.display_name, digest, body)

    def _store_manifest(self, repo: str, reference: str, body: bytes) -> str:
        """The manifest's bytes as a blob, once its children are all there."""
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self._created()
        self._check_children(repo, reference, body)
        target = self.blob_path(digest)
        if not target.is_file():
            self._write(target, body)
        return digest

    def _referrers_subject(self, tag: str) -> dict[str, Any] | None:
        """The untagged ``index.json`` entry of a fallback tag's subject, when it is stored."""
        if not is_referrers_tag(tag):
            return None
        digest = "sha256:" + tag.removeprefix("sha256-")
        try:
            body = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            return None
        stored = checked_manifest(self.display_name, digest, body)
        return {"mediaType": stored.media_type, "digest": digest, "size": len(body)}

    async def list_tags(self, repo: str) -> list[str]:
        view = self._view()
        return [] if view is None else view.tags_of(repo)

    async def list_repositories(self) -> list[str]:
        return repositories_in(self.tags())

    async def aclose(self) -> None:
        """Fold the log (a writer), then remove this process's temporary directory."""
        try:
            self.commit()
        finally:
            self._close_scratch()

    def _close_scratch(self) -> None:
        self._scratch.close()
        self._refs.close()

    # --- internals -------------------------------------------------------------

    def _check_children(self, repo: str, reference: str, body: bytes) -> None:
        """Refuse a manifest whose children are not stored yet, as a registry does."""
        try:
            data = loads_json(body, f"manifest {repo}:{reference}")
        except ValueError as exc:
            raise LayoutError(f"manifest {repo}:{reference} is not JSON") from exc
        children = list(data.get("manifests") or [])
        if data.get("config"):
            children.append(data["config"])
        children.extend(data.get("layers") or [])
        for child in children:
            if not self.blob_path(str(child["digest"])).is_file():
                raise LayoutError(
                    f"{self.display_name}: manifest {repo}:{reference} references "
                    f"{child['digest']}, which is not in the layout"
                )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            handle = (self.path / _LOCK_FILE).open("a")
        except OSError as exc:
            raise write_error(self.display_name, exc) from exc
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _atomic_write(path: Path, data: bytes, scratch: Scratch) -> None:
    fd, tmp = scratch.create("write-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def hash_file(path: Path) -> tuple[int, str] | None:
    """Size and ``sha256:`` digest of a file's bytes; ``None`` when it does not exist."""
    hasher = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                hasher.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        return None
    return size, "sha256:" + hasher.hexdigest()


def blob_hex(digest: str) -> str:
    """The hex part of a ``sha256:<64 hex>`` digest, the name of its blob file.

    Digests come from manifests, indexes and tar members, any of which may
    be crafted: one that is not exactly this grammar (``../``, a slash, a
    NUL, another algorithm) never becomes part of a path.
    """
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or not is_sha256_hex(hexdigest):
        raise LayoutError(f"unsupported or malformed digest {digest[:80]!r}")
    return hexdigest


def _parsed_ref(entry: Any) -> tuple[str, str] | None:
    name = ref_name(entry) if isinstance(entry, dict) else ""
    return parse_layout_ref_name(name) if name else None


# --- shared with the tar stores -------------------------------------------------


def refs_in(index: dict[str, Any]) -> Refs:
    """The tags an ``index.json`` names (either format's ref names; others skipped).

    Where both formats name the same tag, the format-2 entry wins.
    """
    refs: Refs = {}
    for entry in index.get("manifests", []):
        parsed = _parsed_ref(entry)
        if parsed is None:
            continue  # an entry without a digest stays: reading its tag reports the damage
        if parsed in refs and is_format1_ref_name(ref_name(entry)):
            continue
        refs[parsed] = entry
    return refs


def format1_ref_names(index: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The ref names of an ``index.json`` still in format 1's ``<repository>:<tag>`` form."""
    names = {}
    for entry in index.get("manifests", []):
        name = ref_name(entry) if isinstance(entry, dict) else ""
        if name and is_format1_ref_name(name):
            repo, _, tag = name.partition(":")
            names[name] = (repo, tag)
    return dict(sorted(names.items()))


def tag_digest(tags: Refs, repo: str, tag: str) -> str | None:
    """The digest ``repo:tag`` points at, if it is tagged."""
    entry = tags.get((repo, tag))
    return None if entry is None else entry_digest(entry, repo, tag)


def entry_digest(entry: Entry, repo: str, tag: str) -> str:
    """The digest of the entry tagging ``repo:tag``.

    An entry without a digest is damage to report, not a missing tag: a
    writer would otherwise replace it, and a reader skip it, in silence.
    """
    digest = entry.get("digest")
    if not isinstance(digest, str) or not digest:
        raise LayoutError(
            f"the {INDEX_FILE} entry {repo}:{tag} has no digest: the layout is damaged "
            f"(remove that entry from {INDEX_FILE}, then sync the project again)"
        )
    return digest


def check_manifest_size(where: str, digest: str, size: int) -> None:
    """Refuse, before reading it, a manifest bigger than :data:`MAX_MANIFEST_BYTES`."""
    if size > MAX_MANIFEST_BYTES:
        raise LayoutLimitError(
            exceeded(f"{where}: manifest {digest}", MAX_MANIFEST_BYTES, "MAX_MANIFEST_BYTES")
        )


def checked_manifest(where: str, digest: str, body: bytes) -> StoredManifest:
    """A manifest read from a layout, after checking its bytes against ``digest``."""
    actual = "sha256:" + hashlib.sha256(body).hexdigest()
    if actual != digest:
        raise DigestMismatchError(f"{where} blob {digest}", digest, actual)
    try:
        media_type = str(loads_json(body, f"manifest {digest}").get("mediaType") or OCI_MANIFEST)
    except (ValueError, AttributeError) as exc:
        raise LayoutError(f"{where}: {digest} is not a JSON manifest") from exc
    return StoredManifest(media_type=media_type, digest=digest, body=body)


def tags_of(tags: Refs, repo: str) -> list[str]:
    return sorted(tag for name, tag in tags if name == repo)


def repositories_in(tags: Refs) -> list[str]:
    return sorted({name for name, _ in tags})


def digests_by_repository(tags: Refs) -> dict[str, dict[str, str]]:
    """Tagged descriptors regrouped as repository -> tag -> digest."""
    grouped: dict[str, dict[str, str]] = {}
    for (repo, tag), entry in tags.items():
        grouped.setdefault(repo, {})[tag] = str(entry.get("digest"))
    return grouped
