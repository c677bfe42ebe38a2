"""Walking a whole mirror: which repositories it has, and their tags, a bounded number at once.

A full mirror has about a million repositories. Hosted registries rarely
allow ``/v2/_catalog``, and a million tag lists read one after another
take days. So a registry's repositories come from the mirror's catalog
(the store's own listing only when there is no catalog), and tag lists are
read ``jobs`` at a time and handed on as they arrive, at the pace their
consumer takes them: memory holds the names and a bounded number of tag
lists, never every tag.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial

from oci_pypi_sync.errors import FATAL_ERRORS, OciPypiError, first_error
from oci_pypi_sync.ops.catalog import CATALOG_REPOSITORY, read_catalog
from oci_pypi_sync.stores.protocols import KnowsTagDigests, Store

__all__ = ["Listed", "each_tag_list", "mirror_repositories"]

#: How a tag list is read: ``step(what, call)`` returns what ``call`` returns (retried, say).
Step = Callable[[str, Callable[[], Awaitable[list[str]]]], Awaitable[list[str]]]


@dataclass(frozen=True, slots=True)
class Listed:
    """One repository's tags, or why they could not be listed."""

    repository: str
    tags: tuple[str, ...] = ()
    error: OciPypiError | None = None


async def mirror_repositories(store: Store) -> list[str]:
    """Every repository of the mirror, sorted.

    A layout or a tar lists them from its own index, which is exact and
    local. A registry's come from the catalog (its projects, and the
    catalog's own repository); ``/v2/_catalog``, which many registries
    refuse, is asked only when the mirror has no readable catalog.
    """
    if isinstance(store, KnowsTagDigests):
        return await store.list_repositories()
    # Every writer's part, not only ``latest``: a copy must miss no project.
    catalog = await read_catalog(store, exact=True)
    if catalog is None:
        return await store.list_repositories()
    return sorted({*catalog.projects, CATALOG_REPOSITORY})


async def _direct(what: str, call: Callable[[], Awaitable[list[str]]]) -> list[str]:
    return await call()


async def each_tag_list(
    store: Store,
    repositories: Iterable[str],
    on_listed: Callable[[Listed], Awaitable[None]],
    *,
    jobs: int = 8,
    step: Step = _direct,
) -> None:
    """Read each repository's tags, ``jobs`` lists at once, and await ``on_listed`` with each.

    Lists arrive in any order; a slow ``on_listed`` holds its reader back,
    so the consumer sets the pace. A failed list is handed on with its
    error; fatal errors (the target unreachable, credentials refused) stop
    the walk and are raised.
    """
    names = iter(repositories)  # shared: each name goes to one reader

    async def reader() -> None:
        for repo in names:
            try:
                tags = await step(f"{repo}: list tags", partial(store.list_tags, repo))
            except FATAL_ERRORS:
                raise
            except OciPypiError as exc:
                await on_listed(Listed(repo, error=exc))
                continue
            await on_listed(Listed(repo, tuple(tags)))

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, jobs)):
                group.create_task(reader())
    except BaseExceptionGroup as errors:
        raise first_error(errors) from None
