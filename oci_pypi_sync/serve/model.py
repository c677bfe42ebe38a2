"""What the server knows about a mirrored project: frozen records read from version indexes.

Pure: :func:`release_from_index` turns the bytes of one version's OCI image
index into a :class:`Release` using only the entry annotations (format
versions 1 and 2 put everything a simple-API page needs there), so a project page
costs one index read per version and no manifest reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from oci_pypi_sync import format as fmt
from oci_pypi_sync.ops.catalog import ProjectStatus
from oci_pypi_sync.plan.select import version_sort_key


@dataclass(frozen=True, slots=True)
class ServedFile:
    """One distribution file as a project page lists it."""

    filename: str
    version: str
    sha256: str
    size: int | None
    manifest_digest: str
    requires_python: str | None = None
    yanked: bool = False
    yanked_reason: str | None = None
    upload_time: str | None = None
    metadata_sha256: str | None = None
    provenance_sha256: str | None = None

    @property
    def blob_digest(self) -> str:
        """The digest of the file's layer: the file's sha256, by the format's rule."""
        return "sha256:" + self.sha256


@dataclass(frozen=True, slots=True)
class Release:
    """One version index, parsed; content-addressed, so cacheable for ever by ``digest``."""

    digest: str
    version: str
    files: tuple[ServedFile, ...]


@dataclass(frozen=True, slots=True)
class Project:
    """Everything a project page shows, assembled from its releases.

    ``key`` identifies the content (the release digests and the status), so
    a page rendered from it can be cached and given a strong ETag.
    ``status`` is the PEP 792 status the index gave, when not ``active``; a
    quarantined project lists no version and no file.
    """

    name: str
    versions: tuple[str, ...]
    files: tuple[ServedFile, ...]
    key: str
    by_filename: Mapping[str, ServedFile] = field(default_factory=dict, compare=False)
    status: ProjectStatus | None = None

    def file(self, filename: str) -> ServedFile | None:
        return self.by_filename.get(filename)


def release_from_index(digest: str, body: bytes, tag: str | None = None) -> Release:
    """Read a version index: one :class:`ServedFile` per filename (platform entries merged).

    A universal2 wheel has one entry per architecture pointing at the same
    manifest; it is one file. Entries without a filename or sha256 are not
    files this format wrote and are skipped, and so are those whose filename
    is not a plain file name or whose sha256 is not 64 hex digits: a mirror
    may be crafted (a tar carried across an air gap), and these values go
    into paths, URLs, headers and pages. A malformed metadata digest drops
    the metadata, not the file.
    """
    data, entries = fmt.parse_release_index(body)
    annotations = data.get("annotations") or {}
    version = str(annotations.get(fmt.OCI_VERSION) or (tag and fmt.tag_version(tag)) or tag or "")
    files: dict[str, ServedFile] = {}
    for entry in entries:
        notes = entry.annotations
        filename = fmt.entry_filename(entry)
        sha256 = notes.get(fmt.A_SHA256)
        if not filename or not sha256 or filename in files:
            continue
        if not fmt.is_plain_filename(filename) or not fmt.is_sha256_hex(sha256):
            continue
        metadata_sha256 = notes.get(fmt.A_METADATA_SHA256) or None
        provenance_sha256 = notes.get(fmt.A_PROVENANCE_SHA256) or None
        size = notes.get(fmt.A_SIZE)
        files[filename] = ServedFile(
            filename=filename,
            version=version,
            sha256=sha256,
            size=int(size) if size and size.isdigit() else None,
            manifest_digest=entry.digest,
            requires_python=notes.get(fmt.A_REQUIRES_PYTHON) or None,
            yanked=notes.get(fmt.A_YANKED) == "true",
            yanked_reason=notes.get(fmt.A_YANKED_REASON) or None,
            upload_time=notes.get(fmt.A_UPLOAD_TIME) or None,
            metadata_sha256=(
                metadata_sha256
                if metadata_sha256 is not None and fmt.is_sha256_hex(metadata_sha256)
                else None
            ),
            provenance_sha256=(
                provenance_sha256
                if provenance_sha256 is not None and fmt.is_sha256_hex(provenance_sha256)
                else None
            ),
        )
    return Release(digest=digest, version=version, files=tuple(files.values()))


def assemble_project(
    name: str, releases: Iterable[Release], status: ProjectStatus | None = None
) -> Project:
    """A project from its releases: versions in PEP 440 order, each filename once.

    A quarantined project keeps its status and loses its files (PEP 792:
    none may be offered for download).
    """
    offered = () if status is not None and status.quarantined else releases
    ordered = sorted(offered, key=lambda r: (version_sort_key(r.version), r.digest))
    by_filename: dict[str, ServedFile] = {}
    for release in ordered:
        for file in sorted(release.files, key=lambda f: f.filename):
            by_filename.setdefault(file.filename, file)
    versions = tuple(dict.fromkeys(r.version for r in ordered if r.files))
    identity = " ".join(sorted(r.digest for r in ordered))
    if status is not None and not status.active:
        identity += f" {status.status} {status.reason or ''}"
    key = fmt.sha256_digest(identity.encode())
    return Project(
        name=name,
        versions=versions,
        files=tuple(by_filename.values()),
        key=key.removeprefix("sha256:"),
        by_filename=by_filename,
        status=status if status is not None and not status.active else None,
    )
