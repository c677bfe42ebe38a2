"""Writing referrers and keeping the ``sha256-<hex>`` fallback tag that lists them.

Children first: each referrer's config and layer, then its manifest (by
digest), then, when the store does not list referrers itself, the fallback
tag. The tag is merged like every tag the writer writes: another writer (a
concurrent sync, ``oras attach``, cosign) may have written it meanwhile,
and its entries are kept (:meth:`~oci_pypi_sync.engine.writer.Writer.tag`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from oci_pypi_sync.engine.writer import Writer
from oci_pypi_sync.format import (
    OCI_INDEX,
    OCI_MANIFEST,
    Referrer,
    build_referrers_index,
    empty_config,
    merge_referrers,
    parse_referrers_index,
    referrers_tag,
)
from oci_pypi_sync.stores.protocols import StoredManifest

log = logging.getLogger(__name__)


async def attach_referrers(
    writer: Writer,
    repo: str,
    subject: str,
    referrers: Sequence[Referrer],
    *,
    replaces: Iterable[str] = (),
) -> None:
    """Store ``referrers`` of the manifest ``subject`` and make them findable.

    ``replaces`` are digests of earlier referrers to take out of the
    fallback tag (a superseded provenance artifact); on a registry with the
    referrers API they stay listed, and readers follow the index entries.
    """
    config = empty_config()
    await writer.blob_bytes(repo, config.descriptor.digest, config.data)
    for referrer in referrers:
        layer = referrer.layer
        await writer.blob_bytes(repo, layer.descriptor.digest, layer.data)
    listed_by_store = bool(referrers)
    for referrer in referrers:
        listed = await writer.referrer(repo, OCI_MANIFEST, referrer.manifest.data)
        listed_by_store = listed_by_store and listed
    if not listed_by_store:
        await update_referrers_tag(
            writer, repo, subject, [r.descriptor.to_json() for r in referrers], replaces=replaces
        )


def referrers_merge(
    repo: str, subject: str, fresh: Sequence[Mapping[str, Any]], *, replaces: Iterable[str] = ()
) -> Callable[[StoredManifest | None], bytes]:
    """Merge ``fresh`` entries (descriptors as JSON) into what ``subject``'s fallback tag lists."""
    tag = referrers_tag(subject)
    wanted = {str(entry["digest"]) for entry in fresh}
    dropped = frozenset(replaces) - wanted

    def merge(current: StoredManifest | None) -> bytes:
        existing = _entries(current.body if current else None, repo, tag)
        return build_referrers_index(merge_referrers(existing, fresh, replaces=dropped)).data

    return merge


async def update_referrers_tag(
    writer: Writer,
    repo: str,
    subject: str,
    fresh: Sequence[Mapping[str, Any]],
    *,
    replaces: Iterable[str] = (),
) -> str | None:
    """Merge ``fresh`` entries into ``subject``'s fallback tag; its digest afterwards."""
    merge = referrers_merge(repo, subject, fresh, replaces=replaces)
    return await writer.tag(repo, referrers_tag(subject), OCI_INDEX, merge)


def _entries(body: bytes | None, repo: str, tag: str) -> list[dict[str, Any]]:
    if body is None:
        return []
    try:
        return parse_referrers_index(body)
    except ValueError as exc:
        log.warning("%s:%s is not a referrers index (%s); writing a new one", repo, tag, exc)
        return []
