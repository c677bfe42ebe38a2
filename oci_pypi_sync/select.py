"""Choosing which files of a project page to mirror (pure).

A requirement's specifier picks versions (PEP 440, pre-releases only when
asked or named), yanked files are left out unless asked for or pinned with
``==``/``===`` (PEP 592), and ``only_binary`` drops sdists. Files that are
neither wheels nor sdists, or that carry no sha256 (the digest every OCI
blob is stored under), are reported as skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from oci_pypi_sync.index.records import DistributionFile, ProjectPage
from oci_pypi_sync.oci.format import FileName, UnsupportedFileError, parse_filename


@dataclass(frozen=True, slots=True)
class SelectionOptions:
    """What to keep beyond the requirement's own specifier."""

    pre: bool = False
    include_yanked: bool = False
    only_binary: bool = False


@dataclass(frozen=True, slots=True)
class SelectedFile:
    """A file chosen for mirroring, with what its name says."""

    file: DistributionFile
    name: FileName

    @property
    def version(self) -> str:
        return self.name.version


@dataclass(frozen=True, slots=True)
class Rejection:
    """A file left out, and why (only for reasons a user would want to hear)."""

    filename: str
    reason: str


@dataclass(frozen=True, slots=True)
class ProjectSelection:
    """The files of one project to mirror, grouped by version in PEP 440 order."""

    project: NormalizedName
    display_name: str
    releases: tuple[tuple[str, tuple[SelectedFile, ...]], ...]
    rejected: tuple[Rejection, ...]

    @property
    def files(self) -> tuple[SelectedFile, ...]:
        return tuple(f for _, files in self.releases for f in files)


def _pins_exactly(specifier: SpecifierSet) -> bool:
    return any(
        spec.operator == "===" or (spec.operator == "==" and not spec.version.endswith(".*"))
        for spec in specifier
    )


def version_matches(version: str, specifier: SpecifierSet, pre: bool) -> bool:
    """Whether a version string satisfies the specifier; legacy versions only match when
    there is no specifier or an ``===`` names them exactly."""
    try:
        parsed = Version(version)
    except InvalidVersion:
        if not specifier:
            return True
        return all(spec.operator == "===" and spec.version == version for spec in specifier)
    # Pre-releases only when asked for or named by the specifier (as pip does);
    # an empty specifier would otherwise admit them.
    prereleases = pre or bool(specifier.prereleases)
    return specifier.contains(parsed, prereleases=prereleases)


def _version_sort_key(version: str) -> tuple[int, Version | str]:
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


def _wanted(
    name: FileName, file: DistributionFile, requirement: Requirement, options: SelectionOptions
) -> bool:
    specifier = requirement.specifier
    if not version_matches(name.version, specifier, options.pre):
        return False
    return not file.yanked or options.include_yanked or _pins_exactly(specifier)


def select_files(
    page: ProjectPage,
    requirements: Sequence[Requirement],
    options: SelectionOptions = SelectionOptions(),
) -> ProjectSelection:
    """The files of ``page`` that any of ``requirements`` (all naming the page's
    project) asks for, filtered by ``options``."""
    if not requirements:
        raise ValueError("select_files needs at least one requirement")
    project = canonicalize_name(requirements[0].name)
    rejected: list[Rejection] = []
    by_version: dict[str, list[SelectedFile]] = {}
    for file in page.files:
        try:
            name = parse_filename(file.filename, project)
        except UnsupportedFileError as exc:
            rejected.append(Rejection(file.filename, str(exc)))
            continue
        if not any(_wanted(name, file, req, options) for req in requirements):
            continue
        if options.only_binary and not name.is_wheel:
            continue
        if file.sha256 is None:
            rejected.append(
                Rejection(file.filename, "the index gives no sha256 for it (needed as its digest)")
            )
            continue
        by_version.setdefault(name.version, []).append(SelectedFile(file, name))
    releases = tuple(
        (version, tuple(sorted(files, key=lambda f: f.file.filename)))
        for version, files in sorted(by_version.items(), key=lambda kv: _version_sort_key(kv[0]))
    )
    return ProjectSelection(
        project=project,
        display_name=page.name or requirements[0].name,
        releases=releases,
        rejected=tuple(rejected),
    )


def parse_requirements(values: Iterable[str]) -> list[Requirement]:
    """Parse PEP 508 requirement strings, naming the one at fault when one is invalid."""
    from packaging.requirements import InvalidRequirement

    from oci_pypi_sync.errors import UsageError

    out = []
    for value in values:
        try:
            out.append(Requirement(value))
        except InvalidRequirement as exc:
            raise UsageError(f"invalid requirement {value!r}: {exc}") from exc
        if out[-1].url:
            raise UsageError(
                f"requirement {value!r} names a URL; only index projects can be mirrored"
            )
    return out
