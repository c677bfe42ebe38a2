"""What to mirror, read from files: pip requirements files and PEP 751 lock files (pure).

Both readers return frozen records and touch nothing but the files named;
whether a requirement or locked package applies is decided per target
environment (:func:`requirement_applies`), never for the machine running
the sync. Without target environments every marker counts as true: the
mirror then holds what any machine could ask for.

Requirements files (:func:`read_requirements_file`) follow pip's format:
comments, ``\\`` continuations, ``-r``/``--requirement`` includes and
``-c``/``--constraint`` files (relative to the including file), and
``--hash=sha256:...`` per requirement. ``-i``/``--index-url`` names the
index to read (``index_url``, honoured as pip honours it). Editable
installs, URLs and local paths are refused: only index projects can be
mirrored. ``--extra-index-url`` is refused (two indexes in one sync is the
dependency-confusion risk), and so is every other pip option, by name:
none is ignored. Every error names the file and the line; the text of an
included file is never quoted (an include can name any file, a secret one
too, and errors end up in CI logs).

Lock files (:func:`read_pylock`) give the exact files to mirror: per
project the pinned versions and the (filename, sha256) pairs, so the sync
mirrors those files and nothing else, checked against their digests.

Typical use::

    reqs = read_requirements_file(path)
    requirements = reqs.for_environments(envs)   # constraints applied
    hashes = reqs.hashes                         # for SelectionOptions.hashes

    lock = read_pylock(path)
    requirements = lock.requirements(envs)       # name==version per package
    hashes = lock.hashes(envs)
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from oci_pypi_sync.errors import UsageError
from oci_pypi_sync.format import is_sha256_hex
from oci_pypi_sync.plan.environments import TargetEnvironment

_COMMENT = re.compile(r"(^|\s+)#.*$")
_ARCHIVE = re.compile(r"\.(whl|zip|tar\.gz|tgz|tar\.bz2|tar\.xz|tar)$", re.IGNORECASE)

#: pip options a requirements file may hold that take a value (the rest are flags).
_PIP_WITH_VALUE = frozenset(
    {
        "-f",
        "--find-links",
        "--trusted-host",
        "--only-binary",
        "--no-binary",
        "--use-feature",
        "--config-settings",
        "--global-option",
        "--install-option",
    }
)
#: pip options a requirements file may hold that take no value.
_PIP_FLAGS = frozenset({"--no-index", "--pre", "--prefer-binary", "--require-hashes", "--no-deps"})
#: What to use instead of a pip option this tool does not take from a file.
_INSTEAD = {
    "--pre": "pass --pre to oci-pypi sync",
    "--only-binary": "pass --only-binary to oci-pypi sync",
    "--no-deps": "leave it out: only what is listed is mirrored unless --with-deps is given",
    "--require-hashes": "leave it out: every --hash given is enforced",
    "--trusted-host": "leave it out: give the index's CA with SSL_CERT_FILE instead",
    "-f": "mirror from an index (--index-url); local and link pages are not read",
    "--find-links": "mirror from an index (--index-url); local and link pages are not read",
}
_SUPPORTED = "-r, -c, -i/--index-url, --hash"


class InputFileError(UsageError):
    """A requirements file or lock file is unreadable or says something we cannot mirror."""


@dataclass(frozen=True, slots=True)
class _Where:
    """A line of a requirements file, as errors name it.

    The text of an included file is never quoted: ``-r`` can name any file
    the tool can read (a key, a token), and errors are printed and logged.
    """

    path: Path
    lineno: int
    included: bool

    def __str__(self) -> str:
        return f"{self.path}:{self.lineno}"

    def quote(self, text: str) -> str:
        """`` 'text'``, or nothing for a line of an included file."""
        return "" if self.included else f" {text!r}"

    def detail(self, text: str) -> str:
        """``: text`` (a parser's message, which may quote the line), or nothing when included."""
        return "" if self.included else f": {text}"


# --- records ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequirementsInput:
    """What a requirements file (and the files it includes) asks for.

    ``requirements`` are as written, markers kept, constraints not applied;
    ``constraints`` come from ``-c`` files. ``hashes`` holds, per project,
    the sha256 digests named by ``--hash`` (only those files may be
    mirrored). ``index_url`` is the index a ``--index-url`` line names and
    ``index_url_source`` the ``file:line`` it is on. ``files`` lists every
    file read, the top one first.
    """

    requirements: tuple[Requirement, ...]
    constraints: tuple[Requirement, ...] = ()
    hashes: Mapping[NormalizedName, frozenset[str]] = field(default_factory=dict)
    index_url: str | None = None
    index_url_source: str | None = None
    files: tuple[Path, ...] = ()

    def for_environments(self, envs: Sequence[TargetEnvironment] = ()) -> tuple[Requirement, ...]:
        """The requirements that apply to at least one target, constraints intersected in.

        Per target, a requirement applies when its marker holds, and every
        constraint on its project whose marker holds narrows its specifier.
        The result has no markers and holds each distinct outcome once
        (several requirements for one project select the union of files).
        """
        targets: Sequence[TargetEnvironment | None] = envs or (None,)
        out: dict[str, Requirement] = {}
        for env in targets:
            for req in self.requirements:
                if not requirement_applies(req, env):
                    continue
                specifier = req.specifier
                name = canonicalize_name(req.name)
                for constraint in self.constraints:
                    if canonicalize_name(constraint.name) == name and requirement_applies(
                        constraint, env
                    ):
                        specifier &= constraint.specifier
                effective = _requirement(req.name, req.extras, specifier)
                out.setdefault(str(effective), effective)
        return tuple(out.values())


@dataclass(frozen=True, slots=True)
class LockedFile:
    """One file a lock file names: a wheel or an sdist, with its sha256."""

    filename: str
    sha256: str
    is_wheel: bool
    url: str | None = None
    size: int | None = None


@dataclass(frozen=True, slots=True)
class LockedPackage:
    """One ``[[packages]]`` entry of a lock file that comes from an index."""

    name: NormalizedName
    version: str
    files: tuple[LockedFile, ...]
    marker: Marker | None = None
    requires_python: SpecifierSet | None = None
    index: str | None = None

    def applies(
        self,
        env: TargetEnvironment | None,
        extras: Iterable[str] = (),
        groups: Iterable[str] = (),
    ) -> bool:
        """Whether the package is installed on ``env`` (always, when ``env`` is ``None``)."""
        if env is None:
            return True
        if self.requires_python is not None:
            major, minor = env.python
            if not self.requires_python.contains(f"{major}.{minor}.0", prereleases=True):
                return False
        if self.marker is None:
            return True
        environment: dict[str, str | frozenset[str]] = dict(env.markers)
        environment["extras"] = frozenset(extras)
        environment["dependency_groups"] = frozenset(groups)
        return self.marker.evaluate(environment, context="lock_file")


@dataclass(frozen=True, slots=True)
class PylockInput:
    """A PEP 751 lock file: the packages from an index and the exact files of each.

    ``default_groups`` are the dependency groups installed when none is
    asked for (the lock's ``default-groups``); they decide markers naming
    ``dependency_groups`` unless ``groups`` is given to the methods below.
    """

    path: Path
    lock_version: str
    packages: tuple[LockedPackage, ...]
    created_by: str | None = None
    requires_python: SpecifierSet | None = None
    default_groups: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def versions(self) -> Mapping[NormalizedName, frozenset[str]]:
        """The pinned versions per project (a lock may pin several behind markers)."""
        out: dict[NormalizedName, set[str]] = {}
        for package in self.packages:
            out.setdefault(package.name, set()).add(package.version)
        return {name: frozenset(versions) for name, versions in out.items()}

    @property
    def files(self) -> Mapping[NormalizedName, frozenset[tuple[str, str]]]:
        """Per project, the (filename, sha256) pairs the lock names."""
        out: dict[NormalizedName, set[tuple[str, str]]] = {}
        for package in self.packages:
            out.setdefault(package.name, set()).update(
                (f.filename, f.sha256) for f in package.files
            )
        return {name: frozenset(pairs) for name, pairs in out.items()}

    def packages_for(
        self,
        envs: Sequence[TargetEnvironment] = (),
        extras: Iterable[str] = (),
        groups: Iterable[str] | None = None,
    ) -> tuple[LockedPackage, ...]:
        """The packages installed on at least one target (all of them with no targets)."""
        chosen_groups = tuple(self.default_groups if groups is None else groups)
        chosen_extras = tuple(extras)
        targets: Sequence[TargetEnvironment | None] = envs or (None,)
        return tuple(
            package
            for package in self.packages
            if any(package.applies(env, chosen_extras, chosen_groups) for env in targets)
        )

    def requirements(
        self,
        envs: Sequence[TargetEnvironment] = (),
        extras: Iterable[str] = (),
        groups: Iterable[str] | None = None,
    ) -> tuple[Requirement, ...]:
        """``name==version`` (``===`` for a legacy version) per package that applies."""
        out: dict[str, Requirement] = {}
        for package in self.packages_for(envs, extras, groups):
            try:
                Version(package.version)
                pin = f"{package.name}=={package.version}"
            except InvalidVersion:
                pin = f"{package.name}==={package.version}"
            out.setdefault(pin, Requirement(pin))
        return tuple(out.values())

    def hashes(
        self,
        envs: Sequence[TargetEnvironment] = (),
        extras: Iterable[str] = (),
        groups: Iterable[str] | None = None,
    ) -> Mapping[NormalizedName, frozenset[str]]:
        """Per project, the sha256 digests of the files of the packages that apply."""
        out: dict[NormalizedName, set[str]] = {}
        for package in self.packages_for(envs, extras, groups):
            out.setdefault(package.name, set()).update(f.sha256 for f in package.files)
        return {name: frozenset(digests) for name, digests in out.items()}


def requirement_applies(req: Requirement, env: TargetEnvironment | None) -> bool:
    """Whether ``req``'s marker holds on the target (always without a marker or a target)."""
    if req.marker is None or env is None:
        return True
    return req.marker.evaluate(dict(env.markers))


def _requirement(name: str, extras: Iterable[str], specifier: SpecifierSet) -> Requirement:
    extras_text = f"[{','.join(sorted(extras))}]" if extras else ""
    return Requirement(f"{name}{extras_text}{specifier}")


# --- requirements files ------------------------------------------------------------


@dataclass(slots=True)
class _Reader:
    requirements: list[Requirement] = field(default_factory=list)
    constraints: list[Requirement] = field(default_factory=list)
    hashes: dict[NormalizedName, set[str]] = field(default_factory=dict)
    index_url: str | None = None
    index_url_source: str | None = None
    files: list[Path] = field(default_factory=list)

    def read(
        self, path: Path, constraint: bool, stack: tuple[Path, ...], where: str | None = None
    ) -> None:
        """Read one file; ``where`` is the ``file:line`` that included it."""
        prefix = f"{where}: " if where else ""
        resolved = path.resolve()
        if resolved in stack:
            chain = " -> ".join(str(p) for p in (*stack, resolved))
            raise InputFileError(f"{prefix}requirements file includes itself: {chain}")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputFileError(
                f"{prefix}cannot read requirements file {str(path)!r}: {exc.strerror or exc}"
            ) from exc
        except UnicodeDecodeError as exc:
            raise InputFileError(
                f"{prefix}{path} is not a requirements file (not UTF-8 text at byte {exc.start})"
            ) from None
        self.files.append(path)
        for lineno, line in _logical_lines(text):
            self._line(_Where(path, lineno, bool(stack)), line, constraint, (*stack, resolved))

    def _line(self, where: _Where, line: str, constraint: bool, stack: tuple[Path, ...]) -> None:
        if line.startswith("-"):
            self._options(where, _split(line, where), constraint, stack)
            return
        # A requirement, then per-requirement options (pip splits at the first option).
        req_text = _before_options(line)
        req = _parse_requirement(req_text.strip(), where)
        digests = _hash_options(_split(line[len(req_text) :], where), where)
        (self.constraints if constraint else self.requirements).append(req)
        if digests:
            self.hashes.setdefault(canonicalize_name(req.name), set()).update(digests)

    def _options(
        self, where: _Where, tokens: list[str], constraint: bool, stack: tuple[Path, ...]
    ) -> None:
        i = 0
        while i < len(tokens):
            option, value, i = _next_option(tokens, i, where)
            if option in ("-r", "--requirement", "-c", "--constraint"):
                if value is None:
                    raise InputFileError(f"{where}: {option} needs a file name")
                if "://" in value:
                    raise InputFileError(
                        f"{where}: {option} names a URL: only local files are read"
                    )
                nested_constraint = constraint or option in ("-c", "--constraint")
                self.read(where.path.parent / value, nested_constraint, stack, str(where))
            elif option in ("-e", "--editable"):
                raise InputFileError(
                    f"{where}: editable requirements ({option}) cannot be mirrored; "
                    "only index projects can"
                )
            elif option in ("-i", "--index-url"):
                self._index_url(where, option, value)
            elif option == "--extra-index-url":
                raise InputFileError(
                    f"{where}: --extra-index-url is not supported: with two indexes in one "
                    "sync, a project published on either one under a name the other uses "
                    "is mirrored in its place (dependency confusion). Mirror each index in "
                    "a sync of its own, each with the projects that come from it (for "
                    "example --index-url INTERNAL --allow NAME... and --index-url PUBLIC "
                    "--deny NAME...)"
                )
            else:
                raise InputFileError(_unsupported(where, option))

    def _index_url(self, where: _Where, option: str, value: str | None) -> None:
        if not value:
            raise InputFileError(f"{where}: {option} needs a URL")
        if self.index_url is not None and self.index_url.rstrip("/") != value.rstrip("/"):
            raise InputFileError(
                f"{where}: {option} names another index than {self.index_url_source}; "
                "a sync reads one index"
            )
        if self.index_url is None:
            self.index_url, self.index_url_source = value, str(where)


def _unsupported(where: _Where, option: str) -> str:
    """The error for a pip option this tool does not take from a requirements file."""
    known = option in _INSTEAD or option in _PIP_WITH_VALUE or option in _PIP_FLAGS
    if not known:
        shown = f" {option}" if not where.included else ""
        return f"{where}: unknown option{shown} (a requirements file may hold {_SUPPORTED})"
    instead = _INSTEAD.get(option)
    return f"{where}: pip option {option} is not supported in a requirements file" + (
        f"; {instead}" if instead else f" (it may hold {_SUPPORTED})"
    )


def _split(text: str, where: _Where) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise InputFileError(f"{where}: cannot split the options: {exc}") from exc


def _next_option(tokens: list[str], i: int, where: _Where) -> tuple[str, str | None, int]:
    """One option and its value from ``tokens[i:]`` (``--opt=v``, ``--opt v``, ``-rFILE``)."""
    token = tokens[i]
    if not token.startswith("-"):
        raise InputFileError(f"{where}: unexpected{where.quote(token)} after the options")
    if token.startswith("--"):
        name, eq, value = token.partition("=")
        if eq:
            return name, value, i + 1
        takes_value = name in (
            "--requirement",
            "--constraint",
            "--editable",
            "--index-url",
            "--extra-index-url",
            "--hash",
        ) or (name in _PIP_WITH_VALUE)
    else:
        name, value = token[:2], token[2:]
        if value:
            return name, value.lstrip("="), i + 1
        takes_value = name in ("-r", "-c", "-e", "-i", "-f")
    if takes_value:
        if i + 1 >= len(tokens):
            raise InputFileError(f"{where}: {name} needs a value")
        return name, tokens[i + 1], i + 2
    known_flag = name in _PIP_FLAGS
    if not known_flag and i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
        # An option we do not know, followed by what must be its value.
        return name, tokens[i + 1], i + 2
    return name, None, i + 1


def _before_options(line: str) -> str:
    """The requirement part of a line: up to the first whitespace-preceded option."""
    match = re.search(r"\s-", line)
    return line[: match.start()] if match else line


def _hash_options(tokens: list[str], where: _Where) -> set[str]:
    digests: set[str] = set()
    i = 0
    while i < len(tokens):
        option, value, i = _next_option(tokens, i, where)
        if option != "--hash":
            raise InputFileError(_unsupported(where, option))
        algorithm, colon, digest = (value or "").partition(":")
        if not colon or not digest:
            raise InputFileError(
                f"{where}: --hash{where.quote(value or '')} is not ALGORITHM:DIGEST"
            )
        if algorithm.lower() != "sha256":
            shown = f" {algorithm}:..." if not where.included else ""
            raise InputFileError(
                f"{where}: --hash{shown} is not supported; "
                "give sha256 hashes (the digest files are stored under)"
            )
        digest = digest.lower()
        if not is_sha256_hex(digest):
            shown = f" sha256:{digest}" if not where.included else ""
            raise InputFileError(f"{where}: --hash{shown} is not 64 hex digits")
        digests.add(digest)
    return digests


def _parse_requirement(text: str, where: _Where) -> Requirement:
    head = text.split(";", 1)[0].strip()
    # As pip does: an archive file name or anything path-like is a file, not a project.
    if "://" in head or head.startswith((".", "/", "~")) or _ARCHIVE.search(head):
        raise InputFileError(
            f"{where}:{where.quote(text)} is a URL or local path; only index projects can be "
            "mirrored"
        )
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise InputFileError(
            f"{where}: invalid requirement{where.quote(text)}{where.detail(str(exc))}"
        ) from None
    if req.url:
        raise InputFileError(
            f"{where}:{where.quote(text)} names a URL; only index projects can be mirrored"
        )
    return req


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """Lines with continuations joined and comments removed, each with its first line number."""
    buffer: list[str] = []
    start = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not buffer:
            start = lineno
        if raw.endswith("\\") and not _COMMENT.search(raw):
            buffer.append(raw[:-1])
            continue
        buffer.append(raw)
        line = _COMMENT.sub("", "".join(buffer)).strip()
        buffer = []
        if line:
            yield start, line
    if buffer:
        line = _COMMENT.sub("", "".join(buffer)).strip()
        if line:
            yield start, line


def read_requirements_file(path: str | Path) -> RequirementsInput:
    """Read a pip requirements file and everything it includes (see the module docstring)."""
    reader = _Reader()
    reader.read(Path(path), constraint=False, stack=())
    return RequirementsInput(
        requirements=tuple(reader.requirements),
        constraints=tuple(reader.constraints),
        hashes={name: frozenset(d) for name, d in reader.hashes.items()},
        index_url=reader.index_url,
        index_url_source=reader.index_url_source,
        files=tuple(reader.files),
    )


# --- PEP 751 lock files ----------------------------------------------------------------


def read_pylock(path: str | Path) -> PylockInput:
    """Read a ``pylock.toml`` (PEP 751): the packages from an index and their exact files.

    Refuses a ``lock-version`` whose major is not 1, packages that do not
    come from an index (``vcs``, ``directory``, ``archive``), and files with
    no sha256; a newer minor version is read with a warning, as the spec asks.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputFileError(f"cannot read lock file {str(path)!r}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path}: not a TOML file: {exc}") from exc
    warnings: list[str] = []
    lock_version = _lock_version(path, data, warnings)
    packages_data = data.get("packages", [])
    if not isinstance(packages_data, list):
        raise InputFileError(f"{path}: 'packages' must be an array of tables")
    packages = tuple(_locked_package(path, i, entry) for i, entry in enumerate(packages_data))
    created_by = data.get("created-by")
    default_groups = data.get("default-groups", [])
    if not isinstance(default_groups, list) or not all(isinstance(g, str) for g in default_groups):
        raise InputFileError(f"{path}: 'default-groups' must be an array of strings")
    return PylockInput(
        path=path,
        lock_version=lock_version,
        packages=packages,
        created_by=created_by if isinstance(created_by, str) else None,
        requires_python=_specifier(f"{path}: requires-python", data.get("requires-python")),
        default_groups=tuple(default_groups),
        warnings=tuple(warnings),
    )


def _lock_version(path: Path, data: Mapping[str, Any], warnings: list[str]) -> str:
    value = data.get("lock-version")
    if not isinstance(value, str):
        raise InputFileError(f"{path}: 'lock-version' is missing or not a string")
    major, _, minor = value.partition(".")
    if major != "1":
        raise InputFileError(
            f"{path}: lock-version {value!r} is not supported (this tool reads 1.x)"
        )
    if minor not in ("", "0"):
        warnings.append(f"{path}: lock-version {value!r} is newer than 1.0; read as 1.0")
    return value


def _specifier(where: str, value: object) -> SpecifierSet | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputFileError(f"{where} must be a string")
    try:
        return SpecifierSet(value)
    except InvalidSpecifier as exc:
        raise InputFileError(f"{where} {value!r} is invalid: {exc}") from exc


def _locked_package(path: Path, index: int, entry: object) -> LockedPackage:
    where = f"{path}: packages[{index}]"
    if not isinstance(entry, dict):
        raise InputFileError(f"{where} is not a table")
    raw_name = entry.get("name")
    if not isinstance(raw_name, str) or not raw_name:
        raise InputFileError(f"{where}: 'name' is missing or not a string")
    name = canonicalize_name(raw_name)
    where = f"{where} ({raw_name}"
    version = entry.get("version")
    where += f" {version})" if isinstance(version, str) else ")"
    for source in ("vcs", "directory", "archive"):
        if source in entry:
            raise InputFileError(
                f"{where}: a {source} source cannot be mirrored; only files from an index can"
            )
    if not isinstance(version, str) or not version:
        raise InputFileError(f"{where}: 'version' is missing (required for index packages)")
    marker: Marker | None = None
    if (marker_text := entry.get("marker")) is not None:
        if not isinstance(marker_text, str):
            raise InputFileError(f"{where}: 'marker' must be a string")
        try:
            marker = Marker(marker_text)
        except InvalidMarker as exc:
            raise InputFileError(f"{where}: invalid marker {marker_text!r}: {exc}") from exc
    files: list[LockedFile] = []
    wheels = entry.get("wheels", [])
    if not isinstance(wheels, list):
        raise InputFileError(f"{where}: 'wheels' must be an array of tables")
    for i, wheel in enumerate(wheels):
        files.append(_locked_file(f"{where}: wheels[{i}]", wheel, is_wheel=True))
    if (sdist := entry.get("sdist")) is not None:
        files.append(_locked_file(f"{where}: sdist", sdist, is_wheel=False))
    if not files:
        raise InputFileError(f"{where}: names no wheel and no sdist")
    index_url = entry.get("index")
    return LockedPackage(
        name=name,
        version=version,
        files=tuple(files),
        marker=marker,
        requires_python=_specifier(f"{where}: requires-python", entry.get("requires-python")),
        index=index_url if isinstance(index_url, str) else None,
    )


def _locked_file(where: str, entry: object, *, is_wheel: bool) -> LockedFile:
    if not isinstance(entry, dict):
        raise InputFileError(f"{where} is not a table")
    url = entry.get("url")
    file_path = entry.get("path")
    filename = entry.get("name")
    if filename is None:
        source = url if isinstance(url, str) else file_path if isinstance(file_path, str) else None
        if source is None:
            raise InputFileError(f"{where}: has neither 'name', 'url' nor 'path'")
        filename = unquote(urlsplit(source).path.rsplit("/", 1)[-1])
    if not isinstance(filename, str) or not filename:
        raise InputFileError(f"{where}: 'name' must be a file name")
    where = f"{where} ({filename})"
    if is_wheel != filename.endswith(".whl"):
        kind = "wheel" if is_wheel else "sdist"
        raise InputFileError(f"{where}: is not a {kind} file name")
    hashes = entry.get("hashes")
    if not isinstance(hashes, dict) or not hashes:
        raise InputFileError(f"{where}: 'hashes' is missing or empty")
    sha256 = hashes.get("sha256")
    if not isinstance(sha256, str) or not is_sha256_hex(sha256.lower()):
        raise InputFileError(f"{where}: no sha256 in 'hashes' (the digest files are stored under)")
    size = entry.get("size")
    return LockedFile(
        filename=filename,
        sha256=sha256.lower(),
        is_wheel=is_wheel,
        url=url if isinstance(url, str) else None,
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
    )
