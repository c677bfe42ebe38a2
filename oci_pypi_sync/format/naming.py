"""Names: repositories, version tags and distribution filenames (pure)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from dataclasses import dataclass

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from oci_pypi_sync.format.media import SDIST_SUFFIXES, WHEEL_LAYER

MAX_TAG_LENGTH = 128
_TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_FALLBACK_STEM_LENGTH = 100
#: Fallback tags of format 2 start with this; other letter-initial tags stay reserved.
LEGACY_TAG_PREFIX = "legacy-"
_LEGACY_STEM_UNSAFE = re.compile(r"[^A-Za-z0-9]+")
_V1_TAG_UNSAFE = re.compile(r"[^a-zA-Z0-9._-]")
#: A PEP 503 normalized name, which is what a project repository is called.
_PROJECT_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


class UnsupportedFileError(ValueError):
    """A file of the index is neither a wheel nor an sdist we can name."""


def is_plain_filename(filename: str) -> bool:
    """Whether ``filename`` names a file and nothing else: no directory, no NUL, not empty.

    A filename from an index or a mirror ends up as a path, an annotation,
    a URL and a page; one carrying a directory (``/``, ``\\``, ``.``,
    ``..``), a control character or a NUL is refused rather than trusted.
    """
    return (
        bool(filename)
        and filename not in {".", ".."}
        and not any(char in filename for char in ("/", "\\"))
        and all(ord(char) >= 0x20 and char != "\x7f" for char in filename)
    )


def repository_name(project: str) -> NormalizedName:
    """The repository path component for a project: its PEP 503 normalized name."""
    return canonicalize_name(project)


def is_project_repository(name: str) -> bool:
    """Whether a repository holds a project: its name is a normalized name, nothing nested.

    Other artifacts live in names a normalized name cannot take (the
    catalog's ``oci-pypi.catalog`` has a dot), so this is the one test.
    """
    return _PROJECT_NAME.fullmatch(name) is not None


# --- versions and tags -------------------------------------------------------


def normalize_version(version: str) -> str:
    """The PEP 440 normal form, or the string unchanged for a legacy version."""
    try:
        return str(Version(version))
    except InvalidVersion:
        return version


def _pep440_tag(version: str) -> tuple[str | None, str]:
    """The tag of a valid PEP 440 version (``None`` if legacy or too long), and its source.

    The source is what a fallback tag is derived from: the normal form of a
    valid version, the version as written otherwise.
    """
    try:
        normal = str(Version(version))
    except InvalidVersion:
        return None, version
    tag = normal.replace("+", "-").replace("!", "_")
    return (tag if len(tag) <= MAX_TAG_LENGTH else None), normal


def version_tag(version: str) -> str:
    """The tag for a version.

    A valid PEP 440 version is normalised; ``+`` becomes ``-`` and ``!``
    becomes ``_`` (a normalised version contains neither ``-`` nor ``_``,
    so the mapping is reversible). A legacy version, or a tag longer than
    128 characters, falls back to ``legacy-<stem>-<h16>``: the stem is the
    version with each run of characters outside ``[A-Za-z0-9]`` replaced by
    ``.`` (trimmed, at most 100 characters), ``h16`` the first 16 hex digits
    of the sha256 of the version. It is a valid registry tag and a valid
    component of an image-layout ref name. Version tags start with a digit,
    fallback tags with ``legacy-``, and every other tag this format writes
    (or leaves to other tools) with another letter, so they never collide.
    """
    tag, source = _pep440_tag(version)
    if tag is not None:
        return tag
    stem = _LEGACY_STEM_UNSAFE.sub(".", source).strip(".")[:_FALLBACK_STEM_LENGTH].rstrip(".")
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    return f"{LEGACY_TAG_PREFIX}{stem}-{digest}" if stem else f"{LEGACY_TAG_PREFIX}{digest}"


def format1_version_tag(version: str) -> str:
    """The tag format 1 gave a version: as :func:`version_tag`, but ``_<stem>.<h16>`` fallbacks.

    Format 1's fallback is not a valid ref-name component in a layout; it
    is only read (and migrated), never written.
    """
    tag, source = _pep440_tag(version)
    if tag is not None:
        return tag
    stem = _V1_TAG_UNSAFE.sub("-", source)[:_FALLBACK_STEM_LENGTH]
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    return f"_{stem}.{digest}"


def is_superseded_tag(tag: str, version: str, tags: Collection[str]) -> bool:
    """A format-1 fallback tag of ``version`` once its format-2 tag is among ``tags``.

    A sync into a format-1 mirror writes a legacy version under its new tag
    and cannot delete the old one on every registry; readers skip the old.
    """
    new = version_tag(version)
    return tag != new and tag == format1_version_tag(version) and new in tags


def tag_version(tag: str) -> str | None:
    """The normalised version a version tag stands for, or ``None`` for other tags.

    Fallback tags cannot be reversed from the tag alone: read the index's
    ``org.opencontainers.image.version`` annotation instead.
    """
    if not tag or not tag[0].isdigit():
        return None
    candidate = tag.replace("-", "+").replace("_", "!")
    try:
        return str(Version(candidate))
    except InvalidVersion:
        return None


def is_release_tag(tag: str) -> bool:
    """Whether a tag can name a version: a version tag, or a fallback tag of format 2 or 1.

    Everything else (``latest``, referrers fallback tags, other tools'
    tags) is not a version of the project, whatever it points at.
    """
    return bool(tag) and (tag[0].isdigit() or tag.startswith((LEGACY_TAG_PREFIX, "_")))


def is_valid_tag(tag: str) -> bool:
    return _TAG_RE.fullmatch(tag) is not None


# --- layout ref names ------------------------------------------------------------


def layout_ref_name(repository: str, tag: str) -> str:
    """The ``org.opencontainers.image.ref.name`` of a tag in a layout: ``<repository>/<tag>``.

    Every client splits ``LAYOUT:REF`` at a colon (skopeo and umoci at the
    first, the ORAS CLI at the last), so a ref without one is addressable
    by all of them; a tag never contains ``/``, so the last ``/`` splits it.
    """
    return f"{repository}/{tag}"


def parse_layout_ref_name(name: str) -> tuple[str, str] | None:
    """``(repository, tag)`` of a layout ref name, format 2 (``six/1.17.0``) or 1 (``six:1.17.0``).

    ``None`` for a ref name of another shape (another tool's, like a bare
    ``latest``): readers skip it.
    """
    cut = max(name.rfind("/"), name.rfind(":"))
    repository, tag = name[:cut], name[cut + 1 :]
    if cut <= 0 or not is_valid_tag(tag) or repository.endswith(("/", ":")):
        return None
    return repository, tag


def is_format1_ref_name(name: str) -> bool:
    """A ref name format 1 wrote: ``<repository>:<tag>`` with a repository of one component."""
    parsed = parse_layout_ref_name(name)
    return parsed is not None and "/" not in name and name == f"{parsed[0]}:{parsed[1]}"


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
