"""Writing referrers into a store and keeping the ``sha256-<hex>`` fallback tag that lists them.

Children first: each referrer's config and layer, then its manifest (by
digest), then, when the store does not list referrers itself, the fallback
tag. The tag is updated by read-merge-write, then read back: another
writer (a concurrent sync, ``oras attach``, cosign) may have written the
tag between the read and the write, and the merge is tried again until
the tag lists what this writer added.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from oci_pypi_sync.errors import TargetError
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
from oci_pypi_sync.stores.protocols import ReferrersApi, Store

log = logging.getLogger(__name__)

#: Rounds of read-merge-write before giving up on a tag that keeps changing.
MERGE_ATTEMPTS = 5


async def attach_referrers(
    store: Store,
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
    await store.put_blob_bytes(repo, config.descriptor.digest, config.data)
    for referrer in referrers:
        layer = referrer.layer
        await store.put_blob_bytes(repo, layer.descriptor.digest, layer.data)
    listed_by_store = bool(referrers)
    for referrer in referrers:
        manifest = referrer.manifest
        digest = manifest.descriptor.digest
        if isinstance(store, ReferrersApi):
            listed = await store.put_referrer(repo, digest, OCI_MANIFEST, manifest.data)
        else:
            await store.put_manifest(repo, digest, OCI_MANIFEST, manifest.data)
            listed = False
        listed_by_store = listed_by_store and listed
    if not listed_by_store:
        await update_referrers_tag(
            store, repo, subject, [r.descriptor.to_json() for r in referrers], replaces=replaces
        )


async def update_referrers_tag(
    store: Store,
    repo: str,
    subject: str,
    fresh: Sequence[Mapping[str, Any]],
    *,
    replaces: Iterable[str] = (),
) -> str:
    """Merge ``fresh`` entries (descriptors as JSON) into ``subject``'s fallback tag.

    Returns the tag's digest afterwards.
    """
    tag = referrers_tag(subject)
    wanted = {str(entry["digest"]) for entry in fresh}
    dropped = frozenset(replaces) - wanted
    for _ in range(MERGE_ATTEMPTS):
        current = await store.get_manifest(repo, tag)
        existing = _entries(current.body if current else None, repo, tag)
        index = build_referrers_index(merge_referrers(existing, fresh, replaces=dropped))
        if current is not None and current.digest == index.descriptor.digest:
            return current.digest
        await store.put_manifest(repo, tag, OCI_INDEX, index.data)
        after = await store.get_manifest(repo, tag)
        listed = {str(e["digest"]) for e in _entries(after.body if after else None, repo, tag)}
        if wanted <= listed and not (listed & dropped):
            return after.digest if after is not None else index.descriptor.digest
        log.info("%s:%s changed while it was written; merging again", repo, tag)
    raise TargetError(
        f"{store.display_name}: the referrers tag {repo}:{tag} kept changing under other "
        f"writers; {MERGE_ATTEMPTS} merges did not hold"
    )


def _entries(body: bytes | None, repo: str, tag: str) -> list[dict[str, Any]]:
    if body is None:
        return []
    try:
        return parse_referrers_index(body)
    except ValueError as exc:
        log.warning("%s:%s is not a referrers index (%s); writing a new one", repo, tag, exc)
        return []
