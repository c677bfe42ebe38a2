"""``index.json`` as this tool writes it: one entry per line, sorted, searched without parsing.

A full mirror's layout names millions of tags. Parsing, re-sorting and
rewriting ``index.json`` for each of them made a sync quadratic, so the
file is written as JSON any reader parses as usual, but with one entry
per line, sorted by :func:`entry_key` (untagged entries first, by digest;
then tagged ones, by ref name)::

    {"manifests":[
    {"digest":"sha256:...","mediaType":"application/vnd.oci.image.manifest.v1+json","size":812},
    {"annotations":{"org.opencontainers.image.ref.name":"six/1.16.0"},"digest":...},
    {"annotations":{"org.opencontainers.image.ref.name":"six/1.17.0"},"digest":...}
    ],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}

A tag is then found by a binary search over the lines (:class:`LineIndex`,
over the file mapped into memory, not read), a repository's tags by one
search and a short scan, and a new file is written by copying the runs of
lines between the changes verbatim: no entry that
did not change is parsed. A file in any other shape (another tool's) is
sorted into this one in memory (:meth:`LineIndex.of_document`) and
rewritten in it by the next writer (:meth:`LineIndex.write_merged`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from oci_pypi_sync.format import (
    OCI_INDEX,
    REF_NAME,
    canonical_json,
    is_format1_ref_name,
    layout_ref_name,
)

__all__ = [
    "HEAD",
    "Change",
    "Entry",
    "LineIndex",
    "empty_index",
    "entry_key",
    "entry_line",
    "format2_entry",
    "line_key",
    "ref_name",
]

HEAD = b'{"manifests":[\n'
_SEPARATOR = b",\n"
_CHUNK = 1 << 20
# Where canonical JSON puts an entry's ref name (``annotations`` sorts first) or,
# for an entry without annotations, its digest.
_TAGGED = b'{"annotations":{"' + REF_NAME.encode() + b'":"'
_UNTAGGED = b'{"digest":"'

Entry = Mapping[str, Any]
#: The order of ``index.json``'s lines: ``(0, digest)`` untagged, ``(1, ref name)`` tagged.
Key = tuple[int, bytes]


class Buffer(Protocol):
    """What a line index reads: ``bytes`` or a memory-mapped file."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: slice, /) -> bytes: ...
    def find(self, sub: bytes, start: int = ..., end: int = ..., /) -> int: ...
    def rfind(self, sub: bytes, start: int = ..., end: int = ..., /) -> int: ...


def ref_name(entry: Entry) -> str:
    """An entry's ref name; ``""`` when it has none (an untagged entry)."""
    annotations = entry.get("annotations")
    name = annotations.get(REF_NAME) if isinstance(annotations, Mapping) else None
    return name if isinstance(name, str) else ""


def entry_key(entry: Entry) -> Key:
    """Where an entry sorts: untagged entries first by digest, then tagged ones by ref name."""
    name = ref_name(entry)
    if name:
        return 1, name.encode()
    return 0, str(entry.get("digest") or "").encode()


def entry_line(entry: Entry) -> bytes:
    """An entry as its line: canonical JSON, no separator."""
    return canonical_json(dict(entry))


def line_key(line: bytes) -> Key:
    """:func:`entry_key` of a line, read off its first bytes when it is one of ours."""
    for prefix, kind in ((_TAGGED, 1), (_UNTAGGED, 0)):
        if line.startswith(prefix):
            end = line.find(b'"', len(prefix))
            value = line[len(prefix) : end]
            if end > 0 and b"\\" not in value:
                return kind, value
            break
    return entry_key(_parse(line))


def format2_entry(entry: Entry) -> Entry:
    """The entry with a format-1 ref name (``six:1.0``) renamed ``six/1.0``; others as they are.

    A format-1 fallback tag (``_...``) is no valid ref-name component in
    either form: it keeps its name until ``verify --repair`` retags the
    version ``legacy-...`` and takes it out.
    """
    name = ref_name(entry)
    if not name or not is_format1_ref_name(name):
        return entry
    repo, _, tag = name.partition(":")
    if tag.startswith("_"):
        return entry
    annotations = {**entry["annotations"], REF_NAME: layout_ref_name(repo, tag)}
    return {**entry, "annotations": annotations}


@dataclass(frozen=True, slots=True)
class Change:
    """One change to ``index.json``'s entries.

    With a ``ref``: the tag now names ``entry``, or is gone (``entry`` is
    ``None``). Without one (``""``): ``entry`` is listed untagged, unless an
    untagged entry of its digest is there already.
    """

    ref: str
    entry: Entry | None

    @property
    def key(self) -> Key:
        if self.ref:
            return 1, self.ref.encode()
        assert self.entry is not None  # an untagged change always lists an entry
        return 0, str(self.entry["digest"]).encode()


class LineIndex:
    """An ``index.json`` in the line shape, read in place (``bytes`` or a mapped file)."""

    def __init__(self, data: Buffer, start: int, end: int, rest: dict[str, Any]) -> None:
        self._data = data
        self._start = start  # the first line
        self._end = end  # just past the last line's newline
        self.rest = rest  # the document's other members: mediaType, schemaVersion, ...

    @classmethod
    def parse(cls, data: Buffer) -> LineIndex | None:
        """The file's lines, if it has the line shape (``None``: another tool wrote it)."""
        size = len(data)
        if size < len(HEAD) + 3 or data[: len(HEAD)] != HEAD:
            return None
        empty = data[len(HEAD) : len(HEAD) + 2] == b"],"
        tail = len(HEAD) if empty else data.rfind(b"\n],", len(HEAD)) + 1
        if tail <= 0:
            return None
        try:
            document = json.loads(b'{"manifests":[' + data[tail:size])
        except ValueError:
            return None
        if not isinstance(document, dict) or document.get("manifests") != []:
            return None
        del document["manifests"]
        return cls(data, len(HEAD), tail, document)

    @classmethod
    def of_document(cls, document: Mapping[str, Any], *, rename: bool = False) -> LineIndex:
        """Another tool's ``index.json``, parsed, sorted into the line shape in memory.

        ``rename``: format-1 ref names become format 2's, and where both name
        one tag the format-2 entry stays (as readers take it).
        """
        entries: list[Entry] = [e for e in document.get("manifests", []) if isinstance(e, dict)]
        if rename:
            entries = _renamed(entries)
        keyed = sorted((entry_key(e), entry_line(e)) for e in entries)
        rest = {k: v for k, v in document.items() if k != "manifests"}
        data = _document_bytes([line for _, line in keyed], rest)
        return cls(data, len(HEAD), len(data) - len(_tail(rest)), rest)

    # --- lines ------------------------------------------------------------------

    def _next_start(self, offset: int) -> int:
        """The first line start at or after ``offset``."""
        if offset <= self._start:
            return self._start
        newline = self._data.find(b"\n", offset - 1, self._end)
        return self._end if newline < 0 else newline + 1

    def _line(self, start: int) -> tuple[bytes, int]:
        """The line at ``start`` (without its separator), and where the next one starts."""
        newline = self._data.find(b"\n", start, self._end)
        line = self._data[start:newline]
        return (line[:-1] if line.endswith(b",") else line), newline + 1

    def _lower_bound(self, key: Key, low: int | None = None) -> int:
        """The start of the first line from ``low`` whose key is not below ``key``."""
        low = self._start if low is None else low
        high = self._end
        while low < high:
            start = self._next_start((low + high) // 2)
            if start >= high:
                high = (low + high) // 2
                continue
            line, following = self._line(start)
            if line_key(line) < key:
                low = following
            else:
                high = start
        return low

    def lines(self) -> Iterator[bytes]:
        """Every entry line, in order."""
        offset = self._start
        while offset < self._end:
            line, offset = self._line(offset)
            yield line

    def __len__(self) -> int:
        """How many entries (counted, not stored)."""
        return sum(1 for _ in self.lines())

    # --- lookups ----------------------------------------------------------------

    def find(self, ref: str) -> Entry | None:
        """The entry tagged ``ref``."""
        key = (1, ref.encode())
        start = self._lower_bound(key)
        if start < self._end:
            line, _ = self._line(start)
            if line_key(line) == key:
                return _parse(line)
        return None

    def has_untagged(self, digest: str) -> bool:
        """Whether an untagged entry lists ``digest``."""
        key = (0, digest.encode())
        start = self._lower_bound(key)
        return start < self._end and line_key(self._line(start)[0]) == key

    def refs_with_prefix(self, prefix: str) -> Iterator[str]:
        """Every ref name that starts with ``prefix``, in order."""
        wanted = prefix.encode()
        offset = self._lower_bound((1, wanted))
        while offset < self._end:
            line, offset = self._line(offset)
            kind, name = line_key(line)
            if kind != 1 or not name.startswith(wanted):
                break
            yield name.decode()

    def document(self, changes: Iterable[Change] = ()) -> dict[str, Any]:
        """The whole index with ``changes`` applied, parsed (as readers of every tag need it)."""
        pending = list(changes)
        if not pending:
            body = self._data[: len(self._data)]
        else:
            out = _Collect()
            self.write_merged(out, pending)
            body = b"".join(out.parts)
        document: dict[str, Any] = json.loads(body)
        return document

    # --- merging ----------------------------------------------------------------

    def write_merged(self, out: BinaryIO | _Collect, changes: Iterable[Change]) -> None:
        """Write this index with ``changes`` applied, in the line shape.

        The runs of lines between changed places are copied verbatim, so the
        cost is the copy of the file plus a binary search per change. The
        last change to a tag wins, and replaces every line of that ref name;
        an untagged entry is added only where its digest is not listed.
        """
        latest: dict[Key, Change] = {}
        for change in changes:
            if change.ref or change.key not in latest:
                latest[change.key] = change
        lines = _Lines(out)
        cursor = self._start
        for key in sorted(latest):
            change = latest[key]
            place = self._lower_bound(key, cursor)
            self._write_run(lines, cursor, place)
            cursor = same = place
            while same < self._end:
                line, following = self._line(same)
                if line_key(line) != key:
                    break
                same = following
            if change.ref:
                if change.entry is not None:
                    lines.line(entry_line(change.entry))
                cursor = same  # the lines the tag named before are dropped
            elif same == cursor:
                assert change.entry is not None
                lines.line(entry_line(change.entry))
        self._write_run(lines, cursor, self._end)
        lines.close(self.rest)

    def _write_run(self, out: _Lines, start: int, stop: int) -> None:
        """The lines from ``start`` to ``stop``, copied as they are."""
        if start >= stop:
            return
        cut = stop - 2 if self._data[stop - 2 : stop] == _SEPARATOR else stop - 1
        out.run(self._data, start, cut)


class _Lines:
    """Entry lines written with separators between them, then the tail."""

    def __init__(self, out: BinaryIO | _Collect) -> None:
        self._out = out
        self.count = 0
        self._out.write(HEAD)

    def line(self, data: bytes) -> None:
        """One line."""
        if self.count:
            self._out.write(_SEPARATOR)
        self._out.write(data)
        self.count += 1

    def run(self, data: Buffer, start: int, stop: int) -> None:
        """Lines already separated, ``data[start:stop]``, copied a chunk at a time."""
        if self.count:
            self._out.write(_SEPARATOR)
        for offset in range(start, stop, _CHUNK):
            self._out.write(data[offset : min(stop, offset + _CHUNK)])
        self.count += 1

    def close(self, rest: Mapping[str, Any]) -> None:
        if self.count:
            self._out.write(b"\n")
        self._out.write(_tail(rest))


class _Collect:
    """A sink for :meth:`LineIndex.write_merged` that keeps the parts in memory."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)


def _renamed(entries: list[Entry]) -> list[Entry]:
    """Format-1 ref names renamed; where that names a tag twice, the format-2 entry stays."""
    original = {ref_name(e) for e in entries if ref_name(e)}
    kept: list[Entry] = []
    for entry in entries:
        renamed = format2_entry(entry)
        if renamed is not entry and ref_name(renamed) in original:
            continue
        kept.append(renamed)
    return kept


def empty_index() -> bytes:
    """An ``index.json`` without entries, in the line shape."""
    return _document_bytes([], {})


def _tail(rest: Mapping[str, Any]) -> bytes:
    members = {"schemaVersion": 2, "mediaType": OCI_INDEX, **rest}
    return b"]," + canonical_json(members)[1:] + b"\n"


def _document_bytes(lines: Sequence[bytes], rest: Mapping[str, Any]) -> bytes:
    body = _SEPARATOR.join(lines)
    return HEAD + body + (b"\n" if lines else b"") + _tail(rest)


def _parse(line: bytes) -> Entry:
    parsed = json.loads(line)
    if not isinstance(parsed, dict):
        raise ValueError("an index.json entry is not a JSON object")
    return parsed
