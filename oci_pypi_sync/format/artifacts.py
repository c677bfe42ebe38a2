"""Building a file's manifest and a version's index from the index's records (pure)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
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
    FORMAT_VERSION,
    OCI_INDEX,
    OCI_MANIFEST,
    OCI_VERSION,
    RELEASE_ARTIFACT,
    TITLE,
)
from oci_pypi_sync.format.naming import FileName, layer_media_type, parse_filename, repository_name
from oci_pypi_sync.format.platforms import Platform, wheel_platforms
from oci_pypi_sync.index.records import DistributionFile


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
        TITLE: file.filename,
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
            A_FORMAT: FORMAT_VERSION,
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


def entry_sort_key(entry: Descriptor) -> tuple[str, str, str, str, str, str]:
    platform = entry.platform
    return (
        entry.annotations.get(TITLE, ""),
        platform.os if platform else "",
        platform.architecture if platform else "",
        (platform.variant or "") if platform else "",
        (platform.os_version or "") if platform else "",
        entry.digest,
    )


def build_release_index(project: str, version: str, entries: Iterable[Descriptor]) -> Blob:
    """The image index of one version: its file entries in a fixed order.

    ``version`` is the version string as the index wrote it; the tag is
    derived from it with :func:`version_tag`.
    """
    ordered = sorted(_freeze(entries), key=entry_sort_key)
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
    """Read an index this format wrote: its JSON and its entries."""
    data = json.loads(body)
    if not isinstance(data, dict) or data.get("mediaType", OCI_INDEX) != OCI_INDEX:
        raise ValueError("not an OCI image index")
    return data, tuple(Descriptor.from_json(item) for item in data.get("manifests", ()))


def merge_entries(
    existing: Iterable[Descriptor], fresh: Iterable[Descriptor]
) -> tuple[Descriptor, ...]:
    """Entries of an updated index: the fresh ones, plus existing files not among them.

    A file is identified by its title (the filename): fresh entries replace
    every existing entry of the same file, so a newly yanked file or a
    changed manifest takes effect, and files mirrored earlier under another
    selection stay listed.
    """
    fresh = tuple(fresh)
    fresh_titles = {entry.annotations.get(TITLE) for entry in fresh}
    kept = tuple(e for e in existing if e.annotations.get(TITLE) not in fresh_titles)
    return kept + fresh
