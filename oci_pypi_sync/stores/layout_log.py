"""The write-ahead log of a layout's ``index.json``: one fsynced line per tag change.

Rewriting ``index.json`` costs its whole size; a tag change appended to
``.index.log`` costs one line. Each line is canonical JSON, one of::

    {"entry":{...descriptor...},"tag":"six/1.17.0"}   the tag names this entry
    {"untag":"six/1.17.0"}                             the tag is gone
    {"list":{...descriptor...}}                        the entry is listed untagged

Lines are appended under the layout's lock, after everything the entry
references is stored, and synced before the lock is released, so a line
on disk is a committed change. A line without its newline (a crash in the
middle of a write) is no change: readers stop before it and the next
writer cuts it off. The changes are folded into ``index.json`` (see
:mod:`.layout_refs`), after which the file is removed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from oci_pypi_sync.format import canonical_json
from oci_pypi_sync.stores.layout_lines import Change

__all__ = ["LOG_FILE", "LogTail", "append", "decode", "encode"]

LOG_FILE = ".index.log"


def encode(change: Change) -> bytes:
    """A change as its log line, without the newline."""
    if not change.ref:
        return canonical_json({"list": dict(change.entry or {})})
    if change.entry is None:
        return canonical_json({"untag": change.ref})
    return canonical_json({"tag": change.ref, "entry": dict(change.entry)})


def decode(line: bytes) -> Change:
    """A log line as its change; :class:`ValueError` when it is none."""
    data: Any = json.loads(line)
    if isinstance(data, dict):
        tag, entry = data.get("tag"), data.get("entry")
        if isinstance(tag, str) and tag and isinstance(entry, dict) and entry.get("digest"):
            return Change(tag, entry)
        untag = data.get("untag")
        if isinstance(untag, str) and untag:
            return Change(untag, None)
        listed = data.get("list")
        if isinstance(listed, dict) and isinstance(listed.get("digest"), str):
            return Change("", listed)
    raise ValueError("not a tag change")


class LogTail:
    """This process's place in one log file: which file it is, and how far it was read.

    The file stays open for as long as it is the one read, so its inode
    number cannot go to another file: a different one at the path means the
    log was folded and begun again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self.offset = 0
        self.line = 0

    @property
    def identity(self) -> tuple[int, int] | None:
        """``(device, inode)`` of the file read; ``None`` when there was none."""
        return self._identity

    def identity_now(self) -> tuple[int, int] | None:
        """``(device, inode)`` of the file at the path now."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return stat.st_dev, stat.st_ino

    def reopen(self) -> None:
        """Read the file at the path from its start (or none, when there is none)."""
        self.close()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        stat = os.fstat(fd)
        self._fd, self._identity = fd, (stat.st_dev, stat.st_ino)

    def size(self) -> int:
        return 0 if self._fd is None else os.fstat(self._fd).st_size

    def read(self) -> list[Change]:
        """The changes of the complete lines written since the last read.

        Raises :class:`ValueError` naming the line for a line that is no change.
        """
        if self._fd is None:
            return []
        size = os.fstat(self._fd).st_size
        if size <= self.offset:
            return []
        data = os.pread(self._fd, size - self.offset, self.offset)
        cut = data.rfind(b"\n")
        if cut < 0:
            return []
        changes = []
        for line in data[:cut].split(b"\n"):
            self.line += 1
            if not line:
                continue
            try:
                changes.append(decode(line))
            except ValueError as exc:
                raise ValueError(f"line {self.line} is not a tag change ({exc})") from None
        self.offset += cut + 1
        return changes

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._identity, self.offset, self.line = None, None, 0, 0


def append(path: Path, changes: Iterable[Change], *, complete: int) -> None:
    """Append ``changes`` and sync them, under the layout's lock.

    ``complete`` is how far the file holds whole lines (what its reader
    read): anything after that is a line a crash cut short, and goes.
    """
    data = b"".join(encode(change) + b"\n" for change in changes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
    try:
        if os.fstat(fd).st_size > complete:
            os.ftruncate(fd, complete)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
