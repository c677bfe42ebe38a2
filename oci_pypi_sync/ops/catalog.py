"""The catalog: which projects and versions a mirror holds, without ``/v2/_catalog``.

Hosted registries rarely allow listing repositories, so every sync keeps a
catalog artifact in the repository ``oci-pypi.catalog`` under the prefix
(a name no normalized project name can take, since it has a dot), tagged
``latest``.

The catalog is cut in parts by a hash of the project name (see
:mod:`.catalog_parts`): a sync rewrites the parts its change falls in, and
the manifest that lists them, so what it costs follows the change, not the
mirror; reading one project costs one part. Writers merge through the
:class:`~oci_pypi_sync.engine.writer.Writer`'s tag merge: where another
writer changed the same parts meanwhile, the change goes in as a delta
beside theirs, never over them. In a layout, the parts a write replaced are
removed with it; in a registry they are left to its garbage collector.

The first version of the catalog (one JSON document per writer's
``fragment-<writer>`` tag, and their merge under ``latest``) is read, and
replaced by the second on the first write.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from oci_pypi_sync.errors import FATAL_ERRORS, OciPypiError, TargetError
from oci_pypi_sync.format import (
    OCI_MANIFEST,
    canonical_json,
    empty_config,
    marker_manifest,
    sha256_digest,
)
from oci_pypi_sync.limits import loads_json
from oci_pypi_sync.ops.catalog_parts import (
    ALL_BUCKETS,
    CatalogIndex,
    Layer,
    Span,
    Unit,
    UnitWrite,
    bucket_of,
    changed_since,
    layer_of,
    merge_index,
    split,
    units_for,
)
from oci_pypi_sync.plan.select import version_sort_key
from oci_pypi_sync.stores.protocols import (
    DiscardsBlobs,
    EditsLayoutRefs,
    KnowsTagDigests,
    StoredManifest,
    TagRead,
)

if TYPE_CHECKING:
    from oci_pypi_sync.engine.results import ReleaseResult
    from oci_pypi_sync.engine.writer import Writer
    from oci_pypi_sync.stores.protocols import Store

log = logging.getLogger(__name__)

CATALOG_REPOSITORY = "oci-pypi.catalog"
LATEST_TAG = "latest"
#: The first version: one JSON document per writer (``fragment-<writer>``), merged under ``latest``.
CATALOG_ARTIFACT = "application/vnd.oci-pypi.catalog.v1"
CATALOG_LAYER = "application/vnd.oci-pypi.catalog.v1+json"
FRAGMENT_PREFIX = "fragment-"
CATALOG_SCHEMA = 1
#: The ``schema`` of a part or delta of the second version.
PART_SCHEMA = 2
#: What a retired fragment tag of the first version points at: nothing to read.
RETIRED_ARTIFACT = "application/vnd.oci-pypi.catalog.retired"
#: Layers read at once.
READ_CONCURRENCY = 8
#: A layer at least this large is parsed in a thread (a server's loop stays free).
_PARSE_IN_THREAD = 64 * 1024
#: Times an update starts over when a part it read vanished (a layout's writer replaced it).
_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class CatalogRelease:
    """One version of a project in the mirror."""

    version: str
    tag: str
    digest: str


@dataclass(frozen=True, slots=True)
class ProjectStatus:
    """A project's PEP 792 status as the index last gave it, with its reason if any.

    ``active`` (the default, also for indexes that say nothing) is never
    stored; in a change it clears a status recorded before.
    """

    status: str
    reason: str | None = None

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    @property
    def quarantined(self) -> bool:
        """A quarantined project's files must not be offered for download (PEP 792)."""
        return self.status == QUARANTINED


ACTIVE = "active"
QUARANTINED = "quarantined"

Releases = Mapping[str, Mapping[str, CatalogRelease]]


@dataclass(frozen=True, slots=True)
class Catalog:
    """Projects (normalized names) and their releases, keyed by tag; and their statuses.

    ``statuses`` holds the projects whose index status is not ``active``
    (PEP 792: archived, deprecated, quarantined), including projects with no
    release in the mirror.
    """

    projects: Releases = field(default_factory=dict)
    statuses: Mapping[str, ProjectStatus] = field(default_factory=dict)

    def releases(self, project: str) -> list[CatalogRelease]:
        """A project's releases in PEP 440 order (legacy versions first)."""
        return sorted(
            self.projects.get(project, {}).values(), key=lambda r: version_sort_key(r.version)
        )

    def status(self, project: str) -> ProjectStatus | None:
        """The project's recorded status; ``None`` when active or unknown."""
        return self.statuses.get(project)

    @property
    def names(self) -> set[str]:
        """Every project the catalog names: with releases, or with a status."""
        return set(self.projects) | set(self.statuses)

    def merged(self, other: Catalog) -> Catalog:
        """Both catalogs; for a tag in both, ``other``'s release wins (it is newer)."""
        return self.applied(CatalogChange(other.projects, other.statuses))

    def applied(self, change: CatalogChange) -> Catalog:
        """The catalog after ``change``: its removals, then its releases and statuses."""
        projects, statuses = dict(self.projects), dict(self.statuses)
        _apply(projects, statuses, change)
        return Catalog(projects, statuses)

    def only(self, names: Iterable[str]) -> Catalog:
        """The entries of ``names`` (costs those names, not the catalog)."""
        chosen = list(names)
        return Catalog(
            {n: self.projects[n] for n in chosen if n in self.projects},
            {n: self.statuses[n] for n in chosen if n in self.statuses},
        )

    def retagged(self, moved: Mapping[tuple[str, str], tuple[str, str]]) -> Catalog:
        """The catalog with releases moved: ``(project, tag)`` -> ``(new tag, new digest)``."""
        projects: dict[str, dict[str, CatalogRelease]] = {}
        for name, releases in self.projects.items():
            out = projects.setdefault(name, {})
            for tag, release in releases.items():
                new_tag, digest = moved.get((name, tag), (tag, release.digest))
                out[new_tag] = CatalogRelease(release.version, new_tag, digest)
        return Catalog(projects, self.statuses)

    def to_json(self, schema: int = CATALOG_SCHEMA) -> bytes:
        """Canonical JSON: the first version's document, or (``schema`` 2) a part."""
        document: dict[str, Any] = {"schema": schema, "projects": _releases_json(self.projects)}
        statuses = _statuses_json({n: s for n, s in self.statuses.items() if not s.active})
        if statuses:
            document["status"] = statuses
        return canonical_json(document)

    @classmethod
    def from_json(cls, data: bytes, schema: int = CATALOG_SCHEMA) -> Catalog:
        document = loads_json(data, "the catalog")
        if not isinstance(document, dict) or document.get("schema") != schema:
            raise ValueError(f"not a catalog of schema {schema}")
        return cls(_releases_of(document.get("projects")), _statuses_of(document.get("status")))

    @classmethod
    def from_releases(
        cls,
        releases: Iterable[ReleaseResult],
        statuses: Mapping[str, ProjectStatus] | None = None,
    ) -> Catalog:
        """The releases a sync tagged or found unchanged (those with a digest).

        ``statuses`` are the statuses of the projects whose pages the sync
        read, ``active`` ones included (they clear an older status on merge).
        """
        projects: dict[str, dict[str, CatalogRelease]] = {}
        for release in releases:
            if release.digest is None or release.action not in ("pushed", "unchanged"):
                continue
            projects.setdefault(release.project, {})[release.tag] = CatalogRelease(
                release.version, release.tag, release.digest
            )
        return cls(projects, dict(statuses or {}))

    @property
    def empty(self) -> bool:
        """Nothing to record: no release, and no status but ``active``."""
        return not self.projects and all(s.active for s in self.statuses.values())


@dataclass(frozen=True, slots=True)
class CatalogChange:
    """What a writer records: releases tagged or found, statuses, and tags gone.

    ``statuses`` include ``active`` ones, which clear a status recorded
    before. ``removed`` are tags the target no longer holds. ``holds`` is
    never stored: for each project whose tags the writer listed, every tag
    the target held then; :func:`update_catalog` takes out the catalog's
    other tags of that project once the target confirms they are gone.
    """

    releases: Releases = field(default_factory=dict)
    statuses: Mapping[str, ProjectStatus] = field(default_factory=dict)
    removed: Mapping[str, frozenset[str]] = field(default_factory=dict)
    holds: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def of_releases(
        cls,
        releases: Iterable[ReleaseResult],
        statuses: Mapping[str, ProjectStatus] | None = None,
        holds: Mapping[str, frozenset[str]] | None = None,
    ) -> CatalogChange:
        """The releases a sync tagged or found (those with a digest), and what it saw."""
        found = Catalog.from_releases(releases)
        return cls(found.projects, dict(statuses or {}), holds=dict(holds or {}))

    @property
    def names(self) -> set[str]:
        return set(self.releases) | set(self.statuses) | set(self.removed) | set(self.holds)

    @property
    def empty(self) -> bool:
        return not self.names

    def split(self, spans: Sequence[Span]) -> list[CatalogChange]:
        """The change cut by ``spans`` (sorted, not overlapping): one change per span, each
        project's bucket computed once."""
        starts = [span.first for span in spans]
        pieces: list[tuple[dict[str, Any], ...]] = [({}, {}, {}, {}) for _ in spans]
        fields = (self.releases, self.statuses, self.removed, self.holds)
        for name in self.names:
            bucket = bucket_of(name)
            at = bisect.bisect_right(starts, bucket) - 1
            if at < 0 or not spans[at].contains(bucket):
                continue
            for values, piece in zip(fields, pieces[at], strict=True):
                if name in values:
                    piece[name] = values[name]
        return [CatalogChange(*piece) for piece in pieces]

    def to_json(self) -> bytes:
        """A delta's canonical JSON (``holds`` are resolved into ``removed`` before)."""
        document: dict[str, Any] = {
            "schema": PART_SCHEMA,
            "projects": _releases_json(self.releases),
        }
        if self.removed:
            document["removed"] = {n: sorted(t) for n, t in sorted(self.removed.items())}
        if self.statuses:
            document["status"] = _statuses_json(self.statuses)
        return canonical_json(document)

    @classmethod
    def from_json(cls, data: bytes) -> CatalogChange:
        document = loads_json(data, "a catalog delta")
        if not isinstance(document, dict) or document.get("schema") != PART_SCHEMA:
            raise ValueError(f"not a catalog delta of schema {PART_SCHEMA}")
        removed = document.get("removed") or {}
        if not isinstance(removed, dict):
            raise ValueError("a catalog delta's 'removed' is not an object")
        return cls(
            _releases_of(document.get("projects")),
            _statuses_of(document.get("status")),
            {str(n): frozenset(str(t) for t in tags) for n, tags in removed.items()},
        )


def _releases_json(projects: Releases) -> dict[str, Any]:
    return {
        name: {tag: {"version": r.version, "digest": r.digest} for tag, r in sorted(tags.items())}
        for name, tags in sorted(projects.items())
    }


def _statuses_json(statuses: Mapping[str, ProjectStatus]) -> dict[str, Any]:
    return {
        name: {"status": s.status, **({"reason": s.reason} if s.reason else {})}
        for name, s in sorted(statuses.items())
    }


def _releases_of(value: object) -> dict[str, dict[str, CatalogRelease]]:
    if not isinstance(value, dict):
        return {}
    return {
        str(name): {
            str(tag): CatalogRelease(str(r["version"]), str(tag), str(r["digest"]))
            for tag, r in releases.items()
        }
        for name, releases in value.items()
    }


def _statuses_of(value: object) -> dict[str, ProjectStatus]:
    if not isinstance(value, dict):
        return {}
    return {
        str(name): ProjectStatus(str(entry["status"]), str(entry.get("reason") or "") or None)
        for name, entry in value.items()
    }


class CatalogMovedError(OciPypiError):
    """A layer the catalog manifest named is gone: another writer replaced it; read again."""


# --- reading ------------------------------------------------------------------------------


async def catalog_revision(store: Store) -> str | None:
    """The digest ``latest`` points at: a catalog's identity, read without its content."""
    manifest = await store.get_manifest(CATALOG_REPOSITORY, LATEST_TAG)
    return manifest.digest if manifest is not None else None


def catalog_index(manifest: StoredManifest) -> CatalogIndex:
    """The parts a catalog manifest lists; a first-version catalog as one legacy layer."""
    if _is_v1(manifest.body):
        return CatalogIndex.legacy(manifest.digest)
    return CatalogIndex.parse(manifest.body)


def is_first_version(manifest: StoredManifest) -> bool:
    """Whether a catalog manifest is of the first version (one document, replaced on write)."""
    return _is_v1(manifest.body)


def _is_v1(body: bytes) -> bool:
    try:
        document = loads_json(body, "the catalog manifest")
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("artifactType") == CATALOG_ARTIFACT


async def read_layer(store: Store, layer: Layer) -> Catalog | CatalogChange:
    """A part (a catalog), a delta (a change), or a first-version catalog (read whole)."""
    if layer.legacy:
        return await _read_v1(store, layer.digest)
    data = await _blob(store, layer.digest)
    if layer.delta:
        return CatalogChange.from_json(data)
    if len(data) < _PARSE_IN_THREAD:
        return Catalog.from_json(data, PART_SCHEMA)
    return await asyncio.to_thread(Catalog.from_json, data, PART_SCHEMA)


async def _blob(store: Store, digest: str) -> bytes:
    try:
        chunks = [chunk async for chunk in store.open_blob(CATALOG_REPOSITORY, digest)]
    except FATAL_ERRORS:
        raise
    except OciPypiError as exc:
        if await store.has_blob(CATALOG_REPOSITORY, digest):
            raise
        raise CatalogMovedError(f"catalog layer {digest} is gone ({exc})") from exc
    data = b"".join(chunks)
    if sha256_digest(data) != digest:
        raise ValueError(f"catalog layer {digest}: its bytes do not match its digest")
    return data


def assemble(contents: Sequence[Catalog | CatalogChange]) -> Catalog:
    """Layers read in the manifest's order: parts joined, then deltas applied in order."""
    projects: dict[str, Mapping[str, CatalogRelease]] = {}
    statuses: dict[str, ProjectStatus] = {}
    for content in contents:
        if isinstance(content, Catalog):
            projects.update(content.projects)  # parts cover buckets no other part covers
            statuses.update(content.statuses)
        else:
            _apply(projects, statuses, content)
    return Catalog(projects, statuses)


def _apply(
    projects: dict[str, Mapping[str, CatalogRelease]],
    statuses: dict[str, ProjectStatus],
    change: CatalogChange,
) -> None:
    """``change`` applied in place: removals, then releases, then statuses."""
    for name in change.removed.keys() | change.releases.keys():
        gone = change.removed.get(name, frozenset())
        kept = {tag: r for tag, r in projects.get(name, {}).items() if tag not in gone}
        kept.update(change.releases.get(name, {}))
        if kept:
            projects[name] = kept
        else:
            projects.pop(name, None)
    for name, status in change.statuses.items():
        if status.active:
            statuses.pop(name, None)
        else:
            statuses[name] = status


async def read_layers(
    store: Store, layers: Sequence[Layer], *, jobs: int = READ_CONCURRENCY
) -> list[Catalog | CatalogChange]:
    """The layers' contents in their order, ``jobs`` read at a time."""
    slots = asyncio.Semaphore(jobs)

    async def one(layer: Layer) -> Catalog | CatalogChange:
        async with slots:
            return await read_layer(store, layer)

    return list(await asyncio.gather(*(one(layer) for layer in layers)))


async def read_catalog_manifest(store: Store, manifest: StoredManifest) -> Catalog:
    """The whole catalog a catalog manifest lists (every part, first or second version)."""
    index = catalog_index(manifest)
    return assemble(await read_layers(store, index.layers))


async def read_catalog(store: Store, *, exact: bool = False) -> Catalog | None:
    """The mirror's whole catalog; ``None`` when the target has no readable one.

    ``exact`` matters for a catalog of the first version only (the merge of
    every fragment rather than ``latest``, which lagged them). A mirror
    written before catalogs existed, by another tool, or damaged, has none:
    readers fall back on listing repositories.
    """
    try:
        for _ in range(_ATTEMPTS):
            manifest = await store.get_manifest(CATALOG_REPOSITORY, LATEST_TAG)
            if manifest is None:
                return await _read_fragments(store) if exact else None
            if exact and _is_v1(manifest.body):
                return await _read_fragments(store)
            try:
                return await read_catalog_manifest(store, manifest)
            except CatalogMovedError:
                continue  # a writer replaced it while we read
        raise ValueError("the catalog kept changing while it was read")
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("%s holds no readable catalog (%s)", CATALOG_REPOSITORY, exc)
        return None


@dataclass(frozen=True, slots=True)
class CatalogDiff:
    """What of a catalog may differ from one read before: spans of buckets, and what the
    catalog holds there now (``spans`` covering every bucket: the whole catalog)."""

    spans: tuple[Span, ...]
    catalog: Catalog

    def covers(self, project: str) -> bool:
        """Whether the project's entry may differ (outside the spans it is as it was)."""
        bucket = bucket_of(project)
        return any(span.contains(bucket) for span in self.spans)


async def read_catalog_since(
    store: Store, seen: bytes | None, manifest: StoredManifest
) -> CatalogDiff:
    """The parts of ``manifest`` that differ from the catalog manifest ``seen`` (its bytes,
    ``None``: nothing known), and where: what changed costs, not the catalog."""
    now = catalog_index(manifest)
    before = None
    if seen is not None:
        try:
            before = catalog_index(StoredManifest(OCI_MANIFEST, sha256_digest(seen), seen))
        except ValueError:
            before = None
    if before is None or any(layer.legacy for layer in (*before.layers, *now.layers)):
        return CatalogDiff((ALL_BUCKETS,), await read_catalog_manifest(store, manifest))
    layers, spans = changed_since(before, now)
    return CatalogDiff(tuple(spans), assemble(await read_layers(store, layers)))


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One project as the catalog records it."""

    name: str
    releases: tuple[CatalogRelease, ...]
    status: ProjectStatus | None


async def read_catalog_entry(store: Store, project: str) -> CatalogEntry | None:
    """One project's entry: the manifest, then only the layers that cover its bucket."""
    for _ in range(_ATTEMPTS):
        manifest = await store.get_manifest(CATALOG_REPOSITORY, LATEST_TAG)
        if manifest is None:
            return None
        layers = catalog_index(manifest).covering(bucket_of(project))
        try:
            catalog = assemble(await read_layers(store, layers)).only([project])
        except CatalogMovedError:
            continue
        if project not in catalog.names:
            return None
        return CatalogEntry(project, tuple(catalog.releases(project)), catalog.status(project))
    raise ValueError("the catalog kept changing while it was read")


@dataclass(frozen=True, slots=True)
class CatalogNames:
    """What a list of the mirror's projects needs of its catalog: names and statuses."""

    names: frozenset[str]
    statuses: Mapping[str, ProjectStatus]

    @classmethod
    def of(cls, catalog: Catalog) -> CatalogNames:
        return cls(frozenset(catalog.names), dict(catalog.statuses))


class CatalogNamesReader:
    """Reads every project name of a catalog, again only for the parts that changed.

    Each part's names are kept by the part's digest (parts are content
    addressed), for the revision read last: a new revision costs the parts
    that are new in it. A part that deltas cover is read with them, and not
    kept.
    """

    def __init__(self) -> None:
        self._parts: dict[str, CatalogNames] = {}

    async def read(self, store: Store, manifest: StoredManifest) -> CatalogNames:
        index = catalog_index(manifest)
        starts = (segment.first for segment in index.segments())
        units = units_for(index, starts)
        kept: dict[str, CatalogNames] = {}
        found: list[CatalogNames] = []
        for unit in units:
            if len(unit.base) == 1 and not unit.base[0].delta and not unit.base[0].legacy:
                digest = unit.base[0].digest
                names = self._parts.get(digest) or await self._summary(store, unit.base)
                kept[digest] = names
            elif unit.base:
                names = await self._summary(store, unit.base)
            else:
                continue
            found.append(names)
        self._parts = kept
        statuses: dict[str, ProjectStatus] = {}
        for names in found:
            statuses.update(names.statuses)
        return CatalogNames(frozenset().union(*(n.names for n in found)), statuses)

    async def _summary(self, store: Store, layers: Sequence[Layer]) -> CatalogNames:
        contents = await read_layers(store, layers)
        return await asyncio.to_thread(lambda: CatalogNames.of(assemble(contents)))


# --- the target's identity ------------------------------------------------------------

IDENTITY_TAG = "identity"
TARGET_ARTIFACT = "application/vnd.oci-pypi.target.v1"
A_TARGET_ID = "dev.oci-pypi.target-id"


def identity_manifest(identity: str) -> bytes:
    """The manifest naming a target's identity."""
    return marker_manifest(TARGET_ARTIFACT, {A_TARGET_ID: identity})


def identity_of(manifest: StoredManifest | None) -> str | None:
    """The identity a manifest names, if it is an identity manifest."""
    if manifest is None:
        return None
    try:
        value = (loads_json(manifest.body, "the target identity").get("annotations") or {}).get(
            A_TARGET_ID
        )
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


async def read_identity(store: Store) -> str | None:
    """The target's identity; ``None`` before the first sync wrote one (or after a wipe)."""
    return identity_of(await store.get_manifest(CATALOG_REPOSITORY, IDENTITY_TAG))


async def create_identity(writer: Writer) -> str:
    """Give the target an identity unless it has one; the identity it has now.

    A random id, written once. Two first syncs at once may both write one:
    the second write is refused where the store updates tags atomically,
    and the tag read back decides otherwise.
    """
    fresh = secrets.token_hex(16)
    empty = empty_config()
    await writer.blob_bytes(CATALOG_REPOSITORY, empty.descriptor.digest, empty.data)
    body = identity_manifest(fresh)

    def keep_any(current: StoredManifest | None) -> bytes | None:
        return None if identity_of(current) is not None else body

    await writer.tag(CATALOG_REPOSITORY, IDENTITY_TAG, OCI_MANIFEST, keep_any)
    found = await read_identity(writer.store)
    if found is None:
        raise TargetError(f"{writer.store.display_name} did not keep the target identity written")
    return found


# --- the first version --------------------------------------------------------------------


async def _read_v1(store: Store, reference: str) -> Catalog:
    """A first-version catalog document (``reference``: a tag or manifest digest)."""
    manifest = await store.get_manifest(CATALOG_REPOSITORY, reference)
    if manifest is None:
        raise CatalogMovedError(f"catalog {reference} is gone")
    layers = loads_json(manifest.body, f"catalog {reference}").get("layers") or []
    if not layers:
        raise ValueError(f"catalog {reference} has no layer")
    data = await _blob(store, str(layers[0]["digest"]))
    return await asyncio.to_thread(Catalog.from_json, data)


async def _fragments(store: Store) -> list[str]:
    return sorted(
        tag for tag in await store.list_tags(CATALOG_REPOSITORY) if tag.startswith(FRAGMENT_PREFIX)
    )


async def _read_fragments(store: Store) -> Catalog | None:
    """Every first-version fragment merged (what ``latest`` of that version lagged)."""
    merged: Catalog | None = None
    for tag in await _fragments(store):
        manifest = await store.get_manifest(CATALOG_REPOSITORY, tag)
        if manifest is None or not _is_v1(manifest.body):
            continue
        found = await _read_v1(store, manifest.digest)
        merged = found if merged is None else merged.merged(found)
    return merged


async def _read_legacy_exact(store: Store, layer: Layer) -> Catalog:
    """A first-version catalog to migrate: its fragments merged, else ``latest`` itself."""
    fragments = await _read_fragments(store)
    return fragments if fragments is not None else await _read_v1(store, layer.digest)


# --- writing ------------------------------------------------------------------------------


async def update_catalog(writer: Writer, change: CatalogChange) -> str | None:
    """Record ``change``: rewrite the parts it falls in, then ``latest`` through the writer.

    Returns the digest ``latest`` points at afterwards (``None``: the catalog
    is still empty). Costs the manifest, the parts the change falls in (and
    one tag list per project whose recorded tags the target may no longer
    hold), never the rest of the catalog.
    """
    if change.empty:
        return await catalog_revision(writer.store)
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return await _update(writer, change)
        except CatalogMovedError as exc:
            if attempt == _ATTEMPTS:
                raise
            log.info("catalog: %s; reading it again", exc)
    raise AssertionError("unreachable")  # pragma: no cover


async def _update(writer: Writer, change: CatalogChange) -> str | None:
    store = writer.store
    read_at = await writer.read_point()
    current = await store.get_manifest(CATALOG_REPOSITORY, LATEST_TAG)
    index = catalog_index(current) if current is not None else CatalogIndex()
    units = units_for(index, (bucket_of(name) for name in change.names))
    writes = []
    blobs: dict[str, bytes] = {}
    for unit, part in zip(units, change.split([unit.span for unit in units]), strict=True):
        write = await _rewrite(writer.store, unit, part, blobs)
        if write is not None:
            writes.append(write)
    if not writes:
        return current.digest if current is not None else None
    for digest, data in blobs.items():
        await writer.blob_bytes(CATALOG_REPOSITORY, digest, data)
    empty = empty_config()
    await writer.blob_bytes(CATALOG_REPOSITORY, empty.descriptor.digest, empty.data)

    def merge(tagged: StoredManifest | None) -> bytes | None:
        now = catalog_index(tagged) if tagged is not None else CatalogIndex()
        merged = merge_index(now, writes)
        return merged.manifest() if merged is not None else None

    read = TagRead(current, read_at)
    tagged = await writer.tag(CATALOG_REPOSITORY, LATEST_TAG, OCI_MANIFEST, merge, read=read)
    await _tidy(writer, index, tagged, current, writes)
    return tagged


async def _rewrite(
    store: Store, unit: Unit, change: CatalogChange, blobs: dict[str, bytes]
) -> UnitWrite | None:
    """The unit's content with ``change`` applied, cut into parts (their bytes put in
    ``blobs``), and the change alone as a delta; ``None``: nothing would change."""
    contents: list[Catalog | CatalogChange] = []
    for layer in unit.base:
        if layer.legacy:
            contents.append(await _read_legacy_exact(store, layer))
    contents += await read_layers(store, [layer for layer in unit.base if not layer.legacy])
    before = assemble(contents)
    change = await _confirmed_removals(store, before, change)
    after = before.applied(change)
    if after == before and not any(layer.delta or layer.legacy for layer in unit.base):
        return None
    parts = []
    whole = after.to_json(PART_SCHEMA)
    for span, names in split({**after.projects, **after.statuses}, unit.span, len(whole)):
        data = after.only(names).to_json(PART_SCHEMA) if len(names) < len(after.names) else whole
        layer = layer_of(span, data)
        blobs[layer.digest] = data
        parts.append(layer)
    delta_bytes = replace(change, holds={}).to_json()
    delta = layer_of(unit.span, delta_bytes, delta=True)
    blobs[delta.digest] = delta_bytes
    return UnitWrite(unit, tuple(parts), delta)


async def _confirmed_removals(
    store: Store, before: Catalog, change: CatalogChange
) -> CatalogChange:
    """``holds`` turned into removals: tags the catalog records that the listing lacked,
    taken out once a fresh tag list confirms the target no longer holds them.

    The fresh list closes the race with another writer that tagged one of
    them after our listing; it is asked only for projects with such tags.
    """
    removed = {name: set(tags) for name, tags in change.removed.items()}
    for name, held in change.holds.items():
        recorded = set(before.projects.get(name, {}))
        missing = recorded - held - set(change.releases.get(name, {}))
        if not missing:
            continue
        now = set(await store.list_tags(name))
        gone = missing - now
        if gone:
            log.info("catalog: %s no longer holds %s", name, ", ".join(sorted(gone)))
            removed.setdefault(name, set()).update(gone)
    return replace(
        change, removed={name: frozenset(tags) for name, tags in removed.items() if tags}
    )


async def _tidy(
    writer: Writer,
    read: CatalogIndex,
    tagged: str | None,
    replaced: StoredManifest | None,
    writes: Sequence[UnitWrite],
) -> None:
    """After a write: retire a first-version catalog, and in a layout remove what the
    catalog no longer references (a registry's garbage collector does that there)."""
    store = writer.store
    legacy = [layer for layer in read.layers if layer.legacy]
    if not legacy and not isinstance(store, DiscardsBlobs):
        return  # nothing to retire, nothing this store lets us remove
    final = await store.get_manifest(CATALOG_REPOSITORY, LATEST_TAG)
    now = catalog_index(final) if final is not None else CatalogIndex()
    if legacy and not any(layer.legacy for layer in now.layers):
        await _retire_v1(writer)
    if not isinstance(store, DiscardsBlobs):
        return
    kept = {layer.digest for layer in now.layers}
    kept |= {digest for digest in (tagged, final.digest if final else None) if digest}
    if isinstance(store, KnowsTagDigests):
        kept |= set(store.tag_digests().get(CATALOG_REPOSITORY, {}).values())
    garbage = {layer.digest for write in writes for layer in write.unit.base if not layer.legacy}
    garbage |= {digest for write in writes for digest in write.ours}
    if replaced is not None:
        garbage.add(replaced.digest)
    for digest in sorted(garbage - kept):
        await store.discard_blob(CATALOG_REPOSITORY, digest)


async def _retire_v1(writer: Writer) -> None:
    """The first version's fragment tags, once ``latest`` holds their merge in parts.

    A layout loses the tags and their blobs; a registry (whose tags this
    tool cannot delete) gets them pointed at a manifest naming nothing, so
    the old catalogs' blobs are left to its garbage collector.
    """
    store = writer.store
    for tag in await _fragments(store):
        manifest = await store.get_manifest(CATALOG_REPOSITORY, tag)
        if manifest is None or not _is_v1(manifest.body):
            continue
        if isinstance(store, EditsLayoutRefs) and isinstance(store, DiscardsBlobs):
            layers = loads_json(manifest.body, f"catalog {tag}").get("layers") or []
            await store.untag(CATALOG_REPOSITORY, tag)
            for digest in [manifest.digest, *(str(layer["digest"]) for layer in layers)]:
                await store.discard_blob(CATALOG_REPOSITORY, digest)
        else:
            await writer.put_tag(CATALOG_REPOSITORY, tag, OCI_MANIFEST, _retired_manifest())
        log.info("catalog: %s of the first version retired", tag)


def _retired_manifest() -> bytes:
    return marker_manifest(RETIRED_ARTIFACT, {})


async def write_catalog(writer: Writer, catalog: Catalog) -> str | None:
    """Make ``latest`` hold exactly ``catalog`` (a migration rewriting every release)."""
    current = await read_catalog(writer.store)
    known = current if current is not None else Catalog()
    removed = {
        name: frozenset(tags)
        for name, releases in known.projects.items()
        if (tags := set(releases) - set(catalog.projects.get(name, {})))
    }
    statuses = {
        **{name: ProjectStatus(ACTIVE) for name in known.statuses if name not in catalog.statuses},
        **catalog.statuses,
    }
    return await update_catalog(writer, CatalogChange(catalog.projects, statuses, removed))
