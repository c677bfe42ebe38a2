"""A layout's tags: ``index.json`` and its write-ahead log, read as one, kept in step.

Adding a tag must cost the same in a layout of a thousand tags as in one
of a million, so a tag change is not a rewrite of ``index.json``: it is
one line appended to ``.index.log`` (:mod:`.layout_log`). What this
process reads is ``index.json`` (mapped, searched in place, see
:mod:`.layout_lines`) with the log's changes over it, so every committed
tag is seen. The log is *folded* into ``index.json`` (one streamed
rewrite, then the log is removed) when it outgrows
:func:`fold_threshold`, and when a writer closes: other tools read only
``index.json``, and a finished sync leaves it complete.

Keeping in step with other processes, which append and fold too, needs
no lock for reading. A fold writes the new ``index.json`` first and
removes the log after, so:

* the log file at the path is the one this process read (same inode,
  held open): ``index.json`` is the one it mapped, or a fold of that log
  in progress, which the log's changes repeat;
* another file, or none: a fold happened; read both again.

:meth:`LayoutRefs.refresh` reads until the log it finishes with is the one
it started with. Under the layout's lock, nothing moves meanwhile.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from oci_pypi_sync.errors import LayoutError
from oci_pypi_sync.format import layout_ref_name, parse_layout_ref_name
from oci_pypi_sync.limits import loads_json
from oci_pypi_sync.stores.layout_lines import Change, Entry, LineIndex
from oci_pypi_sync.stores.layout_log import LOG_FILE, LogTail, append

__all__ = ["INDEX_FILE", "LOG_FILE", "LayoutRefs", "fold_threshold"]

INDEX_FILE = "index.json"
#: The log is folded once it holds this share of index.json's size, within these bounds:
#: each tag then costs about LOG_SHARE times its line in rewriting, whatever the size.
LOG_SHARE = 16
LOG_MIN_BYTES = 1 << 20
LOG_MAX_BYTES = 64 << 20
#: Files up to this size are read; larger ones are mapped.
_MAP_FROM = 1 << 16
_REFRESH_ROUNDS = 20


def fold_threshold(index_bytes: int) -> int:
    """The log size past which a writer folds it into an ``index.json`` of ``index_bytes``."""
    return min(LOG_MAX_BYTES, max(LOG_MIN_BYTES, index_bytes // LOG_SHARE))


#: (device, inode, size, mtime) of a file: a change of any means another file.
_FileKey = tuple[int, int, int, int]


class LayoutRefs:
    """The tags of one layout directory as this process sees them; thread-safe.

    ``error`` builds the exception for a file that cannot be read (it names
    the file and what to do).
    """

    def __init__(self, root: Path, error: Callable[[Path, OSError], Exception]) -> None:
        self.root = root
        self._error = error
        self._index_path = root / INDEX_FILE
        self._log = LogTail(root / LOG_FILE)
        self._lock = threading.RLock()
        self._index: LineIndex | None = None
        self._index_key: _FileKey | None = None
        self._held: tuple[int, mmap.mmap | None] | None = None  # index.json open, mapped
        self.foreign = False  # index.json is not in the line shape
        # The log's changes: ref name -> entry (None: untagged), repository -> its refs,
        # digest -> an untagged entry the log lists.
        self._tags: dict[str, Entry | None] = {}
        self._repos: dict[str, set[str]] = {}
        self._listed: dict[str, Entry] = {}
        self._document: dict[str, Any] | None = None
        self.folds = 0  # index.json rewrites by this process (for tests and benchmarks)

    # --- reading --------------------------------------------------------------------

    def refresh(self) -> None:
        """Catch up with the files: ``index.json`` and the log's new lines."""
        with self._lock:
            for _ in range(_REFRESH_ROUNDS):
                try:
                    started = self._log.identity_now()
                    if started != self._log.identity or self._index is None:
                        self._log.reopen()
                        self._forget_log()
                        if self._log.identity != started:
                            continue  # replaced between the two looks
                    self._map_index()
                    self._apply(self._log.read())
                    if self._log.identity_now() == started:
                        return
                except OSError as exc:
                    raise self._error(Path(exc.filename or self._log.path), exc) from exc
                except ValueError as exc:
                    raise LayoutError(
                        f"cannot read {self._log.path}: {exc}; move the file aside to open the "
                        "layout (the tags it records are then lost until they are synced again)"
                    ) from exc
            raise LayoutError(
                f"{self.root}: {INDEX_FILE} and {LOG_FILE} kept changing while being read"
            )

    def _map_index(self) -> None:
        """Read ``index.json`` again if it is another file than the one held.

        The file read stays open, so its inode number cannot go to another
        file: a writer's replacement always shows as a new identity.
        """
        stat = os.stat(self._index_path)
        if self._index is not None and _file_key(stat) == self._index_key:
            return
        fd = os.open(self._index_path, os.O_RDONLY | os.O_CLOEXEC)
        mapped: mmap.mmap | None = None
        try:
            stat = os.fstat(fd)
            if stat.st_size >= _MAP_FROM:
                mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            data = mapped if mapped is not None else os.pread(fd, stat.st_size, 0)
            index = LineIndex.parse(data)
            foreign = index is None
            if index is None:  # another tool's file: sorted into memory, the mapping let go
                index = self._of_document(data[: len(data)])
                if mapped is not None:
                    mapped.close()
                    mapped = None
        except BaseException:
            if mapped is not None:
                mapped.close()
            os.close(fd)
            raise
        self._release_index()
        self._held = (fd, mapped)
        self._index, self._index_key, self.foreign = index, _file_key(stat), foreign
        self._document = None

    def _of_document(self, data: bytes) -> LineIndex:
        document = loads_json(data, str(self._index_path))
        if not isinstance(document, dict) or not isinstance(document.get("manifests", []), list):
            raise LayoutError(f"{self._index_path} is not an OCI image index")
        return LineIndex.of_document(document)

    def _apply(self, changes: Iterable[Change]) -> None:
        for change in changes:
            self._document = None
            if not change.ref:
                assert change.entry is not None
                self._listed.setdefault(str(change.entry["digest"]), change.entry)
                continue
            self._tags[change.ref] = change.entry
            parsed = parse_layout_ref_name(change.ref)
            if parsed is not None:
                self._repos.setdefault(parsed[0], set()).add(change.ref)

    def _forget_log(self) -> None:
        self._tags.clear()
        self._repos.clear()
        self._listed.clear()
        self._document = None

    def _changes(self) -> list[Change]:
        untagged = [Change("", entry) for entry in self._listed.values()]
        return untagged + [Change(ref, entry) for ref, entry in self._tags.items()]

    def _current(self) -> LineIndex:
        if self._index is None:
            self.refresh()
        assert self._index is not None
        return self._index

    # --- lookups (after a refresh) ----------------------------------------------------

    def lookup(self, repo: str, tag: str) -> Entry | None:
        """The entry tagging ``repo:tag`` (its format-2 name first, then format 1's)."""
        with self._lock:
            index = self._current()
            for name in (layout_ref_name(repo, tag), f"{repo}:{tag}"):
                if name in self._tags:
                    entry = self._tags[name]
                    if entry is not None:
                        return entry
                    continue
                found = index.find(name)
                if found is not None:
                    return found
            return None

    def tags_of(self, repo: str) -> list[str]:
        """The tags of ``repo``, sorted."""
        with self._lock:
            index = self._current()
            names = {
                name
                for prefix in (f"{repo}/", f"{repo}:")
                for name in index.refs_with_prefix(prefix)
                if name not in self._tags
            }
            names.update(r for r in self._repos.get(repo, ()) if self._tags[r] is not None)
            tags = set()
            for name in names:
                parsed = parse_layout_ref_name(name)
                if parsed is not None and parsed[0] == repo:
                    tags.add(parsed[1])
            return sorted(tags)

    def is_listed(self, digest: str) -> bool:
        """Whether an untagged entry lists ``digest``."""
        with self._lock:
            return digest in self._listed or self._current().has_untagged(digest)

    def document(self) -> dict[str, Any]:
        """The whole index, the log's changes applied; parsed once per change."""
        with self._lock:
            if self._document is None:
                self._document = self._current().document(self._changes())
            return self._document

    # --- writing (under the layout's lock) ---------------------------------------------

    def has_log(self) -> bool:
        """Whether there is a log (changes not yet in ``index.json``, or a fold unfinished)."""
        with self._lock:
            return self._log.identity is not None

    def log_bytes(self) -> int:
        with self._lock:
            return self._log.size()

    def index_bytes(self) -> int:
        with self._lock:
            return self._index_key[2] if self._index_key is not None else 0

    def append(self, changes: list[Change]) -> None:
        """Commit ``changes`` to the log; the caller holds the lock and has refreshed."""
        with self._lock:
            complete = self._log.offset if self._log.identity is not None else 0
            append(self._log.path, changes, complete=complete)  # a write error is the caller's
            self.refresh()

    def needs_fold(self) -> bool:
        return self.log_bytes() > fold_threshold(self.index_bytes())

    def fold(
        self, write: Callable[[Path, Callable[[BinaryIO], None]], None], *, rename: bool
    ) -> bool:
        """Rewrite ``index.json`` with the log's changes, then remove the log; the caller
        holds the lock and has refreshed. Whether ``index.json`` was written.

        ``write(path, fill)`` replaces ``path`` atomically with what ``fill``
        writes to the file object it is given. ``rename`` turns format-1 ref
        names into format 2's (as does the rewrite of another tool's file).
        """
        with self._lock:
            written = False
            if self._tags or self._listed or self.foreign or rename:
                write(self._index_path, lambda out: self.write_folded(out, rename=rename))
                self.folds += 1
                written = True
            if self._log.identity is not None:
                self._log.path.unlink(missing_ok=True)
            self.refresh()
            return written

    def write_folded(self, out: BinaryIO, *, rename: bool = False) -> None:
        """Write ``index.json`` as a fold would leave it (in the line shape), changing nothing."""
        with self._lock:
            index = self._current()
            if self.foreign or rename:
                index = LineIndex.of_document(index.document(), rename=True)
            index.write_merged(out, self._changes())

    # --- the end --------------------------------------------------------------------

    def close(self) -> None:
        """Let go of the files; a later read opens them again."""
        with self._lock:
            self._log.close()
            self._forget_log()
            self._release_index()
            self._index = self._index_key = None

    def _release_index(self) -> None:
        if self._held is not None:
            fd, mapped = self._held
            if mapped is not None:
                mapped.close()
            os.close(fd)
            self._held = None


def _file_key(stat: os.stat_result) -> _FileKey:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns
