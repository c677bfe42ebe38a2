"""Building a file's manifest and a version's index from the index's records (pure).

Also the rules for reading what formats 1 and 2 wrote: which file an index
entry stands for, an entry or a manifest brought to format 2, and whether
an index another tool re-encoded still holds the same content.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from oci_pypi_sync.format.descriptors import (
    Blob,
    Descriptor,
    canonical_json,
    empty_config,
    sha256_digest,
)
from oci_pypi_sync.format.media import (
    A_ABI_TAGS,
    A_FILENAME,
    A_FORMAT,
    A_METADATA_SHA256,
    A_PACKAGETYPE,
    A_PLATFORM_TAGS,
    A_PROJECT,
    A_PYTHON_TAGS,
    A_REQUIRES_PYTHON,
    A_SHA256,
    A_SIZE,
    A_UPLOAD_TIME,
    A_VERSION,
    A_YANKED,
    A_YANKED_REASON,
    CORE_METADATA_LAYER,
    DISTRIBUTION_ARTIFACT,
    FORMAT1_LAYER_TYPES,
    FORMAT_VERSION,
    OCI_INDEX,
    OCI_MANIFEST,
    OCI_VERSION,
    READABLE_FORMATS,
    RELEASE_ARTIFACT,
    SDIST_SUFFIXES,
    TITLE,
)
from oci_pypi_sync.format.naming import (
    FileName,
    layer_media_type,
    parse_filename,
    repository_name,
    sdist_suffix,
)
from oci_pypi_sync.format.platforms import Platform, wheel_platforms
from oci_pypi_sync.index.records import DistributionFile
from oci_pypi_sync.limits import loads_json


@dataclass(frozen=True, slots=True)
class FileArtifact:
    """Everything one distribution file becomes: its manifest and the index entries for it.

    ``entries`` has one descriptor per OCI platform the file runs on (a
    universal2 wheel is listed once per architecture), or a single entry
    without platform for pure wheels, sdists and unmapped platform tags.
    """

    filename: str
    manifest: Blob
    layers: tuple[Descriptor, ...]
    entries: tuple[Descriptor, ...]


def file_annotations(
    file: DistributionFile, name: FileName, size: int, metadata_sha256: str | None
) -> dict[str, str]:
    """The annotations of a file's index entries: everything a reader needs without the manifest."""
    sha256 = file.sha256
    if sha256 is None:
        raise ValueError(f"{file.filename} has no sha256")
    notes = {
        A_FILENAME: file.filename,
        A_PACKAGETYPE: name.packagetype,
        A_SHA256: sha256,
        A_SIZE: str(size),
    }
    if name.is_wheel:
        notes[A_PYTHON_TAGS] = ".".join(name.python_tags)
        notes[A_ABI_TAGS] = ".".join(name.abi_tags)
        notes[A_PLATFORM_TAGS] = ".".join(name.platform_tags)
    if file.requires_python:
        notes[A_REQUIRES_PYTHON] = file.requires_python
    if file.yanked:
        notes[A_YANKED] = "true"
        if file.yanked_reason:
            notes[A_YANKED_REASON] = file.yanked_reason
    if file.upload_time:
        notes[A_UPLOAD_TIME] = file.upload_time
    if metadata_sha256:
        notes[A_METADATA_SHA256] = metadata_sha256
    return notes


def build_file_artifact(
    file: DistributionFile,
    project: str,
    size: int,
    metadata: bytes | None = None,
) -> FileArtifact:
    """The manifest of one file and its index entries.

    ``size`` is the file's byte count (known from PEP 700, or counted while
    streaming); the layer digest is the index's sha256, which the store has
    verified against the bytes. ``metadata`` is the verified core metadata.
    """
    sha256 = file.sha256
    if sha256 is None:
        raise ValueError(f"{file.filename} has no sha256")
    name = parse_filename(file.filename, project)
    file_layer = Descriptor(
        layer_media_type(file.filename),
        "sha256:" + sha256,
        size,
        annotations={TITLE: file.filename},
    )
    layers = [file_layer]
    metadata_sha256 = None
    if metadata is not None:
        metadata_digest = sha256_digest(metadata)
        metadata_sha256 = metadata_digest.removeprefix("sha256:")
        layers.append(
            Descriptor(
                CORE_METADATA_LAYER,
                metadata_digest,
                len(metadata),
                annotations={TITLE: file.filename + ".metadata"},
            )
        )
    manifest_json = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": DISTRIBUTION_ARTIFACT,
        "config": empty_config().descriptor.to_json(),
        "layers": [layer.to_json() for layer in layers],
        "annotations": {
            A_FORMAT: file_manifest_format(file_layer.media_type),
            A_PROJECT: str(name.project),
            A_VERSION: name.version,
        },
    }
    body = canonical_json(manifest_json)
    digest = sha256_digest(body)
    annotations = file_annotations(file, name, size, metadata_sha256)
    platforms: tuple[Platform | None, ...] = wheel_platforms(name.platform_tags) or (None,)
    entries = tuple(
        Descriptor(
            OCI_MANIFEST,
            digest,
            len(body),
            artifact_type=DISTRIBUTION_ARTIFACT,
            platform=platform,
            annotations=annotations,
        )
        for platform in platforms
    )
    return FileArtifact(
        filename=file.filename,
        manifest=Blob(Descriptor(OCI_MANIFEST, digest, len(body)), body),
        layers=tuple(layers),
        entries=entries,
    )


def file_manifest_format(layer_media_type: str) -> str:
    """The ``dev.oci-pypi.format`` of a file manifest: the version that last changed its rules.

    Format 2 changed only the media types of ``.tar.bz2`` and ``.tar.xz``
    sdists; every other file manifest is byte for byte what format 1 wrote
    and keeps saying ``1``, so its digest (and the dedup between mirrors
    written by either version) does not change.
    """
    return FORMAT_VERSION if layer_media_type in FORMAT1_LAYER_TYPES.values() else "1"


def entry_filename(entry: Descriptor) -> str | None:
    """The filename an index entry stands for: format 2's annotation, or format 1's title."""
    return entry.annotations.get(A_FILENAME) or entry.annotations.get(TITLE)


def has_renamed_media_type(filename: str) -> bool:
    """Whether format 2 renamed the layer media type of this file (``.tar.bz2``, ``.tar.xz``)."""
    suffix = sdist_suffix(filename)
    return suffix is not None and SDIST_SUFFIXES[suffix] in FORMAT1_LAYER_TYPES.values()


def is_format1_entry_of_renamed_type(entry: Descriptor) -> bool:
    """A format-1 entry whose manifest still has a media type format 2 renamed.

    Its manifest cannot be reused as it is: a sync writes the file's
    format-2 manifest (the blob stays).
    """
    return A_FILENAME not in entry.annotations and has_renamed_media_type(
        entry.annotations.get(TITLE, "")
    )


def format2_entry(entry: Descriptor) -> Descriptor:
    """An entry as format 2 writes it: the filename in ``dev.oci-pypi.filename``, no title.

    An entry another tool re-encoded without ``artifactType`` gets it back.
    """
    notes = dict(entry.annotations)
    title = notes.pop(TITLE, None)
    if title and A_FILENAME not in notes:
        notes[A_FILENAME] = title
    artifact_type = entry.artifact_type or DISTRIBUTION_ARTIFACT
    if notes == entry.annotations and artifact_type == entry.artifact_type:
        return entry
    return replace(entry, annotations=notes, artifact_type=artifact_type)


def entry_sort_key(entry: Descriptor) -> tuple[str, str, str, str, str, str]:
    platform = entry.platform
    return (
        entry_filename(entry) or "",
        platform.os if platform else "",
        platform.architecture if platform else "",
        (platform.variant or "") if platform else "",
        (platform.os_version or "") if platform else "",
        entry.digest,
    )


def build_release_index(project: str, version: str, entries: Iterable[Descriptor]) -> Blob:
    """The image index of one version: its file entries in a fixed order.

    ``version`` is the version string as the index wrote it; the tag is
    derived from it with :func:`version_tag`. Entries read from a format-1
    index are written as format 2 (see :func:`format2_entry`).
    """
    ordered = sorted(_freeze(format2_entry(entry) for entry in entries), key=entry_sort_key)
    index_json = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": RELEASE_ARTIFACT,
        "manifests": [entry.to_json() for entry in ordered],
        "annotations": {
            A_FORMAT: FORMAT_VERSION,
            A_PROJECT: str(repository_name(project)),
            OCI_VERSION: version,
        },
    }
    body = canonical_json(index_json)
    return Blob(Descriptor(OCI_INDEX, sha256_digest(body), len(body)), body)


def _freeze(entries: Iterable[Descriptor]) -> list[Descriptor]:
    # Descriptors hold a dict of annotations and are not hashable; dedupe by JSON.
    seen: dict[bytes, Descriptor] = {}
    for entry in entries:
        seen.setdefault(canonical_json(entry.to_json()), entry)
    return list(seen.values())


def parse_release_index(body: bytes) -> tuple[dict[str, Any], tuple[Descriptor, ...]]:
    """Read an index this format wrote (version 1 or 2): its JSON and its entries."""
    data = loads_json(body, "an image index")
    if not isinstance(data, dict) or data.get("mediaType", OCI_INDEX) != OCI_INDEX:
        raise ValueError("not an OCI image index")
    return data, tuple(Descriptor.from_json(item) for item in data.get("manifests", ()))


@dataclass(frozen=True, slots=True)
class ReleaseIndex:
    """A version index as stored, read tolerantly (format 1 or 2, re-encoded or not)."""

    format: str
    project: str
    version: str
    entries: tuple[Descriptor, ...]

    def canonical(self) -> Blob:
        """The bytes format 2 writes for this content: what ``verify --repair`` restores."""
        return build_release_index(self.project, self.version, self.entries)


def read_release_index(body: bytes) -> ReleaseIndex:
    """A version index of format 1 or 2; ``ValueError`` when the bytes are not one.

    Judged by content, not bytes: key order, escaping and a dropped
    ``artifactType`` (what skopeo 1.9 does to an index it copies) are
    accepted; :meth:`ReleaseIndex.canonical` gives the bytes back.
    """
    try:
        data, entries = parse_release_index(body)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"unreadable entries: {exc}") from exc
    notes = data.get("annotations") or {}
    version_format = notes.get(A_FORMAT)
    if version_format not in READABLE_FORMATS:
        raise ValueError(f"{A_FORMAT} {version_format!r} is not a format this version reads")
    if data.get("artifactType", RELEASE_ARTIFACT) != RELEASE_ARTIFACT:
        raise ValueError(f"artifactType {data.get('artifactType')!r}")
    project, version = notes.get(A_PROJECT), notes.get(OCI_VERSION)
    if not isinstance(project, str) or not project or not isinstance(version, str) or not version:
        raise ValueError(f"no {A_PROJECT} or {OCI_VERSION} annotation")
    return ReleaseIndex(str(version_format), project, version, entries)


def release_index_content_equal(a: bytes, b: bytes) -> bool:
    """Whether two index bodies hold the same content, whatever their encoding.

    Equal JSON once ``artifactType`` is left out of the index and its
    entries: the only things another tool's re-encoding is known to change
    are key order, escaping and that field.
    """
    try:
        return bool(_content(loads_json(a, "a manifest")) == _content(loads_json(b, "a manifest")))
    except ValueError:
        return False


def _content(data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    out = {key: value for key, value in data.items() if key != "artifactType"}
    if isinstance(out.get("manifests"), list):
        out["manifests"] = [_content(entry) for entry in out["manifests"]]
    return out


def format2_file_manifest(body: bytes) -> bytes | None:
    """A format-1 file manifest whose layer media type format 2 renamed, rewritten; else ``None``.

    Only ``.tar.bz2`` and ``.tar.xz`` sdists are affected: the layers (and
    their blobs) stay, the media type and ``dev.oci-pypi.format`` change.
    """
    data = loads_json(body, "a file manifest")
    layers = data.get("layers") if isinstance(data, dict) else None
    if not layers or not isinstance(layers[0], dict):
        return None
    renamed = FORMAT1_LAYER_TYPES.get(str(layers[0].get("mediaType")))
    if renamed is None:
        return None
    layers[0]["mediaType"] = renamed
    data.setdefault("annotations", {})[A_FORMAT] = file_manifest_format(renamed)
    return canonical_json(data)


def merge_entries(
    existing: Iterable[Descriptor], fresh: Iterable[Descriptor]
) -> tuple[Descriptor, ...]:
    """Entries of an updated index: the fresh ones, plus existing files not among them.

    A file is identified by its filename (:func:`entry_filename`): fresh
    entries replace every existing entry of the same file, so a newly yanked
    file or a changed manifest takes effect, and files mirrored earlier
    under another selection stay listed.
    """
    fresh = tuple(fresh)
    fresh_names = {entry_filename(entry) for entry in fresh}
    kept = tuple(e for e in existing if entry_filename(e) not in fresh_names)
    return kept + fresh
