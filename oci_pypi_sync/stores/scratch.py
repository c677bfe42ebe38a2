"""Per-writer scratch directories inside a layout, and the removal of dead writers' ones.

Blobs are written to a temporary file and renamed into place; a process
that dies (killed, power cut) leaves its temporary files behind. Each
writing process therefore gets a directory of its own under ``.tmp/``, with
a lock file beside it that it holds (``flock``) for as long as it lives:

- ``.tmp/<id>/``: the writer's temporary files;
- ``.tmp/<id>.lock``: locked by the writer; whoever can lock it knows the
  writer is gone, and removes both.

The lock file is created under a hidden name, locked, then renamed into
place, so a lock file with the public name is always held by a live
writer or by nobody. Concurrent writers never remove each other's files;
a crashed writer's files go at the next writer's start, and a writer's own
at its end. Unknown files directly under ``.tmp/`` (left by older versions)
are removed once they are an hour old.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

TMP_DIR = ".tmp"
_LOCK_SUFFIX = ".lock"
_NEW_PREFIX = ".new-"
#: Files of unknown origin directly under ``.tmp/`` are removed from this age on (seconds).
STRAY_AGE = 3600.0


class Scratch:
    """This process's scratch directory in one layout; made on first use, removed on close."""

    def __init__(self, root: Path) -> None:
        self.root = root / TMP_DIR
        self._dir: Path | None = None
        self._lock_fd: int | None = None

    def directory(self) -> Path:
        """The directory to write temporary files in (created and locked on first call)."""
        if self._dir is None:
            self.root.mkdir(parents=True, exist_ok=True)
            for _ in range(8):
                claimed = self._claim()
                if claimed is not None:
                    self._dir = claimed
                    break
            else:  # pragma: no cover - eight lost races in a row
                raise OSError(f"cannot claim a scratch directory under {self.root}")
        return self._dir

    def create(self, prefix: str) -> tuple[int, Path]:
        """A new temporary file, open for writing: its descriptor and path.

        Made with mode 0666 less the umask, as any file a user writes is:
        the blob it becomes must be as readable as the rest of the layout
        (``tempfile.mkstemp`` would make it 0600, for its owner alone).
        """
        directory = self.directory()
        while True:
            path = directory / f"{prefix}{secrets.token_hex(8)}"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            except FileExistsError:  # pragma: no cover - 64 random bits collided
                continue
            return fd, path

    def _claim(self) -> Path | None:
        name = f"{os.getpid()}-{secrets.token_hex(6)}"
        hidden = self.root / f"{_NEW_PREFIX}{name}{_LOCK_SUFFIX}"
        fd = os.open(hidden, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(hidden, self.root / f"{name}{_LOCK_SUFFIX}")
        except OSError:  # a cleaner took the hidden file meanwhile: try another name
            os.close(fd)
            with contextlib.suppress(OSError):
                hidden.unlink()
            return None
        directory = self.root / name
        directory.mkdir()
        self._lock_fd = fd
        return directory

    def close(self) -> None:
        """Remove this process's scratch directory and release its lock."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                self._dir.with_name(self._dir.name + _LOCK_SUFFIX).unlink()
            self._dir = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def remove_abandoned(root: Path, *, now: float | None = None) -> int:
    """Remove what dead writers left under ``root/.tmp``; return how many entries went.

    Never touches a live writer's files (its lock cannot be taken). Errors
    (a read-only layout, say) are ignored: the cleaning is a courtesy, and
    the write that follows reports the problem.
    """
    tmp = root / TMP_DIR
    try:
        entries = list(tmp.iterdir())
    except OSError:
        return 0
    now = time.time() if now is None else now
    removed = 0
    locks = {e.name for e in entries if e.name.endswith(_LOCK_SUFFIX)}
    for entry in entries:
        try:
            if entry.name.endswith(_LOCK_SUFFIX):
                removed += _remove_if_unlocked(entry)
            elif entry.is_dir() and not entry.is_symlink():
                if entry.name + _LOCK_SUFFIX not in locks:
                    # Its owner's lock is gone, so its owner is: see the module docstring.
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
            elif now - entry.lstat().st_mtime > STRAY_AGE:
                entry.unlink()
                removed += 1
        except OSError as exc:
            log.debug("not removed: %s (%s)", entry, exc)
    if removed:
        log.info("removed %d abandoned temporary entries from %s", removed, tmp)
    return removed


def _remove_if_unlocked(lock: Path) -> int:
    """Remove a lock file and its directory when no live writer holds the lock."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # a live writer
        if lock.name.startswith(_NEW_PREFIX):
            lock.unlink()
            return 1
        shutil.rmtree(lock.with_name(lock.name.removesuffix(_LOCK_SUFFIX)), ignore_errors=True)
        lock.unlink()
        return 1
    finally:
        os.close(fd)
