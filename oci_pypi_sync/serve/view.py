"""A read-only, cached view of a mirror: projects, their files and core metadata.

Every read goes through the :class:`~oci_pypi_sync.stores.protocols.Store`
protocol. What is mutable (the repository list, a project's tags, which
index a tag points at) is kept for ``ttl`` seconds; what is
content-addressed (a parsed version index, a file manifest's metadata
layer) is kept by digest for as long as there is room, since it can never
change. A warm project page therefore costs no store round trip at all, and
after the TTL only the tag list and the tags' indexes are read again: an
index whose digest is already known is not parsed twice. Concurrent
requests for the same thing share one fetch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from oci_pypi_sync import format as fmt
from oci_pypi_sync.engine.flight import SingleFlight
from oci_pypi_sync.ops.catalog import (
    CATALOG_REPOSITORY,
    CatalogMovedError,
    CatalogNamesReader,
    ProjectStatus,
    catalog_revision,
)
from oci_pypi_sync.serve.blobs import read_blob_bytes
from oci_pypi_sync.serve.model import (
    Project,
    Release,
    ServedFile,
    assemble_project,
    release_from_index,
)
from oci_pypi_sync.stores.protocols import KnowsTagDigests, Store

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

DEFAULT_TTL = 60.0
#: Parsed version indexes kept by digest (about 1 KB each per file entry).
RELEASE_CACHE_SIZE = 100_000
#: Core metadata files kept in memory by digest (a few KB each).
METADATA_CACHE_SIZE = 10_000
#: Projects (and names found absent) kept for ``ttl``; a bound, so probing names costs nothing.
PROJECT_CACHE_SIZE = 10_000
#: Index reads in flight at once for one project page.
FETCH_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class Listing:
    """The mirror's projects as one revision of its catalog gives them.

    ``key`` names the revision (the catalog manifest's digest, or a digest of
    the names when they come from the store's repository list), so what is
    derived from a listing (the rendered root page) is made once per revision.
    ``statuses`` are the projects' PEP 792 statuses the catalog records.
    """

    key: str
    names: tuple[str, ...]
    statuses: Mapping[str, ProjectStatus] = field(default_factory=dict)

    def status(self, project: str) -> ProjectStatus | None:
        return self.statuses.get(project)


async def load_listing(
    store: Store, revision: str | None, reader: CatalogNamesReader | None = None
) -> Listing:
    """The listing of a catalog revision, else of the repositories.

    The one place that knows where the list comes from: the mirror's catalog
    (it works where ``/v2/_catalog`` is refused; ``reader`` keeps what it
    read of the last revision, so a new one costs its new parts), else the
    store's repository list; either way only normalized project names are
    kept (a crafted catalog may name anything).
    """
    if revision is not None:
        try:
            manifest = await store.get_manifest(CATALOG_REPOSITORY, revision)
            if manifest is not None:
                found = await (reader or CatalogNamesReader()).read(store, manifest)
                names = tuple(sorted(n for n in found.names if fmt.is_project_repository(n)))
                return Listing(manifest.digest, names, found.statuses)
        except (ValueError, KeyError, TypeError, CatalogMovedError) as exc:
            logger.warning("the mirror's catalog is not readable (%s); listing repositories", exc)
    repositories = await store.list_repositories()
    names = tuple(sorted(name for name in repositories if fmt.is_project_repository(name)))
    return Listing(fmt.sha256_digest("\n".join(names).encode()), names)


async def list_projects(store: Store) -> list[str]:
    """The project names of a mirror, sorted."""
    return list((await load_listing(store, await catalog_revision(store))).names)


class Lru(Generic[K, V]):
    """A bounded mapping that forgets the least recently used entry first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True, slots=True)
class _Fresh(Generic[V]):
    value: V
    expires: float


class MirrorView:
    """The mirror as the server sees it, cached; one per store, used from one event loop."""

    def __init__(
        self,
        store: Store,
        *,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self._clock = clock
        self._listing: _Fresh[Listing] | None = None
        self._catalog = CatalogNamesReader()
        self._refs: _Fresh[Mapping[str, Mapping[str, str]]] | None = None
        self._pages: Lru[str, _Fresh[Project | None]] = Lru(PROJECT_CACHE_SIZE)
        self._releases: Lru[str, Release] = Lru(RELEASE_CACHE_SIZE)
        self._metadata: Lru[str, bytes] = Lru(METADATA_CACHE_SIZE)
        self._flights: SingleFlight[tuple[str, str]] = SingleFlight()
        self._fetch_slots = asyncio.Semaphore(FETCH_CONCURRENCY)

    # --- projects ----------------------------------------------------------------

    async def listing(self) -> Listing:
        """Every project, sorted, with the catalog behind it.

        After ``ttl`` only the catalog's revision is read (one manifest); the
        catalog itself is read and parsed again only when it changed.
        """
        cached = self._listing
        if cached is not None and cached.expires > self._clock():
            return cached.value

        async def fetch() -> Listing:
            revision = await catalog_revision(self.store)
            known = self._listing.value if self._listing is not None else None
            if revision is None or known is None or known.key != revision:
                known = await load_listing(self.store, revision, self._catalog)
            self._listing = _Fresh(known, self._clock() + self.ttl)
            return known

        return await self._shared(("listing", ""), fetch)

    async def projects(self) -> tuple[str, ...]:
        """Every project name, sorted; refreshed after ``ttl``."""
        return (await self.listing()).names

    async def project(self, name: str) -> Project | None:
        """A project (``name`` normalized) with every file of every version; ``None`` if absent."""
        cached = self._pages.get(name)
        if cached is not None and cached.expires > self._clock():
            return cached.value

        async def fetch() -> Project | None:
            project = await self._load_project(name)
            self._pages.put(name, _Fresh(project, self._clock() + self.ttl))
            return project

        return await self._shared(("project", name), fetch)

    async def _load_project(self, name: str) -> Project | None:
        status = (await self.listing()).status(name)
        known = await self._tag_digests(name)
        tags = [tag for tag in known if fmt.is_release_tag(tag)]
        releases = await asyncio.gather(*(self._release(name, tag, known[tag]) for tag in tags))
        found = [release for release in releases if release is not None]
        if not found and status is None:
            return None
        return assemble_project(name, found, status)

    async def _tag_digests(self, name: str) -> Mapping[str, str | None]:
        """The project's tags (the truth; the catalog is a hint), with the digest they
        point at when the store tells cheaply.

        A layout's ``index.json`` names every tag's digest in one read (kept
        for ``ttl``); a registry needs a manifest read per tag for that.
        """
        if isinstance(self.store, KnowsTagDigests):
            return (await self._layout_refs()).get(name, {})
        return dict.fromkeys(await self.store.list_tags(name))

    async def _layout_refs(self) -> Mapping[str, Mapping[str, str]]:
        cached = self._refs
        if cached is not None and cached.expires > self._clock():
            return cached.value
        store = self.store
        assert isinstance(store, KnowsTagDigests)

        async def fetch() -> Mapping[str, Mapping[str, str]]:
            refs = await asyncio.to_thread(store.tag_digests)
            self._refs = _Fresh(refs, self._clock() + self.ttl)
            return refs

        return await self._shared(("refs", ""), fetch)

    async def _release(self, name: str, tag: str, digest: str | None) -> Release | None:
        if digest is not None and (cached := self._releases.get(digest)) is not None:
            return cached
        async with self._fetch_slots:
            stored = await self.store.get_manifest(name, digest or tag)
        if stored is None:
            return None  # the tag moved or went away since it was listed
        if (cached := self._releases.get(stored.digest)) is not None:
            return cached
        try:
            release = release_from_index(stored.digest, stored.body, tag)
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("skipping %s:%s, not a version index: %s", name, tag, exc)
            return None
        self._releases.put(stored.digest, release)
        return release

    # --- files -------------------------------------------------------------------

    async def file(self, project: str, sha256: str, filename: str) -> ServedFile | None:
        """The file ``filename`` of ``project`` if its sha256 is ``sha256``."""
        found = await self.project(project)
        file = found.file(filename) if found is not None else None
        if file is None or file.sha256 != sha256:
            return None
        return file

    async def metadata(self, project: str, file: ServedFile) -> bytes | None:
        """The file's core metadata (layer 1 of its manifest), or ``None`` when it has none."""
        if not file.metadata_sha256:
            return None
        digest = "sha256:" + file.metadata_sha256
        cached = self._metadata.get(digest)
        if cached is not None:
            return cached

        async def fetch() -> bytes | None:
            manifest = await self.store.get_manifest(project, file.manifest_digest)
            if manifest is None:
                return None
            layers = json.loads(manifest.body).get("layers") or []
            if len(layers) < 2 or layers[1].get("digest") != digest:
                return None
            data = await read_blob_bytes(self.store, project, digest)
            if fmt.sha256_digest(data) != digest:
                return None
            self._metadata.put(digest, data)
            return data

        return await self._shared(("metadata", digest), fetch)

    async def provenance(self, project: str, file: ServedFile) -> bytes | None:
        """The file's PEP 740 provenance object as stored, checked against its digest."""
        if not file.provenance_sha256:
            return None
        digest = "sha256:" + file.provenance_sha256
        cached = self._metadata.get(digest)
        if cached is not None:
            return cached

        async def fetch() -> bytes | None:
            if not await self.store.has_blob(project, digest):
                return None
            data = await read_blob_bytes(self.store, project, digest)
            if fmt.sha256_digest(data) != digest:
                return None
            self._metadata.put(digest, data)
            return data

        return await self._shared(("provenance", digest), fetch)

    # --- plumbing -------------------------------------------------------------------

    async def _shared(self, key: tuple[str, str], fetch: Callable[[], Awaitable[V]]) -> V:
        return await self._flights.run(key, fetch)
