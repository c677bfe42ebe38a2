"""What a mirror holds, for ``oci-pypi ls``: projects from the catalog, files from the indexes.

The catalog answers the project list in one read; without one (a mirror
written by an older version or another tool) the store's repository
listing is the fallback, which many hosted registries refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name

from oci_pypi_sync.format import (
    A_SIZE,
    A_YANKED,
    OCI_INDEX,
    OCI_VERSION,
    entry_filename,
    is_release_tag,
    is_superseded_tag,
    parse_release_index,
    tag_version,
)
from oci_pypi_sync.ops.catalog import CATALOG_REPOSITORY, read_catalog
from oci_pypi_sync.plan.select import version_sort_key

if TYPE_CHECKING:
    from oci_pypi_sync.stores.protocols import Store


@dataclass(frozen=True, slots=True)
class ProjectListing:
    """A project and how many versions the mirror holds."""

    name: str
    versions: int


@dataclass(frozen=True, slots=True)
class FileListing:
    """One file of a version: its name, size, platforms and whether it is yanked."""

    filename: str
    size: int | None
    platforms: tuple[str, ...]
    yanked: bool


@dataclass(frozen=True, slots=True)
class ReleaseListing:
    """One version: its tag, index digest and files."""

    version: str
    tag: str
    digest: str
    files: tuple[FileListing, ...]


async def list_projects(store: Store) -> tuple[list[ProjectListing], str]:
    """The mirrored projects, and where the list came from (``catalog`` or ``repositories``)."""
    catalog = await read_catalog(store)
    if catalog is not None:
        listing = [
            ProjectListing(name, len(releases)) for name, releases in catalog.projects.items()
        ]
        return sorted(listing, key=lambda p: p.name), "catalog"
    projects = []
    for repository in await store.list_repositories():
        if repository == CATALOG_REPOSITORY or canonicalize_name(repository) != repository:
            continue
        tags = [tag for tag in await store.list_tags(repository) if is_release_tag(tag)]
        projects.append(ProjectListing(repository, len(tags)))
    return projects, "repositories"


async def list_releases(store: Store, project: str) -> list[ReleaseListing]:
    """Every version of a project the mirror holds, with its files, oldest first.

    Only version tags count (not ``latest``, nor the referrers fallback tags
    of signing tools and of provenance); a legacy version still under its format-1 tag as well
    as its format-2 one is listed once.
    """
    repository = str(canonicalize_name(project))
    releases = []
    tags = [tag for tag in await store.list_tags(repository) if is_release_tag(tag)]
    for tag in tags:
        manifest = await store.get_manifest(repository, tag)
        if manifest is None or manifest.media_type != OCI_INDEX:
            continue
        data, entries = parse_release_index(manifest.body)
        files: dict[str, FileListing] = {}
        for entry in entries:
            title = entry_filename(entry) or entry.digest
            size_text = entry.annotations.get(A_SIZE, "")
            platform = str(entry.platform) if entry.platform else None
            known = files.get(title)
            platforms = (*(known.platforms if known else ()), *((platform,) if platform else ()))
            files[title] = FileListing(
                title,
                int(size_text) if size_text.isdigit() else None,
                platforms,
                entry.annotations.get(A_YANKED) == "true",
            )
        version = (data.get("annotations") or {}).get(OCI_VERSION) or tag_version(tag) or tag
        if is_superseded_tag(tag, str(version), tags):
            continue  # migrated: the format-2 tag lists it
        releases.append(
            ReleaseListing(
                str(version),
                tag,
                manifest.digest,
                tuple(sorted(files.values(), key=lambda f: f.filename)),
            )
        )

    return sorted(releases, key=lambda r: version_sort_key(r.version))
