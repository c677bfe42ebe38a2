"""Working out a version's new index from what the target holds and what the index says (pure).

The target's current index is read once per version. A file it already
lists with the same sha256 is not transferred again: its manifest is
reused and only its annotations are rebuilt from the index (so a newly
yanked file is marked). Files the target lists but the index no longer
has are reported, and taken out only when pruning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from oci_pypi_sync.format import (
    A_METADATA_SHA256,
    A_SHA256,
    A_SIZE,
    PROVENANCE_ANNOTATIONS,
    Descriptor,
    FileName,
    entry_filename,
    file_annotations,
    is_format1_entry_of_renamed_type,
)
from oci_pypi_sync.index.records import DistributionFile


def entries_by_title(entries: Iterable[Descriptor]) -> dict[str, list[Descriptor]]:
    """Index entries grouped by the filename they carry (format 2 or 1)."""
    grouped: dict[str, list[Descriptor]] = {}
    for entry in entries:
        title = entry_filename(entry)
        if title:
            grouped.setdefault(title, []).append(entry)
    return grouped


def entry_file_size(entry: Descriptor, file: DistributionFile) -> int:
    """The file's size as the entry records it (the index's, when the entry has none)."""
    size_text = entry.annotations.get(A_SIZE, "")
    return int(size_text) if size_text.isdigit() else (file.size or 0)


def refresh_entry(entry: Descriptor, file: DistributionFile, name: FileName) -> Descriptor:
    """The entry with its annotations rebuilt from the index's current record of the file.

    What the entry records about the file's stored provenance is kept: the
    index's page does not say it.
    """
    size = entry_file_size(entry, file)
    annotations = file_annotations(file, name, size, entry.annotations.get(A_METADATA_SHA256))
    for key in PROVENANCE_ANNOTATIONS:
        if key in entry.annotations:
            annotations[key] = entry.annotations[key]
    return replace(entry, annotations=annotations)


def reusable_entries(
    existing: Mapping[str, Sequence[Descriptor]], file: DistributionFile, name: FileName
) -> tuple[Descriptor, ...] | None:
    """The file's entries from the target's index, refreshed, when they hold the same bytes."""
    entries = existing.get(file.filename)
    if not entries or file.sha256 is None:
        return None
    if any(entry.annotations.get(A_SHA256) != file.sha256 for entry in entries):
        return None
    if any(is_format1_entry_of_renamed_type(entry) for entry in entries):
        return None  # its manifest gets format 2's media type; the blob is not sent again
    return tuple(refresh_entry(entry, file, name) for entry in entries)


def reconcile_release(
    existing: Sequence[Descriptor],
    fresh: Sequence[Descriptor],
    upstream: Mapping[str, tuple[DistributionFile, FileName]],
    *,
    prune: bool = False,
) -> tuple[tuple[Descriptor, ...], tuple[str, ...]]:
    """The entries of the version's new index, and the files removed upstream.

    ``fresh`` are the entries of the files synced now; ``existing`` those of
    the target's current index; ``upstream`` every file the project page
    lists, by filename. Existing entries of files not synced now are kept
    (a narrower selection never drops files), refreshed when the index still
    lists them, and dropped only with ``prune`` when it no longer does.
    """
    fresh_titles = {entry_filename(entry) for entry in fresh}
    entries = list(fresh)
    removed: set[str] = set()
    for entry in existing:
        title = entry_filename(entry)
        if title in fresh_titles:
            continue
        if title is not None and title in upstream:
            file, name = upstream[title]
            if entry.annotations.get(A_SHA256) == file.sha256:
                entries.append(refresh_entry(entry, file, name))
            else:
                entries.append(entry)
            continue
        if title is not None:
            removed.add(title)
        if not prune:
            entries.append(entry)
    return tuple(entries), tuple(sorted(removed))
