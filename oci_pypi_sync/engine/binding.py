"""The state file bound to the target it describes: the target is the truth, the state a cache.

Each target carries an identity: a random id written once, on the first
sync, as an artifact in the catalog repository (``oci-pypi.catalog:identity``,
see ``docs/format.md``). The state file records the identity of the target
it describes and the digest of the catalog (``latest``) it last wrote or
read. Once per run, before any project, two reads settle how far the state
can be trusted:

* the identity is missing or another one: the target was deleted, replaced
  or rebuilt behind the state's back (a deleted ``mirror.tar``, a wiped
  registry). Nothing the state says about the target is kept; every project
  is derived from the target again, as with ``--recheck``.
* the catalog is not the one the state last saw: another writer (or a loss)
  changed the target. The catalog names each project's tags and their index
  digests; the projects whose entries differ from what the state recorded
  are derived from the target again, the others stay trusted.
* both match: the state is trusted, and a project whose index page did not
  change costs no request to the target at all.
"""

from __future__ import annotations

import asyncio
import logging

from oci_pypi_sync.engine.retry import RetryPolicy, with_retries
from oci_pypi_sync.engine.writer import Writer
from oci_pypi_sync.errors import FATAL_ERRORS, OciPypiError
from oci_pypi_sync.format import sha256_digest
from oci_pypi_sync.ops.catalog import (
    CATALOG_REPOSITORY,
    LATEST_TAG,
    CatalogDiff,
    create_identity,
    read_catalog_since,
    read_identity,
)
from oci_pypi_sync.state.journal import Journal

__all__ = ["bind_state"]

log = logging.getLogger(__name__)


async def bind_state(writer: Writer, journal: Journal, retry: RetryPolicy) -> frozenset[str] | None:
    """Check, once per run, that the state still describes the target; forget what it does not.

    Two reads (the identity and the catalog's ``latest`` manifest), and,
    only when the catalog changed, the parts of it that differ from the
    catalog the state saw last (the whole catalog when the state kept no
    manifest of it). A target
    without an identity gets one now, before anything else is written.
    Returns the projects whose records were forgotten (``None``: every one).
    """
    store = writer.store
    try:
        identity, latest = await asyncio.gather(
            with_retries(retry, "target identity", lambda: read_identity(store)),
            with_retries(
                retry, "catalog", lambda: store.get_manifest(CATALOG_REPOSITORY, LATEST_TAG)
            ),
        )
        if identity is None:
            identity = await create_identity(writer)
    except FATAL_ERRORS:
        raise
    except OciPypiError as exc:
        log.warning(
            "%s: the target's identity could not be read (%s); every project is read from "
            "the target again",
            store.display_name,
            exc,
        )
        journal.forget_target()
        return None
    latest_digest = latest.digest if latest is not None else None
    known_identity, known_catalog = journal.binding()
    if identity != known_identity:
        if journal.has_target_records():
            log.warning(
                "%s is not the target the state file %s describes (%s); every project is "
                "read from the target again",
                store.display_name,
                journal.path,
                "it was deleted, replaced or rebuilt since"
                if known_identity is not None
                else "the state file predates target identities",
            )
            journal.forget_target()
        journal.bind(identity, latest_digest, latest.body if latest is not None else None)
        return None
    if known_catalog == latest_digest:
        return frozenset()
    diff: CatalogDiff | None = None
    if latest is not None:
        found = latest
        # Only the parts that differ from the catalog seen last are read.
        seen = journal.catalog_manifest()
        if seen is not None and sha256_digest(seen) != known_catalog:
            seen = None
        try:
            diff = await with_retries(
                retry, "catalog", lambda: read_catalog_since(store, seen, found)
            )
        except FATAL_ERRORS:
            raise
        except (OciPypiError, ValueError, KeyError, TypeError) as exc:
            log.info("the catalog of %s is unreadable (%s)", store.display_name, exc)
    changed = frozenset(
        project
        for project, tags in journal.all_release_digests().items()
        if diff is None
        or (
            diff.covers(project)
            and any(
                (release := diff.catalog.projects.get(project, {}).get(tag)) is None
                or release.digest != digest
                for tag, digest in tags.items()
            )
        )
    )
    if changed:
        log.info(
            "the catalog of %s changed since this state file last saw it; %d projects are "
            "read from the target again",
            store.display_name,
            len(changed),
        )
        journal.forget_projects(changed)
    journal.record_catalog(latest_digest, latest.body if latest is not None else None)
    return changed
