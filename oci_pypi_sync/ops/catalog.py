"""The catalog: which projects and versions a mirror holds, without ``/v2/_catalog``.

Hosted registries rarely allow listing repositories, so every sync keeps a
catalog artifact in the repository ``oci-pypi.catalog`` under the prefix
(a name no normalized project name can take, since it has a dot).

Writers never overwrite each other: each writer (a shard, or an unsharded
sync) owns the tag ``fragment-<writer>``, whose content it merges with what
the tag held before. The tag ``latest`` is the merge of all fragments; a
writer rewrites it after its fragment, then checks that no fragment changed
while it merged, and merges again if one did, so the last writer to finish
always leaves a ``latest`` that includes everyone's work. Readers take
``latest`` (a manifest and one blob), or merge the fragments themselves
when they need to be sure.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from oci_pypi_sync.errors import RegistryError, TargetError
from oci_pypi_sync.format import (
    A_FORMAT,
    FORMAT_VERSION,
    OCI_MANIFEST,
    TITLE,
    Descriptor,
    canonical_json,
    empty_config,
    sha256_digest,
)
from oci_pypi_sync.limits import loads_json
from oci_pypi_sync.plan.select import version_sort_key

if TYPE_CHECKING:
    from oci_pypi_sync.engine.results import ReleaseResult
    from oci_pypi_sync.engine.writer import Writer
    from oci_pypi_sync.plan.shard import Shard
    from oci_pypi_sync.stores.protocols import Store, StoredManifest

log = logging.getLogger(__name__)

CATALOG_REPOSITORY = "oci-pypi.catalog"
CATALOG_ARTIFACT = "application/vnd.oci-pypi.catalog.v1"
CATALOG_LAYER = "application/vnd.oci-pypi.catalog.v1+json"
LATEST_TAG = "latest"
FRAGMENT_PREFIX = "fragment-"
CATALOG_SCHEMA = 1
_MERGE_ATTEMPTS = 5


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
    stored; in a catalog of additions it clears a status recorded before.
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


@dataclass(frozen=True, slots=True)
class Catalog:
    """Projects (normalized names) and their releases, keyed by tag; and their statuses.

    ``statuses`` holds the projects whose index status is not ``active``
    (PEP 792: archived, deprecated, quarantined), including projects with no
    release in the mirror.
    """

    projects: Mapping[str, Mapping[str, CatalogRelease]] = field(default_factory=dict)
    statuses: Mapping[str, ProjectStatus] = field(default_factory=dict)

    def releases(self, project: str) -> list[CatalogRelease]:
        """A project's releases in PEP 440 order (legacy versions first)."""
        return sorted(
            self.projects.get(project, {}).values(), key=lambda r: version_sort_key(r.version)
        )

    def merged(self, other: Catalog) -> Catalog:
        """Both catalogs; for a tag in both, ``other``'s release wins (it is newer)."""
        projects: dict[str, dict[str, CatalogRelease]] = {
            name: dict(releases) for name, releases in self.projects.items()
        }
        for name, releases in other.projects.items():
            projects.setdefault(name, {}).update(releases)
        statuses = dict(self.statuses)
        for name, status in other.statuses.items():
            if status.active:
                statuses.pop(name, None)
            else:
                statuses[name] = status
        return Catalog(projects, statuses)

    def status(self, project: str) -> ProjectStatus | None:
        """The project's recorded status; ``None`` when active or unknown."""
        return self.statuses.get(project)

    def retagged(self, moved: Mapping[tuple[str, str], tuple[str, str]]) -> Catalog:
        """The catalog with releases moved: ``(project, tag)`` -> ``(new tag, new digest)``."""
        projects: dict[str, dict[str, CatalogRelease]] = {}
        for name, releases in self.projects.items():
            out = projects.setdefault(name, {})
            for tag, release in releases.items():
                new_tag, digest = moved.get((name, tag), (tag, release.digest))
                out[new_tag] = CatalogRelease(release.version, new_tag, digest)
        return Catalog(projects)

    def to_json(self) -> bytes:
        document: dict[str, Any] = {
            "schema": CATALOG_SCHEMA,
            "projects": {
                name: {
                    tag: {"version": r.version, "digest": r.digest}
                    for tag, r in sorted(releases.items())
                }
                for name, releases in sorted(self.projects.items())
            },
        }
        statuses = {
            name: {"status": s.status, **({"reason": s.reason} if s.reason else {})}
            for name, s in sorted(self.statuses.items())
            if not s.active
        }
        if statuses:
            document["status"] = statuses
        return canonical_json(document)

    @classmethod
    def from_json(cls, data: bytes) -> Catalog:
        document = loads_json(data, "the catalog")
        if not isinstance(document, dict) or document.get("schema") != CATALOG_SCHEMA:
            raise ValueError("not a catalog of schema 1")
        projects: dict[str, dict[str, CatalogRelease]] = {}
        for name, releases in (document.get("projects") or {}).items():
            projects[str(name)] = {
                str(tag): CatalogRelease(str(r["version"]), str(tag), str(r["digest"]))
                for tag, r in releases.items()
            }
        statuses = {
            str(name): ProjectStatus(str(entry["status"]), str(entry.get("reason") or "") or None)
            for name, entry in (document.get("status") or {}).items()
        }
        return cls(projects, statuses)

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


def writer_tag(shard: Shard | None) -> str:
    """The fragment tag a writer owns: one per shard, one for unsharded syncs."""
    if shard is None:
        return FRAGMENT_PREFIX + "all"
    return f"{FRAGMENT_PREFIX}shard-{shard.index}-of-{shard.count}"


def catalog_manifest(catalog: Catalog) -> tuple[bytes, bytes]:
    """The catalog's JSON blob and the manifest that carries it."""
    blob = catalog.to_json()
    config = empty_config().descriptor
    layer = Descriptor(
        CATALOG_LAYER, sha256_digest(blob), len(blob), annotations={TITLE: "catalog.json"}
    )
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": CATALOG_ARTIFACT,
        "config": config.to_json(),
        "layers": [layer.to_json()],
        "annotations": {A_FORMAT: FORMAT_VERSION},
    }
    return blob, canonical_json(manifest)


async def catalog_revision(store: Store) -> str | None:
    """The digest ``latest`` points at: a catalog's identity, read without its content."""
    manifest = await store.get_manifest(CATALOG_REPOSITORY, LATEST_TAG)
    return manifest.digest if manifest is not None else None


async def read_catalog_blob(store: Store, reference: str) -> tuple[str, bytes] | None:
    """A catalog's manifest digest and its JSON, unparsed; ``None`` when absent.

    ``reference`` is a tag or a manifest digest. A large catalog is best
    parsed (:meth:`Catalog.from_json`) off the event loop.
    """
    manifest = await store.get_manifest(CATALOG_REPOSITORY, reference)
    if manifest is None:
        return None
    return manifest.digest, await _catalog_bytes(store, manifest, reference)


async def _catalog_bytes(store: Store, manifest: StoredManifest, reference: str) -> bytes:
    layers = loads_json(manifest.body, f"catalog {reference}").get("layers") or []
    if not layers:
        raise ValueError(f"catalog {reference} has no layer")
    chunks = [chunk async for chunk in store.open_blob(CATALOG_REPOSITORY, layers[0]["digest"])]
    data = b"".join(chunks)
    if sha256_digest(data) != layers[0]["digest"]:
        raise ValueError(f"catalog {reference}: its blob does not match its digest")
    return data


async def read_catalog_tag(store: Store, tag: str) -> tuple[str, Catalog] | None:
    """A catalog tag's manifest digest and content; ``None`` when the tag is absent."""
    found = await read_catalog_blob(store, tag)
    if found is None:
        return None
    return found[0], Catalog.from_json(found[1])


async def read_catalog_manifest(store: Store, manifest: StoredManifest) -> Catalog:
    """The catalog a catalog manifest already read carries (its one layer, from the store)."""
    return Catalog.from_json(await _catalog_bytes(store, manifest, manifest.digest))


async def write_catalog_tag(writer: Writer, tag: str, catalog: Catalog) -> str:
    """Store the catalog under ``tag`` through the writer: blobs first, then the manifest.

    The tag is written as it is: each writer owns its fragment, and
    :func:`update_catalog` merges ``latest`` under its own loop.
    """
    blob, manifest = catalog_manifest(catalog)
    config = empty_config()
    await writer.blob_bytes(CATALOG_REPOSITORY, config.descriptor.digest, config.data)
    await writer.blob_bytes(CATALOG_REPOSITORY, sha256_digest(blob), blob)
    return await writer.put_tag(CATALOG_REPOSITORY, tag, OCI_MANIFEST, manifest)


async def fragment_digests(store: Store) -> dict[str, str]:
    """Every fragment tag with the digest it points at now."""
    digests = {}
    for tag in await store.list_tags(CATALOG_REPOSITORY):
        if tag.startswith(FRAGMENT_PREFIX):
            manifest = await store.get_manifest(CATALOG_REPOSITORY, tag)
            if manifest is not None:
                digests[tag] = manifest.digest
    return digests


async def read_fragments(store: Store) -> tuple[dict[str, str], Catalog]:
    """All fragments merged, with the digests they had when read."""
    merged = Catalog()
    digests = {}
    for tag in sorted(await store.list_tags(CATALOG_REPOSITORY)):
        if not tag.startswith(FRAGMENT_PREFIX):
            continue
        found = await read_catalog_tag(store, tag)
        if found is not None:
            digests[tag] = found[0]
            merged = merged.merged(found[1])
    return digests, merged


async def update_catalog(
    writer: Writer, additions: Catalog, shard: Shard | None = None
) -> tuple[str | None, Catalog]:
    """Record a sync's releases: merge them into the writer's fragment, then refresh ``latest``.

    Returns the digest ``latest`` has afterwards and the merged catalog it holds.
    """
    store = writer.store
    own = writer_tag(shard)
    previous = await read_catalog_tag(store, own)
    fragment = previous[1].merged(additions) if previous is not None else additions
    if previous is None or fragment.to_json() != previous[1].to_json():
        await write_catalog_tag(writer, own, fragment)
    merged = Catalog()
    latest: str | None = None
    for attempt in range(1, _MERGE_ATTEMPTS + 1):
        seen, merged = await read_fragments(store)
        current = await read_catalog_tag(store, LATEST_TAG)
        latest = current[0] if current is not None else None
        if current is None or current[1].to_json() != merged.to_json():
            try:
                latest = await write_catalog_tag(writer, LATEST_TAG, merged)
            except RegistryError as exc:
                # Another shard writing 'latest' at the same moment: Distribution
                # answers one of two concurrent PUTs DIGEST_INVALID (or a 5xx).
                if attempt == _MERGE_ATTEMPTS or not _concurrent_write(exc):
                    raise
                log.info("catalog: 'latest' written concurrently (%s); merging again", exc)
                continue
        if await fragment_digests(store) == seen:
            return latest, merged
        log.info("catalog: a fragment changed while merging; merging again (%d)", attempt)
    log.warning("catalog: fragments kept changing; 'latest' may lag until the next sync")
    return latest, merged


# --- the target's identity ------------------------------------------------------------

IDENTITY_TAG = "identity"
TARGET_ARTIFACT = "application/vnd.oci-pypi.target.v1"
A_TARGET_ID = "dev.oci-pypi.target-id"


def identity_manifest(identity: str) -> bytes:
    """The manifest naming a target's identity (its one layer is the empty blob)."""
    empty = empty_config().descriptor.to_json()
    return canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": TARGET_ARTIFACT,
            "config": empty,
            "layers": [empty],
            "annotations": {A_FORMAT: FORMAT_VERSION, A_TARGET_ID: identity},
        }
    )


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


def _concurrent_write(exc: RegistryError) -> bool:
    return exc.code == "DIGEST_INVALID" or (exc.status is not None and exc.status >= 500)


async def read_catalog(store: Store, *, exact: bool = False) -> Catalog | None:
    """The mirror's catalog: ``latest``, or with ``exact`` the merge of every fragment.

    ``None`` when the target has no readable catalog (a mirror written before
    catalogs existed, by another tool, or a damaged one).
    """
    try:
        if exact:
            digests, merged = await read_fragments(store)
            return merged if digests else None
        found = await read_catalog_tag(store, LATEST_TAG)
    except (ValueError, KeyError, TypeError) as exc:
        # Not ours, or damaged: readers fall back on listing repositories.
        log.warning("%s holds no readable catalog (%s)", CATALOG_REPOSITORY, exc)
        return None
    return found[1] if found is not None else None
