"""Choosing which files of a project page to mirror (pure).

A requirement's specifier picks versions (PEP 440, pre-releases only when
asked or named), yanked files are left out unless asked for or pinned with
``==``/``===`` (PEP 592), and ``only_binary`` drops sdists. Files that are
neither wheels nor sdists, or that carry no sha256 (the digest every OCI
blob is stored under), are reported as skipped with the reason. So are
files the page cannot vouch for: a filename listed twice with different
hashes (neither copy is taken), and a file whose name says it belongs to
another project (a page must not put files into another project's
repository). A requirement that selects no file at all is named in
:attr:`ProjectSelection.unmatched`, with why, as pip would fail on it.

With target environments, a wheel is kept when at least one target installs
it (its tags among the target's compatible tags and its ``requires-python``
admitting the target's Python), an sdist when its ``requires-python`` admits
at least one target's Python: a mirror for machines that are not this one.
``latest`` keeps only the newest versions that still have files to mirror,
``hashes`` keeps only files whose sha256 a requirements file or lock file
names, and :func:`project_allowed` applies the allow and deny lists.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from oci_pypi_sync.errors import UsageError
from oci_pypi_sync.format import FileName, UnsupportedFileError, parse_filename
from oci_pypi_sync.index.records import DistributionFile, ProjectPage
from oci_pypi_sync.plan.environments import TargetEnvironment

#: An allow or deny entry starting with this is a regular expression.
REGEX_PREFIX = "re:"


@dataclass(frozen=True, slots=True)
class SelectionOptions:
    """What to keep beyond the requirement's own specifier.

    ``environments``: the target machines (none: every file of the chosen
    versions). ``latest``: keep only the N newest versions that have files
    left. ``allow``/``deny``: project names, or ``re:PATTERN`` matched in full
    against the normalized name (see :func:`project_allowed`; the engine asks
    it before fetching a page). ``hashes``: per normalized project name, the
    only sha256 digests that may be mirrored (projects not in it are free).
    """

    pre: bool = False
    include_yanked: bool = False
    only_binary: bool = False
    environments: tuple[TargetEnvironment, ...] = ()
    latest: int | None = None
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    hashes: Mapping[NormalizedName, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.latest is not None and self.latest < 1:
            raise UsageError(f"latest must be at least 1, not {self.latest}")
        check_patterns(self.allow, "allow")
        check_patterns(self.deny, "deny")

    def key(self) -> dict[str, Any]:
        """What decides the selection, as JSON-able data (for a digest of the selection)."""
        return {
            "pre": self.pre,
            "include_yanked": self.include_yanked,
            "only_binary": self.only_binary,
            "environments": sorted(str(env) for env in self.environments),
            "latest": self.latest,
            "allow": sorted(self.allow),
            "deny": sorted(self.deny),
            "hashes": {
                str(canonicalize_name(name)): sorted(digests)
                for name, digests in sorted(self.hashes.items())
            },
        }


@dataclass(frozen=True, slots=True)
class SelectedFile:
    """A file chosen for mirroring, with what its name says."""

    file: DistributionFile
    name: FileName

    @property
    def version(self) -> str:
        return self.name.version


#: Why a file is left out: a stable code for programs, beside the reason for people.
REJECT_UNSUPPORTED = "unsupported-file"
REJECT_NO_SHA256 = "no-sha256"
REJECT_UNFIT = "no-fitting-file"
REJECT_CONFLICTING_HASHES = "conflicting-hashes"
REJECT_OTHER_PROJECT = "other-project"
#: Rejections that say the page itself cannot be trusted about a file (worth a warning).
UNTRUSTED_LISTINGS = frozenset({REJECT_CONFLICTING_HASHES, REJECT_OTHER_PROJECT})


@dataclass(frozen=True, slots=True)
class Rejection:
    """A file left out, and why (only for reasons a user would want to hear).

    ``kind`` is one of the ``REJECT_*`` codes and never changes for a given
    rule; ``reason`` says the same in words, with the particulars.
    """

    filename: str
    reason: str
    kind: str = REJECT_UNSUPPORTED


@dataclass(frozen=True, slots=True)
class Unmatched:
    """A requirement that selects no file of the page, and why (a failure, as for pip)."""

    requirement: str
    reason: str


@dataclass(frozen=True, slots=True)
class ProjectSelection:
    """The files of one project to mirror, grouped by version in PEP 440 order."""

    project: NormalizedName
    display_name: str
    releases: tuple[tuple[str, tuple[SelectedFile, ...]], ...]
    rejected: tuple[Rejection, ...]
    unmatched: tuple[Unmatched, ...] = ()

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


def version_sort_key(version: str) -> tuple[int, Version | str]:
    """PEP 440 order, legacy (unparseable) versions lowest, among themselves by text."""
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


# --- allow and deny lists ---------------------------------------------------


@lru_cache(maxsize=256)
def _pattern(entry: str) -> re.Pattern[str] | NormalizedName:
    if entry.startswith(REGEX_PREFIX):
        return re.compile(entry[len(REGEX_PREFIX) :])
    return canonicalize_name(entry)


def check_patterns(entries: Iterable[str], what: str = "allow/deny") -> None:
    """Refuse an empty entry or a regular expression that does not compile, naming it."""
    for entry in entries:
        if not entry.strip() or entry == REGEX_PREFIX:
            raise UsageError(f"empty {what} entry {entry!r}")
        try:
            _pattern(entry)
        except re.error as exc:
            raise UsageError(
                f"{what} entry {entry!r} is not a valid regular expression: {exc}"
            ) from exc


def _matches(name: NormalizedName, entry: str) -> bool:
    pattern = _pattern(entry)
    if isinstance(pattern, str):
        return pattern == name
    return pattern.fullmatch(name) is not None


def project_allowed(name: str, options: SelectionOptions) -> bool:
    """Whether a project may be mirrored: not denied, and allowed when there is an allow list.

    Entries are project names (compared normalized, so ``Django`` matches
    ``django``) or ``re:PATTERN``, matched in full against the normalized
    name (``re:django-.*``). Deny wins over allow.
    """
    normalized = canonicalize_name(name)
    if any(_matches(normalized, entry) for entry in options.deny):
        return False
    return not options.allow or any(_matches(normalized, entry) for entry in options.allow)


# --- target environments ---------------------------------------------------------


def _requires_python(file: DistributionFile) -> SpecifierSet | None:
    """The file's requires-python; an invalid one counts as absent, as pip treats it."""
    if not file.requires_python:
        return None
    try:
        return SpecifierSet(file.requires_python)
    except InvalidSpecifier:
        return None


def python_admitted(requires_python: SpecifierSet | None, env: TargetEnvironment) -> bool:
    """Whether ``requires_python`` admits the target's Python (as ``MAJOR.MINOR.0``)."""
    if requires_python is None:
        return True
    major, minor = env.python
    return requires_python.contains(f"{major}.{minor}.0", prereleases=True)


def _wheel_tags(name: FileName) -> frozenset[Tag]:
    return frozenset(
        Tag(python, abi, platform)
        for python, abi, platform in itertools.product(
            name.python_tags, name.abi_tags, name.platform_tags
        )
    )


def fits_environments(
    name: FileName, file: DistributionFile, environments: Sequence[TargetEnvironment]
) -> bool:
    """Whether at least one target installs this file (always, with no targets)."""
    if not environments:
        return True
    requires_python = _requires_python(file)
    if not name.is_wheel:
        return any(python_admitted(requires_python, env) for env in environments)
    tags = _wheel_tags(name)
    return any(env.supports(tags) and python_admitted(requires_python, env) for env in environments)


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
    allowed_digests = _allowed_digests(options.hashes, project)
    files, rejected = _vouched_files(page.files, project)
    by_version: dict[str, list[SelectedFile]] = {}
    # Per version kept, the requirements that wanted one of its files.
    wanted_by: dict[str, set[int]] = {}
    # Per requirement, why files of versions it chose were left out.
    left_out: dict[int, set[str]] = {}
    # Versions the specifiers chose but for which no file fits any target.
    unfit: set[str] = set()
    for file, name in files:
        wanting = {i for i, req in enumerate(requirements) if _wanted(name, file, req, options)}
        if not wanting:
            continue
        why = _left_out_because(name, file, options, allowed_digests)
        if why is not None:
            for i in wanting:
                left_out.setdefault(i, set()).add(why)
            if why == _UNFIT:
                unfit.add(name.version)
            elif why == _NO_SHA256:
                rejected.append(
                    Rejection(
                        file.filename,
                        "the index gives no sha256 for it (needed as its digest)",
                        REJECT_NO_SHA256,
                    )
                )
            continue
        by_version.setdefault(name.version, []).append(SelectedFile(file, name))
        wanted_by.setdefault(name.version, set()).update(wanting)
    versions = sorted(by_version, key=version_sort_key)
    if options.latest is not None:
        versions = versions[-options.latest :]
    releases = tuple(
        (version, tuple(sorted(by_version[version], key=lambda f: f.file.filename)))
        for version in versions
    )
    rejected.extend(_unfit_rejections(project, unfit - by_version.keys(), by_version, requirements))
    # A requirement whose versions --latest cut off did select files: the cut is the user's.
    matched = {i for wanting in wanted_by.values() for i in wanting}
    unmatched = {  # one per requirement, however often it was given
        str(req): Unmatched(str(req), _unmatched_reason(req, files, left_out.get(i, ()), options))
        for i, req in enumerate(requirements)
        if i not in matched
    }
    return ProjectSelection(
        project=project,
        display_name=page.name or requirements[0].name,
        releases=releases,
        rejected=tuple(rejected),
        unmatched=tuple(unmatched.values()),
    )


# Why a file a requirement wants is still left out (see _left_out_because).
_YANKED_ONLY = "yanked"
_SDIST = "an sdist (--only-binary)"
_UNFIT = "not for the target environments"
_HASHES = "not among the hashes given"
_NO_SHA256 = "without a sha256 on the page"


def _left_out_because(
    name: FileName,
    file: DistributionFile,
    options: SelectionOptions,
    allowed_digests: frozenset[str] | None,
) -> str | None:
    if options.only_binary and not name.is_wheel:
        return _SDIST
    if not fits_environments(name, file, options.environments):
        return _UNFIT
    if allowed_digests is not None and file.sha256 not in allowed_digests:
        return _HASHES
    if file.sha256 is None:
        return _NO_SHA256
    return None


def _vouched_files(
    files: Sequence[DistributionFile], project: NormalizedName
) -> tuple[list[tuple[DistributionFile, FileName]], list[Rejection]]:
    """The page's files that can be named and trusted, each filename once; and the others.

    A filename listed twice with different hashes leaves both copies out
    (which one is the file?); listed twice alike, it is one file. A file
    whose name says it belongs to another project is refused: mirroring it
    would put that project's file into this project's repository.
    """
    rejected: list[Rejection] = []
    digests: dict[str, set[str]] = {}
    for file in files:
        digests.setdefault(file.filename, set()).add(file.sha256 or "")
    kept: list[tuple[DistributionFile, FileName]] = []
    seen: set[str] = set()
    for file in files:
        if file.filename in seen:
            continue
        seen.add(file.filename)
        if len(digests[file.filename]) > 1:
            listed = ", ".join(sorted(d or "none" for d in digests[file.filename]))
            rejected.append(
                Rejection(
                    file.filename,
                    f"listed more than once with different sha256 digests ({listed}); "
                    "neither is mirrored",
                    REJECT_CONFLICTING_HASHES,
                )
            )
            continue
        try:
            name = parse_filename(file.filename, project)
        except UnsupportedFileError as exc:
            rejected.append(Rejection(file.filename, str(exc), REJECT_UNSUPPORTED))
            continue
        if name.project != project:
            rejected.append(
                Rejection(
                    file.filename,
                    f"its name says it belongs to the project {name.project!r}, "
                    f"not {str(project)!r}; not mirrored under {str(project)!r}",
                    REJECT_OTHER_PROJECT,
                )
            )
            continue
        kept.append((file, name))
    return kept, rejected


def _unmatched_reason(
    requirement: Requirement,
    files: Sequence[tuple[DistributionFile, FileName]],
    left_out: Collection[str],
    options: SelectionOptions,
) -> str:
    """Why ``requirement`` selects nothing, in words a user can act on."""
    label = f"no file matches {requirement}"
    if not files:
        return f"{label} (the index lists no file of {canonicalize_name(requirement.name)})"
    if left_out:
        return f"{label} (its files are {' or '.join(sorted(left_out))})"
    specifier = requirement.specifier
    chosen = {n.version for _, n in files if version_matches(n.version, specifier, options.pre)}
    if chosen:  # every file of the versions it names is yanked
        return f"{label} (its files are {_YANKED_ONLY}; pin the version with == to take them)"
    if any(version_matches(n.version, specifier, True) for _, n in files):
        return f"{label} (only pre-releases match it: add --pre to take them)"
    versions = sorted({n.version for _, n in files}, key=version_sort_key)
    shown = ", ".join(versions[-5:])
    more = f"{len(versions) - 5} older and " if len(versions) > 5 else ""
    return f"{label} (the index has {more}versions {shown})"


def _allowed_digests(
    hashes: Mapping[NormalizedName, frozenset[str]], project: NormalizedName
) -> frozenset[str] | None:
    digests = [d for name, d in hashes.items() if canonicalize_name(name) == project]
    if not digests:
        return None
    return frozenset(digest.lower() for group in digests for digest in group)


def _unfit_rejections(
    project: NormalizedName,
    unfit: set[str],
    kept: Mapping[str, object],
    requirements: Sequence[Requirement],
) -> list[Rejection]:
    """One line per version left with no file for any target, only where it tells something.

    That is a version a requirement pins exactly, or the newest version the
    specifiers chose (when none newer is kept): an old version lacking wheels
    for today's Pythons is no news, so there is no line for each of them.
    """
    if not unfit:
        return []
    pinned = {
        spec.version
        for req in requirements
        for spec in req.specifier
        if spec.operator in ("==", "===") and not spec.version.endswith(".*")
    }
    newest = max(unfit, key=version_sort_key)
    report = {v for v in unfit if _pinned_match(v, pinned)}
    if not kept or version_sort_key(newest) > max(version_sort_key(v) for v in kept):
        report.add(newest)
    reason = "no file fits any target environment"
    return [
        Rejection(f"{project}=={version}", reason, REJECT_UNFIT)
        for version in sorted(report, key=version_sort_key)
    ]


def _pinned_match(version: str, pinned: set[str]) -> bool:
    if version in pinned:
        return True
    try:
        parsed = Version(version)
    except InvalidVersion:
        return False
    for pin in pinned:
        try:
            if Version(pin) == parsed:
                return True
        except InvalidVersion:
            continue
    return False


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
