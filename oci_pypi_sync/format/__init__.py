"""The mapping from a package index to OCI artifacts: format version 1.

Pure functions and frozen records, no I/O, in the manner of ``packaging``.
``docs/format.md`` is the contract this module implements; a change here
that alters any byte of a manifest or index is a format change.

One repository per project, one tag per version pointing at an OCI image
index, one OCI image manifest per distribution file whose first layer is
the file's bytes unchanged (so its digest is the index's sha256) and whose
optional second layer is the file's core metadata (PEP 658). Everything is
serialised canonically (sorted keys, no whitespace, no wall-clock times),
so the same upstream files give the same digests wherever they are written.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from oci_pypi_sync.index.records import DistributionFile

FORMAT_VERSION = "1"

# --- media types ---------------------------------------------------------

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

RELEASE_ARTIFACT = "application/vnd.oci-pypi.release.v1"
DISTRIBUTION_ARTIFACT = "application/vnd.oci-pypi.distribution.v1"

WHEEL_LAYER = "application/vnd.oci-pypi.wheel.v1+zip"
SDIST_TAR_GZ_LAYER = "application/vnd.oci-pypi.sdist.v1.tar+gzip"
SDIST_ZIP_LAYER = "application/vnd.oci-pypi.sdist.v1+zip"
SDIST_TAR_BZ2_LAYER = "application/vnd.oci-pypi.sdist.v1.tar+bzip2"
SDIST_TAR_XZ_LAYER = "application/vnd.oci-pypi.sdist.v1.tar+xz"
SDIST_TAR_LAYER = "application/vnd.oci-pypi.sdist.v1.tar"
CORE_METADATA_LAYER = "application/vnd.oci-pypi.core-metadata.v1"

EMPTY_CONFIG_BYTES = b"{}"

# --- annotation keys -------------------------------------------------------

TITLE = "org.opencontainers.image.title"
OCI_VERSION = "org.opencontainers.image.version"
REF_NAME = "org.opencontainers.image.ref.name"
_NS = "dev.oci-pypi."
A_FORMAT = _NS + "format"
A_PROJECT = _NS + "project"
A_VERSION = _NS + "version"
A_PACKAGETYPE = _NS + "packagetype"
A_PYTHON_TAGS = _NS + "python-tags"
A_ABI_TAGS = _NS + "abi-tags"
A_PLATFORM_TAGS = _NS + "platform-tags"
A_REQUIRES_PYTHON = _NS + "requires-python"
A_YANKED = _NS + "yanked"
A_YANKED_REASON = _NS + "yanked-reason"
A_UPLOAD_TIME = _NS + "upload-time"
A_SIZE = _NS + "size"
A_SHA256 = _NS + "sha256"
A_METADATA_SHA256 = _NS + "core-metadata-sha256"

SDIST_SUFFIXES: Mapping[str, str] = {
    ".tar.gz": SDIST_TAR_GZ_LAYER,
    ".tgz": SDIST_TAR_GZ_LAYER,
    ".zip": SDIST_ZIP_LAYER,
    ".tar.bz2": SDIST_TAR_BZ2_LAYER,
    ".tar.xz": SDIST_TAR_XZ_LAYER,
    ".tar": SDIST_TAR_LAYER,
}

MAX_TAG_LENGTH = 128
_TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_TAG_UNSAFE = re.compile(r"[^a-zA-Z0-9._-]")
_FALLBACK_STEM_LENGTH = 100


class UnsupportedFileError(ValueError):
    """A file of the index is neither a wheel nor an sdist we can name."""


# --- records -------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Platform:
    """An OCI platform, as in the image-index spec."""

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None

    def to_json(self) -> dict[str, str]:
        out = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Platform:
        return cls(
            os=str(data["os"]),
            architecture=str(data["architecture"]),
            variant=data.get("variant"),
            os_version=data.get("os.version"),
        )

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        if self.variant:
            text += f"/{self.variant}"
        return text


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    artifact_type: str | None = None
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Descriptor:
        platform = data.get("platform")
        return cls(
            media_type=str(data["mediaType"]),
            digest=str(data["digest"]),
            size=int(data["size"]),
            artifact_type=data.get("artifactType"),
            platform=Platform.from_json(platform) if platform else None,
            annotations=dict(data.get("annotations") or {}),
        )


@dataclass(frozen=True, slots=True)
class Blob:
    """Bytes held in memory together with their descriptor (configs, metadata, manifests)."""

    descriptor: Descriptor
    data: bytes


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


# --- helpers ---------------------------------------------------------------


def canonical_json(value: Any) -> bytes:
    """Serialise deterministically: sorted keys, no insignificant whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def empty_config() -> Blob:
    return Blob(
        Descriptor(OCI_EMPTY, sha256_digest(EMPTY_CONFIG_BYTES), len(EMPTY_CONFIG_BYTES)),
        EMPTY_CONFIG_BYTES,
    )


def repository_name(project: str) -> NormalizedName:
    """The repository path component for a project: its PEP 503 normalized name."""
    return canonicalize_name(project)


# --- versions and tags -------------------------------------------------------


def normalize_version(version: str) -> str:
    """The PEP 440 normal form, or the string unchanged for a legacy version."""
    try:
        return str(Version(version))
    except InvalidVersion:
        return version


def version_tag(version: str) -> str:
    """The tag for a version.

    A valid PEP 440 version is normalised; ``+`` becomes ``-`` and ``!``
    becomes ``_`` (a normalised version contains neither ``-`` nor ``_``,
    so the mapping is reversible). A legacy version, or a tag longer than
    128 characters, falls back to ``_`` + a sanitised stem + ``.`` + the
    first 16 hex digits of the sha256 of the version string. Version tags
    start with a digit, fallback tags with ``_``; every other tag this
    format writes starts with a letter, so the three never collide.
    """
    try:
        normal: str | None = str(Version(version))
    except InvalidVersion:
        normal = None
    if normal is not None:
        tag = normal.replace("+", "-").replace("!", "_")
        if len(tag) <= MAX_TAG_LENGTH:
            return tag
    source = normal if normal is not None else version
    stem = _TAG_UNSAFE.sub("-", source)[:_FALLBACK_STEM_LENGTH]
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    return f"_{stem}.{digest}"


def tag_version(tag: str) -> str | None:
    """The normalised version a version tag stands for, or ``None`` for other tags.

    Fallback tags (``_...``) cannot be reversed from the tag alone: read the
    index's ``org.opencontainers.image.version`` annotation instead.
    """
    if not tag or not tag[0].isdigit():
        return None
    candidate = tag.replace("-", "+").replace("_", "!")
    try:
        return str(Version(candidate))
    except InvalidVersion:
        return None


def is_valid_tag(tag: str) -> bool:
    return _TAG_RE.fullmatch(tag) is not None


# --- files -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileName:
    """What a distribution filename says: project, version and, for wheels, tags."""

    project: NormalizedName
    version: str
    packagetype: str  # "bdist_wheel" or "sdist"
    python_tags: tuple[str, ...] = ()
    abi_tags: tuple[str, ...] = ()
    platform_tags: tuple[str, ...] = ()

    @property
    def is_wheel(self) -> bool:
        return self.packagetype == "bdist_wheel"


def sdist_suffix(filename: str) -> str | None:
    lower = filename.lower()
    for suffix in SDIST_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    return None


def parse_filename(filename: str, project: str) -> FileName:
    """Read a wheel or sdist filename; legacy versions are kept as written.

    ``project`` is the project the file was listed under: it locates the
    version in legacy sdist names that :mod:`packaging` refuses (such as
    ``foo-1.0-beta.tar.gz``). Raises :class:`UnsupportedFileError` for
    anything else (``.egg``, ``.exe``, ``.msi``, ``.rpm``...).
    """
    name = canonicalize_name(project)
    if filename.endswith(".whl"):
        try:
            wheel_name, version, _build, tags = parse_wheel_filename(filename)
        except (InvalidWheelFilename, InvalidVersion) as exc:
            raise UnsupportedFileError(f"invalid wheel filename {filename!r}: {exc}") from exc
        return FileName(
            project=wheel_name,
            version=str(version),
            packagetype="bdist_wheel",
            python_tags=tuple(sorted({t.interpreter for t in tags})),
            abi_tags=tuple(sorted({t.abi for t in tags})),
            platform_tags=tuple(sorted({t.platform for t in tags})),
        )
    suffix = sdist_suffix(filename)
    if suffix is None:
        raise UnsupportedFileError(f"{filename!r} is neither a wheel nor an sdist")
    if suffix in (".tar.gz", ".zip"):
        try:
            sdist_name, sdist_version = parse_sdist_filename(filename)
        except (InvalidSdistFilename, InvalidVersion):
            pass
        else:
            return FileName(project=sdist_name, version=str(sdist_version), packagetype="sdist")
    stem = filename[: -len(suffix)]
    # Legacy: find the dash after which the rest is the version, the part
    # before it normalising to the project's name (the way pip matches).
    for index, char in enumerate(stem):
        if char == "-" and canonicalize_name(stem[:index]) == name:
            legacy_version = stem[index + 1 :]
            if legacy_version:
                return FileName(
                    project=name, version=normalize_version(legacy_version), packagetype="sdist"
                )
    raise UnsupportedFileError(f"cannot find the version of {project!r} in {filename!r}")


def layer_media_type(filename: str) -> str:
    if filename.endswith(".whl"):
        return WHEEL_LAYER
    suffix = sdist_suffix(filename)
    if suffix is None:
        raise UnsupportedFileError(f"{filename!r} is neither a wheel nor an sdist")
    return SDIST_SUFFIXES[suffix]


# --- platforms -------------------------------------------------------------

_LINUX_ARCH: Mapping[str, tuple[str, str | None]] = {
    "x86_64": ("amd64", None),
    "i686": ("386", None),
    "i386": ("386", None),
    "aarch64": ("arm64", None),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "ppc64le": ("ppc64le", None),
    "ppc64": ("ppc64", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
    "loongarch64": ("loong64", None),
}
_MACOS_ARCH: Mapping[str, tuple[str, ...]] = {
    "x86_64": ("amd64",),
    "arm64": ("arm64",),
    "universal2": ("amd64", "arm64"),
}
_WINDOWS: Mapping[str, str] = {"win32": "386", "win_amd64": "amd64", "win_arm64": "arm64"}
_LINUX_TAG = re.compile(
    r"(?:manylinux|musllinux)_\d+_\d+_(.+)|manylinux(?:1|2010|2014)_(.+)|linux_(.+)"
)
_MACOS_TAG = re.compile(r"macosx_(\d+)_(\d+)_(.+)")


def tag_platforms(platform_tag: str) -> tuple[Platform, ...]:
    """The OCI platforms one wheel platform tag runs on; empty when OCI has no equivalent."""
    if linux := _LINUX_TAG.fullmatch(platform_tag):
        arch = next(group for group in linux.groups() if group)
        mapped = _LINUX_ARCH.get(arch)
        if mapped is None:
            return ()
        return (Platform("linux", mapped[0], mapped[1]),)
    if macos := _MACOS_TAG.fullmatch(platform_tag):
        major, minor, arch = macos.groups()
        return tuple(
            Platform("darwin", oci_arch, None, f"{major}.{minor}")
            for oci_arch in _MACOS_ARCH.get(arch, ())
        )
    if platform_tag in _WINDOWS:
        return (Platform("windows", _WINDOWS[platform_tag]),)
    return ()


def wheel_platforms(platform_tags: Iterable[str]) -> tuple[Platform, ...]:
    """The distinct OCI platforms of a wheel, sorted; for one os/arch the lowest os.version."""
    best: dict[tuple[str, str, str | None], Platform] = {}
    for tag in platform_tags:
        for platform in tag_platforms(tag):
            key = (platform.os, platform.architecture, platform.variant)
            current = best.get(key)
            if current is None or _os_version_key(platform) < _os_version_key(current):
                best[key] = platform
    return tuple(sorted(best.values()))


def _os_version_key(platform: Platform) -> tuple[int, ...]:
    if not platform.os_version:
        return ()
    return tuple(int(part) for part in platform.os_version.split("."))


# --- building artifacts ------------------------------------------------------


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
