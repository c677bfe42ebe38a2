"""The dependency closure: what pip would install, per target environment.

Each target environment is resolved on its own with :mod:`resolvelib` (the
backtracking resolver pip vendors), choosing as pip does: for each version
only the files that install on the target (wheel tags, ``requires-python``
for the target's Python; sdists unless ``only_binary``), the best of them
(wheel before sdist, most specific tag, highest build tag), versions newest
first, pre-releases only when asked for, named, or the only match, yanked
files only when pinned with ``==``/``===`` and nothing else matches.
Environment markers (and extras) are evaluated against the *target*
(:attr:`TargetEnvironment.markers`), which pip cannot do.

Dependencies come from core metadata, never from a build, under the rules
of :mod:`oci_pypi_sync.engine.metadata` (the ones a sync stores metadata
by): PEP 658 metadata when the page advertises it (hash-checked, naming the
file's project and version), else the wheel's own METADATA read with range
requests (:mod:`.index.remote_wheel`); an unadvertised ``.metadata`` is never
trusted. An sdist without advertised metadata is kept as a pin, and its
unknown dependencies are reported as unresolved.

Without environments, the host is the target (its :func:`packaging.tags.sys_tags`
and marker environment), as pip would resolve for the machine it runs on.

The resolver is synchronous; it runs in worker threads (one per
environment, all at once) and asks the event loop for pages and metadata,
which are fetched once per run whatever the number of environments, and
prefetched concurrently as soon as a project or file is known to matter.
With a cache (:mod:`oci_pypi_sync.index.cache`: the state file), a page
kept from an earlier run is only revalidated (a conditional GET, 304 when
unchanged) and metadata seen before is not fetched at all; when every page
a kept closure was resolved from is unchanged, that closure is the answer
(the same pages and metadata give the same resolution) and no page is even
parsed. A rerun with nothing new costs one small request per page.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

from packaging.markers import Marker, default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag, sys_tags
from packaging.utils import (
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version
from resolvelib import AbstractProvider, BaseReporter, Resolver
from resolvelib.resolvers import RequirementInformation, ResolutionImpossible, ResolutionTooDeep

from oci_pypi_sync import __version__
from oci_pypi_sync.engine.metadata import MetadataSource
from oci_pypi_sync.engine.retry import RetryPolicy, with_retries
from oci_pypi_sync.errors import IndexError_, ProjectNotFoundError, is_fatal
from oci_pypi_sync.format import UnsupportedFileError, parse_filename
from oci_pypi_sync.index.cache import IndexCache, PagesRead, keepable, read_page
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.index.records import CoreMetadata, DistributionFile, ProjectPage, StoredPage
from oci_pypi_sync.plan.environments import TargetEnvironment
from oci_pypi_sync.plan.select import version_sort_key

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The resolver gives up after this many rounds (pip's own limit) or this many
#: seconds per target environment, whichever comes first, and says why.
MAX_ROUNDS = 200_000
MAX_SECONDS = 120.0
_PYTHON = "<Python from Requires-Python>"


# --- public records ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pin:
    """A project at the version pip would install, and the file it would install."""

    project: NormalizedName
    version: str
    filename: str | None


@dataclass(frozen=True, slots=True)
class Unresolved:
    """A requirement the closure could not follow, and why, for one environment."""

    requirement: str
    reason: str
    environment: str


@dataclass(frozen=True, slots=True)
class Resolution:
    """What one environment needs: its pins (sorted by project) and what is missing."""

    environment: TargetEnvironment
    pins: tuple[Pin, ...]
    unresolved: tuple[Unresolved, ...]


class ClosurePages:
    """The pages a closure was resolved from, as this run read them (see :class:`PagesRead`).

    Pages the resolution parsed are given as they are; pages only revalidated
    (a kept closure taken as it was) are parsed when first asked for.
    """

    def __init__(
        self,
        parsed: Mapping[NormalizedName, ProjectPage] | None = None,
        copies: Mapping[NormalizedName, StoredPage] | None = None,
    ) -> None:
        self._parsed = dict(parsed or {})
        self._copies = dict(copies or {})

    def etag(self, project: str) -> str | None:
        name = canonicalize_name(project)
        page = self._parsed.get(name)
        if page is not None:
            return page.etag
        copy = self._copies.get(name)
        return copy.etag if copy is not None else None

    def page(self, project: str) -> ProjectPage | None:
        name = canonicalize_name(project)
        page = self._parsed.get(name)
        copy = self._copies.get(name)
        if page is None and copy is not None:
            try:
                page = self._parsed[name] = read_page(copy, name)
            except IndexError_ as exc:  # the caller reads the page itself
                logger.debug("%s: the kept page is not read (%s)", name, exc)
        return page

    def __len__(self) -> int:
        return len(self._parsed.keys() | self._copies.keys())


@dataclass(frozen=True, slots=True)
class Closure:
    """The resolutions of every target environment, and the project pages read for them.

    ``pages`` lets the sync that follows use the same pages instead of
    asking the index for each one again. ``reused``: no page changed since
    the kept closure was resolved, and it was taken as it was.
    """

    resolutions: tuple[Resolution, ...]
    pages: PagesRead = field(default_factory=ClosurePages)
    reused: bool = False

    def requirements(self) -> list[Requirement]:
        """``name==version`` for every pin of every environment, once each, sorted."""
        pins = {(pin.project, pin.version) for r in self.resolutions for pin in r.pins}
        return [
            Requirement(f"{name}=={version}")
            for name, version in sorted(pins, key=lambda p: (p[0], version_sort_key(p[1])))
        ]

    @property
    def unresolved(self) -> tuple[Unresolved, ...]:
        return tuple(u for r in self.resolutions for u in r.unresolved)


class HostEnvironment(TargetEnvironment):
    """The machine running the resolution: its own tags and marker environment."""

    def __init__(self) -> None:
        import sys

        super().__init__(sys.version_info[:2], "host")

    def __str__(self) -> str:
        return "host"

    @cached_property
    def tags(self) -> tuple[Tag, ...]:
        return tuple(sys_tags())

    @cached_property
    def platform_tags(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(tag.platform for tag in self.tags if tag.platform != "any"))

    @cached_property
    def markers(self) -> dict[str, str]:
        return {key: str(value) for key, value in default_environment().items()}


# --- fetching (event loop side) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Metadata:
    """A file's dependencies as read, or why they could not be."""

    metadata: CoreMetadata | None
    problem: str | None = None


class _Fetcher:
    """Pages and metadata, each fetched once per run, shared by every environment."""

    def __init__(
        self,
        index: IndexClient,
        policy: RetryPolicy,
        loop: asyncio.AbstractEventLoop,
        cache: IndexCache | None = None,
    ) -> None:
        self.index = index
        self.source = MetadataSource(index, probe=False, retry=policy, cache=cache)
        self.policy = policy
        self.loop = loop
        self.cache = cache
        self._copies: dict[NormalizedName, asyncio.Task[tuple[StoredPage, bool]]] = {}
        self._pages: dict[NormalizedName, asyncio.Task[ProjectPage]] = {}
        self._metadata: dict[str, asyncio.Task[_Metadata]] = {}
        # Pages the next run can revalidate: a copy of each is kept.
        self._kept: set[NormalizedName] = set()

    # Called on the loop.
    def copy_task(self, project: NormalizedName) -> asyncio.Task[tuple[StoredPage, bool]]:
        """The page's bytes, and whether they are new (not the copy kept): one request."""
        task = self._copies.get(project)
        if task is None:
            task = self._spawn(self._read_copy(project))
            self._copies[project] = task
        return task

    def page_task(self, project: NormalizedName) -> asyncio.Task[ProjectPage]:
        task = self._pages.get(project)
        if task is None:
            task = self._spawn(self._read_page(project))
            self._pages[project] = task
        return task

    async def _read_copy(self, project: NormalizedName) -> tuple[StoredPage, bool]:
        cache = self.cache
        stored = cache.stored_page(self.index.project_url(project)) if cache is not None else None
        return await with_retries(
            self.policy,
            f"the page of {project}",
            lambda: self.index.get_project_page_copy(project, stored),
        )

    async def _read_page(self, project: NormalizedName) -> ProjectPage:
        """The page parsed; a new copy is kept in place of the old one when it may be."""
        copy, new = await self.copy_task(project)
        page = read_page(copy, project)
        if not new:
            self._kept.add(project)
        elif self.cache is not None and keepable(copy, page):
            self.cache.record_page(copy)
            self._kept.add(project)
        return page

    def pages(self) -> dict[NormalizedName, ProjectPage]:
        """The pages read so far (not those that failed or are still on their way)."""
        return {
            name: task.result()
            for name, task in self._pages.items()
            if task.done() and not task.cancelled() and task.exception() is None
        }

    def revalidatable(self) -> bool:
        """Whether no page read failed, and the next run can revalidate each one read.

        Pages still on their way (prefetched, never waited for) did not
        weigh in the resolution; a page that failed did, by its absence.
        """
        done = [(name, task) for name, task in self._pages.items() if task.done()]
        return all(
            not task.cancelled() and task.exception() is None and name in self._kept
            for name, task in done
        )

    def metadata_task(
        self, file: DistributionFile, project: str, version: Version
    ) -> asyncio.Task[_Metadata]:
        task = self._metadata.get(file.url)
        if task is None:
            task = self._spawn(self._read_metadata(file, project, version))
            self._metadata[file.url] = task
        return task

    def _spawn(self, coro: Awaitable[T]) -> asyncio.Task[T]:
        async def run() -> T:
            return await coro

        task = self.loop.create_task(run())
        # A prefetch nobody waits for must not warn about its exception.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    async def _read_metadata(
        self, file: DistributionFile, project: str, version: Version
    ) -> _Metadata:
        choice = await self.source.dependencies(
            file, project, str(version), is_wheel=file.filename.endswith(".whl")
        )
        return _Metadata(choice.metadata, choice.note)


# --- the resolver's objects -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A release of a project (with extras, for a ``name[extras]`` identifier), as one file."""

    name: NormalizedName
    version: Version
    file: DistributionFile | None  # None: the target Python itself
    extras: frozenset[str] = frozenset()

    @property
    def identifier(self) -> str:
        return _identifier(self.name, self.extras)

    def base(self) -> _Candidate:
        return _Candidate(self.name, self.version, self.file)


@dataclass(frozen=True, slots=True)
class _Requirement:
    """What a requirement asks of one identifier: a specifier, or exactly one candidate."""

    name: NormalizedName
    extras: frozenset[str]
    specifier: SpecifierSet
    text: str
    exact: _Candidate | None = None

    @property
    def identifier(self) -> str:
        return _identifier(self.name, self.extras)

    def __str__(self) -> str:
        return self.text


def _identifier(name: str, extras: frozenset[str]) -> str:
    return f"{name}[{','.join(sorted(extras))}]" if extras else name


def _requirement(req: Requirement) -> _Requirement:
    extras = frozenset(canonicalize_name(e) for e in req.extras)
    text = str(req) if req.marker is None else str(req).split(";", 1)[0].strip()
    return _Requirement(canonicalize_name(req.name), extras, req.specifier, text)


def _pins_exactly(specifier: SpecifierSet) -> bool:
    return any(
        spec.operator == "===" or (spec.operator == "==" and "*" not in spec.version)
        for spec in specifier
    )


def _file_key(
    file: DistributionFile, env: TargetEnvironment, project: str
) -> tuple[Version, tuple[int, int, tuple[int, str] | tuple[()]]] | None:
    """Version and pip's preference among files of that version; ``None`` when unusable."""
    if file.filename.endswith(".whl"):
        try:
            name, version, build, tags = parse_wheel_filename(file.filename)
        except (InvalidWheelFilename, InvalidVersion):
            return None
        if name != project:
            return None
        priority = env.tag_priority(tags)
        if priority is None:
            return None
        return version, (1, -priority, build)
    try:
        parsed = parse_filename(file.filename, project)
        version = Version(parsed.version)
    except (UnsupportedFileError, InvalidVersion):
        return None
    if parsed.project != project:
        return None
    return version, (0, -len(env.tags), ())


class _Provider(AbstractProvider[_Requirement, _Candidate, str]):
    """resolvelib's view of the index for one environment (runs in a worker thread)."""

    def __init__(
        self,
        fetcher: _Fetcher,
        env: TargetEnvironment,
        *,
        pre: bool,
        only_binary: bool,
        user_requested: Mapping[str, int],
    ) -> None:
        self.fetcher = fetcher
        self.env = env
        self.pre = pre
        self.only_binary = only_binary
        self.user_requested = user_requested
        self.python = Version(".".join(map(str, env.python)))
        self.problems: dict[_Candidate, str] = {}
        self.missing: dict[str, str] = {}
        # Who asked for each identifier (None: the request), to explain a conflict
        # with the chain of requirements that led to it.
        self.required_by: dict[str, list[tuple[_Requirement, _Candidate | None]]] = {}
        self.stop = threading.Event()
        self._files: dict[NormalizedName, list[tuple[Version, DistributionFile]]] = {}

    # --- bridging to the loop -------------------------------------------------------

    def _wait(self, make: Callable[[], asyncio.Task[T]]) -> T:
        async def waiter() -> T:
            return await make()

        future: Future[T] = asyncio.run_coroutine_threadsafe(waiter(), self.fetcher.loop)
        while True:
            # Polled, so that an interrupted run stops this thread at once.
            if self.stop.is_set():
                future.cancel()
                raise _StoppedError
            try:
                return future.result(timeout=_POLL_SECONDS)
            except FutureTimeout:
                continue

    def _prefetch_page(self, project: NormalizedName) -> None:
        self.fetcher.loop.call_soon_threadsafe(self.fetcher.page_task, project)

    def _prefetch_metadata(self, candidate: _Candidate) -> None:
        if candidate.file is not None:
            file = candidate.file
            self.fetcher.loop.call_soon_threadsafe(
                self.fetcher.metadata_task, file, candidate.name, candidate.version
            )

    # --- candidates --------------------------------------------------------------

    def _usable_files(self, project: NormalizedName) -> list[tuple[Version, DistributionFile]]:
        """The best usable file of each version, newest version first."""
        cached = self._files.get(project)
        if cached is not None:
            return cached
        try:
            page = self._wait(lambda: self.fetcher.page_task(project))
        except ProjectNotFoundError:
            self.missing[project] = f"{project} is not on the index"
            page = None
        except IndexError_ as exc:  # a page that cannot be read: no candidates from it
            if is_fatal(exc):
                raise
            self.missing[project] = str(exc)
            page = None
        best: dict[Version, tuple[tuple[Any, ...], DistributionFile, bool]] = {}
        for position, file in enumerate(page.files if page is not None else ()):
            if self.only_binary and not file.filename.endswith(".whl"):
                continue
            key = _file_key(file, self.env, project)
            if key is None or not self._admits_python(file.requires_python):
                continue
            version, preference = key
            rank = (0 if file.yanked else 1, *preference, position)
            if version not in best or rank > best[version][0]:
                best[version] = (rank, file, file.yanked)
        files = [(version, best[version][1]) for version in sorted(best, reverse=True)]
        self._files[project] = files
        return files

    def _admits_python(self, requires_python: str | None) -> bool:
        if not requires_python:
            return True
        try:
            return SpecifierSet(requires_python).contains(self.python, prereleases=True)
        except InvalidSpecifier:
            return True  # pip ignores a requires-python it cannot read

    def identify(self, requirement_or_candidate: _Requirement | _Candidate) -> str:
        return requirement_or_candidate.identifier

    def get_preference(
        self,
        identifier: str,
        resolutions: Mapping[str, _Candidate],
        candidates: Mapping[str, Iterator[_Candidate]],
        information: Mapping[str, Iterator[RequirementInformation[_Requirement, _Candidate]]],
        backtrack_causes: Sequence[RequirementInformation[_Requirement, _Candidate]],
    ) -> Any:
        """pip's order: Python first, then exact, pinned, upper-bounded, user-requested."""
        requirements = [info.requirement for info in information[identifier]]
        direct = any(r.exact is not None for r in requirements)
        operators = [(s.operator, s.version) for r in requirements for s in r.specifier]
        pinned = any(op[:2] == "==" and "*" not in ver for op, ver in operators)
        upper = any(op in ("<", "<=", "~=") or (op == "==" and "*" in ver) for op, ver in operators)
        return (
            identifier != _PYTHON,
            not direct,
            not pinned,
            not upper,
            self.user_requested.get(identifier, math.inf),
            not operators,
            identifier,
        )

    def find_matches(
        self,
        identifier: str,
        requirements: Mapping[str, Iterator[_Requirement]],
        incompatibilities: Mapping[str, Iterator[_Candidate]],
    ) -> Iterable[_Candidate]:
        reqs = list(requirements[identifier])
        bad = set(incompatibilities[identifier])
        if identifier == _PYTHON:
            python = _Candidate(canonicalize_name("python"), self.python, None)
            ok = python not in bad and all(self.is_satisfied_by(r, python) for r in reqs)
            return [python] if ok else []
        exact = [r.exact for r in reqs if r.exact is not None]
        if exact:
            candidate = exact[0]
            ok = candidate not in bad and all(self.is_satisfied_by(r, candidate) for r in reqs)
            return [candidate] if ok else []
        name, extras = reqs[0].name, reqs[0].extras
        files = self._usable_files(name)
        specifier = SpecifierSet()
        for r in reqs:
            specifier &= r.specifier
        allowed = set(
            specifier.filter((v for v, _ in files), prereleases=True if self.pre else None)
        )
        applicable = [(v, f) for v, f in files if v in allowed]
        all_yanked = all(f.yanked for _, f in applicable)
        pinned = _pins_exactly(specifier)
        found = [
            _Candidate(name, version, file, extras)
            for version, file in applicable
            if not file.yanked or (all_yanked and pinned)
        ]
        found = [c for c in found if c not in bad]
        if found:
            self._prefetch_metadata(found[0])
        return found

    def is_satisfied_by(self, requirement: _Requirement, candidate: _Candidate) -> bool:
        if requirement.exact is not None:
            return candidate == requirement.exact
        return requirement.specifier.contains(candidate.version, prereleases=True)

    def get_dependencies(self, candidate: _Candidate) -> Iterable[_Requirement]:
        if candidate.file is None:
            return []
        base = candidate.base()
        file = candidate.file
        read = self._wait(lambda: self.fetcher.metadata_task(file, base.name, base.version))
        if read.metadata is None:
            self.problems[base] = read.problem or "no metadata"
            deps: list[_Requirement] = []
        else:
            deps = self._dependencies(read.metadata, candidate.extras)
        if candidate.extras:
            text = f"{base.name}=={base.version}"
            deps.insert(0, _Requirement(base.name, frozenset(), SpecifierSet(), text, exact=base))
        for dep in deps:
            self.required_by.setdefault(dep.identifier, []).append((dep, candidate))
            if dep.identifier != _PYTHON:  # the target's Python is no project of the index
                self._prefetch_page(dep.name)
        return deps

    def chain(self, requirement: _Requirement, parent: _Candidate | None) -> str:
        """How the request led to ``requirement``: ``requested a -> a 1.0 requires b>=2``."""
        links = [(requirement, parent)]
        seen: set[str] = set()
        while parent is not None and parent.identifier not in seen and len(links) < _MAX_CHAIN:
            seen.add(parent.identifier)
            found = next(
                (
                    (req, by)
                    for req, by in self.required_by.get(parent.identifier, ())
                    if self.is_satisfied_by(req, parent)
                ),
                None,
            )
            if found is None:
                break
            links.append(found)
            parent = found[1]
        return " -> ".join(
            f"requested {req}" if by is None else f"{by.name} {by.version} requires {req}"
            for req, by in reversed(links)
        )

    def _dependencies(self, metadata: CoreMetadata, extras: frozenset[str]) -> list[_Requirement]:
        deps = []
        if metadata.requires_python and not extras:
            try:
                specifier = SpecifierSet(metadata.requires_python)
            except InvalidSpecifier:
                specifier = None
            if specifier is not None:
                text = f"Python{metadata.requires_python}"
                deps.append(_Requirement(_PYTHON, frozenset(), specifier, text))  # type: ignore[arg-type]
        wanted = sorted(extras) if extras else [""]
        for line in metadata.requires_dist:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                logger.warning(
                    "%s %s: invalid requirement %r ignored", metadata.name, metadata.version, line
                )
                continue
            if req.marker is not None and not any(
                self._evaluate(req.marker, extra) for extra in wanted
            ):
                continue
            if extras and (req.marker is None or not _mentions_extra(req.marker)):
                continue  # the base candidate brings those
            deps.append(_requirement(req))
        return deps

    def _evaluate(self, marker: Marker, extra: str) -> bool:
        return marker.evaluate({**self.env.markers, "extra": extra})


def _mentions_extra(marker: Marker) -> bool:
    return "extra" in str(marker)


_POLL_SECONDS = 0.1
_MAX_CHAIN = 16


class _StoppedError(Exception):
    """The run was interrupted: the resolver's thread stops where it is."""


class _OutOfTimeError(Exception):
    """The resolution went past its time budget."""

    def __init__(self, rounds: int) -> None:
        super().__init__(rounds)
        self.rounds = rounds


class _Reporter(BaseReporter[_Requirement, _Candidate, str]):
    """Stops the resolver when asked to or out of time; keeps the last conflict."""

    def __init__(self, stop: threading.Event, deadline: float) -> None:
        self.stop = stop
        self.deadline = deadline
        self.last_conflict: Collection[RequirementInformation[_Requirement, _Candidate]] = ()

    def starting_round(self, index: int) -> None:
        if self.stop.is_set():
            raise _StoppedError
        if time.monotonic() > self.deadline:
            raise _OutOfTimeError(index)

    def resolving_conflicts(
        self, causes: Collection[RequirementInformation[_Requirement, _Candidate]]
    ) -> None:
        self.last_conflict = causes


# --- entry point ----------------------------------------------------------------------


async def resolve_closure(
    requirements: Sequence[Requirement],
    index: IndexClient,
    environments: Sequence[TargetEnvironment],
    *,
    pre: bool = False,
    only_binary: bool = False,
    retry: RetryPolicy | None = None,
    max_rounds: int = MAX_ROUNDS,
    max_seconds: float = MAX_SECONDS,
    cache: IndexCache | None = None,
) -> Closure:
    """Resolve ``requirements`` for every environment (the host when none is given).

    ``cache`` keeps pages, metadata and closures from one run to the next
    (see :mod:`oci_pypi_sync.index.cache`): a closure resolved in full from
    pages that can be revalidated is kept, and taken as it was while none of
    those pages changes.

    Conflicts, projects without a usable file and top-level projects the
    index does not have are reported per environment as
    :class:`Unresolved`, once per conflict, with the chains of requirements
    that meet in it; a resolution past ``max_rounds`` or ``max_seconds``
    ends with the last conflict it met. Only index failures (after
    retries) raise; a cancelled call stops the resolver threads at once.
    """
    loop = asyncio.get_running_loop()
    fetcher = _Fetcher(index, retry or RetryPolicy(), loop, cache)
    targets: Sequence[TargetEnvironment] = environments or (HostEnvironment(),)
    key = _closure_key(requirements, targets, index, pre=pre, only_binary=only_binary)
    kept = await _kept_closure(fetcher, key, targets) if cache is not None else None
    if kept is not None:
        return kept
    for req in requirements:
        fetcher.page_task(canonicalize_name(req.name))
    results = await asyncio.gather(
        *(
            _resolve_one(
                fetcher,
                requirements,
                env,
                pre=pre,
                only_binary=only_binary,
                max_rounds=max_rounds,
                max_seconds=max_seconds,
            )
            for env in targets
        )
    )
    pages = fetcher.pages()
    closure = Closure(tuple(results), ClosurePages(parsed=pages))
    if cache is not None and not closure.unresolved and fetcher.revalidatable():
        cache.record_closure(key, _closure_document(closure, pages))
    return closure


# --- closures kept from one run to the next ------------------------------------------


def _closure_key(
    requirements: Sequence[Requirement],
    targets: Sequence[TargetEnvironment],
    index: IndexClient,
    *,
    pre: bool,
    only_binary: bool,
) -> str:
    """What decides a closure besides the pages and metadata: the same key, the same closure.

    The requirements in their order (it is the resolver's order of
    preference), each target's tags and markers, the index, the options and
    the tool's version (whose rules resolve).
    """
    document = {
        "tool": __version__,
        "index": index.index_url,
        "requirements": [str(r) for r in requirements],
        "targets": [
            {"tags": [str(tag) for tag in env.tags], "markers": env.markers} for env in targets
        ],
        "pre": pre,
        "only_binary": only_binary,
    }
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(encoded).hexdigest()


def _closure_document(closure: Closure, pages: Mapping[NormalizedName, ProjectPage]) -> bytes:
    """The pins of each target and the projects whose pages they were resolved from."""
    document = {
        "pages": sorted(pages),
        "pins": [
            [[pin.project, pin.version, pin.filename] for pin in resolution.pins]
            for resolution in closure.resolutions
        ],
    }
    return json.dumps(document, separators=(",", ":")).encode()


async def _kept_closure(
    fetcher: _Fetcher, key: str, targets: Sequence[TargetEnvironment]
) -> Closure | None:
    """The kept closure, when every page it was resolved from is unchanged; else ``None``.

    The pages are revalidated all at once; whatever happens, the answers stay
    with the fetcher, so a resolution that follows asks for none of them again.
    """
    assert fetcher.cache is not None
    raw = fetcher.cache.stored_closure(key)
    if raw is None:
        return None
    try:
        document = json.loads(raw)
        projects = [canonicalize_name(name) for name in document["pages"]]
        pins = [
            tuple(Pin(canonicalize_name(p), str(v), f) for p, v, f in env_pins)
            for env_pins in document["pins"]
        ]
    except (ValueError, KeyError, TypeError):
        logger.debug("the kept closure is unreadable; resolving")
        return None
    if len(pins) != len(targets):
        return None
    answers = await asyncio.gather(
        *(fetcher.copy_task(project) for project in projects), return_exceptions=True
    )
    copies: dict[NormalizedName, StoredPage] = {}
    for project, answer in zip(projects, answers, strict=True):
        if isinstance(answer, BaseException):
            return None  # the resolution meets it again, and says what it means
        copy, new = answer
        if new:
            return None
        copies[project] = copy
    logger.info("dependency closure: none of its %d pages changed; taken as resolved", len(copies))
    resolutions = tuple(
        Resolution(env, env_pins, ()) for env, env_pins in zip(targets, pins, strict=True)
    )
    return Closure(resolutions, ClosurePages(copies=copies), reused=True)


async def _resolve_one(
    fetcher: _Fetcher,
    requirements: Sequence[Requirement],
    env: TargetEnvironment,
    *,
    pre: bool,
    only_binary: bool,
    max_rounds: int,
    max_seconds: float,
) -> Resolution:
    where = str(env)
    unresolved: list[Unresolved] = []
    wanted: list[_Requirement] = []
    for req in requirements:
        if req.marker is not None and not req.marker.evaluate({**env.markers, "extra": ""}):
            continue
        try:
            await fetcher.page_task(canonicalize_name(req.name))
        except ProjectNotFoundError:
            unresolved.append(Unresolved(str(req), f"{req.name} is not on the index", where))
            continue
        except IndexError_ as exc:
            if is_fatal(exc):
                raise
            unresolved.append(Unresolved(str(req), str(exc), where))
            continue
        wanted.append(_requirement(req))
    provider = _Provider(
        fetcher,
        env,
        pre=pre,
        only_binary=only_binary,
        user_requested={r.identifier: i for i, r in enumerate(wanted)},
    )
    for requirement in wanted:
        provider.required_by.setdefault(requirement.identifier, []).append((requirement, None))
    reporter = _Reporter(provider.stop, time.monotonic() + max_seconds)
    try:
        result = await asyncio.to_thread(_run, provider, reporter, wanted, max_rounds)
    except asyncio.CancelledError:
        provider.stop.set()
        raise
    except ResolutionImpossible as exc:
        unresolved.extend(_explain(exc.causes, provider, where))
        return Resolution(env, (), tuple(unresolved))
    except (ResolutionTooDeep, _OutOfTimeError) as exc:
        rounds = exc.round_count if isinstance(exc, ResolutionTooDeep) else exc.rounds
        limit = (
            f"{max_rounds} rounds" if isinstance(exc, ResolutionTooDeep) else f"{max_seconds:g} s"
        )
        reason = f"the resolver gave up after {rounds} rounds (its limit: {limit})"
        last = _explain(reporter.last_conflict, provider, where)
        if last:
            reason += "; the last conflict: " + "; ".join(u.reason for u in last)
        names = ", ".join(str(r) for r in wanted)
        unresolved.append(Unresolved(names, reason, where))
        return Resolution(env, (), tuple(unresolved))
    pins = []
    for identifier, candidate in sorted(result.items()):
        if identifier == _PYTHON or candidate.extras or candidate.file is None:
            continue
        pins.append(Pin(candidate.name, str(candidate.version), candidate.file.filename))
        problem = provider.problems.get(candidate)
        if problem is not None:
            unresolved.append(
                Unresolved(
                    f"{candidate.name}=={candidate.version}",
                    f"its dependencies are unknown: {problem}",
                    where,
                )
            )
    return Resolution(env, tuple(pins), tuple(unresolved))


def _run(
    provider: _Provider, reporter: _Reporter, wanted: list[_Requirement], max_rounds: int
) -> dict[str, _Candidate]:
    resolver: Resolver[_Requirement, _Candidate, str] = Resolver(provider, reporter)
    state = resolver.resolve(wanted, max_rounds=max_rounds)
    return dict(state.mapping)


def _explain(
    causes: Collection[RequirementInformation[_Requirement, _Candidate]],
    provider: _Provider,
    where: str,
) -> list[Unresolved]:
    """One entry per conflict: the chains of requirements that meet in it, and why."""
    groups: dict[str, list[RequirementInformation[_Requirement, _Candidate]]] = {}
    for cause in causes:
        groups.setdefault(cause.requirement.name, []).append(cause)
    out: list[Unresolved] = []
    for name, group in groups.items():
        chains = "; ".join(sorted({provider.chain(c.requirement, c.parent) for c in group}))
        if name == _PYTHON:
            reason = f"the target's Python {provider.python} is excluded: {chains}"
            requirement = "Python"
        elif name in provider.missing:
            reason = f"{provider.missing[name]}: {chains}"
            requirement = str(group[0].requirement) if len(group) == 1 else name
        else:
            kind = "satisfies" if len(group) == 1 else "satisfies all of"
            reason = f"no version of {name} that installs on {where} {kind}: {chains}"
            requirement = str(group[0].requirement) if len(group) == 1 else name
        out.append(Unresolved(requirement, reason, where))
    return out
