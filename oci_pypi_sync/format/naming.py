"""Names: repositories, version tags and distribution filenames (pure)."""

from __future__ import annotations

import hashlib
import re
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
_TAG_UNSAFE = re.compile(r"[^a-zA-Z0-9._-]")
_FALLBACK_STEM_LENGTH = 100


class UnsupportedFileError(ValueError):
    """A file of the index is neither a wheel nor an sdist we can name."""


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
