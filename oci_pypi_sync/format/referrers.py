"""Referrers of a file's manifest: its PEP 740 provenance and Sigstore bundles (pure).

An OCI 1.1 referrer is a manifest whose ``subject`` is the manifest it
is about. For a distribution file there are two kinds:

- the provenance artifact: artifactType ``application/vnd.oci-pypi.provenance.v1``,
  one layer holding the file's provenance object exactly as the index's
  Integrity API served it (``application/vnd.pypi.integrity.v1+json``);
- one Sigstore bundle artifact per attestation, the way cosign and
  ``actions/attest`` store bundles: artifactType and layer
  ``application/vnd.dev.sigstore.bundle.v0.3+json``, with the
  ``dev.sigstore.bundle.*`` annotations.

Registries without the referrers API, and OCI image layouts, find
referrers through the fallback tag ``sha256-<hex of the subject digest>``,
an image index listing them. Everything is canonical JSON with no
timestamps, so the same provenance gives the same digests anywhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from oci_pypi_sync.format.descriptors import Blob, Descriptor, canonical_json, empty_config
from oci_pypi_sync.format.descriptors import sha256_digest as digest_of
from oci_pypi_sync.format.media import (
    A_FORMAT,
    A_PROVENANCE,
    A_PROVENANCE_SHA256,
    FORMAT_VERSION,
    INTEGRITY_LAYER,
    OCI_INDEX,
    OCI_MANIFEST,
    PROVENANCE_ARTIFACT,
    SIGSTORE_BUNDLE,
    SIGSTORE_CONTENT,
    SIGSTORE_PREDICATE_TYPE,
    TITLE,
)

_REFERRERS_TAG = re.compile(r"sha256-[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Referrer:
    """A referrer manifest and the one blob it carries."""

    manifest: Blob
    layer: Blob

    @property
    def descriptor(self) -> Descriptor:
        """Its entry in a referrers index: with artifactType and the manifest's annotations."""
        data = json.loads(self.manifest.data)
        return Descriptor(
            OCI_MANIFEST,
            self.manifest.descriptor.digest,
            self.manifest.descriptor.size,
            artifact_type=data["artifactType"],
            annotations=dict(data.get("annotations") or {}),
        )


def referrers_tag(subject_digest: str) -> str:
    """The fallback tag listing a manifest's referrers: ``sha256-<hex>``."""
    algorithm, _, hexdigest = subject_digest.partition(":")
    return f"{algorithm}-{hexdigest}"


def is_referrers_tag(tag: str) -> bool:
    """Whether a tag is a referrers fallback tag (``sha256-`` and 64 hex digits).

    Ours list a file's provenance; ``oras attach``, cosign and notation write
    them too on registries without the referrers API. Version tags start
    with a digit or ``legacy-`` (format 1: ``_``), so the two never collide.
    """
    return _REFERRERS_TAG.fullmatch(tag) is not None


def _subject_json(subject: Descriptor) -> dict[str, Any]:
    return {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size}


def _referrer(
    subject: Descriptor,
    artifact_type: str,
    layer_type: str,
    data: bytes,
    title: str,
    annotations: Mapping[str, str],
) -> Referrer:
    layer = Descriptor(layer_type, digest_of(data), len(data), annotations={TITLE: title})
    manifest_json = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": empty_config().descriptor.to_json(),
        "layers": [layer.to_json()],
        "subject": _subject_json(subject),
        "annotations": dict(annotations),
    }
    body = canonical_json(manifest_json)
    return Referrer(
        Blob(Descriptor(OCI_MANIFEST, digest_of(body), len(body)), body), Blob(layer, data)
    )


def provenance_referrer(subject: Descriptor, filename: str, provenance: bytes) -> Referrer:
    """The provenance artifact of the file whose manifest is ``subject``."""
    return _referrer(
        subject,
        PROVENANCE_ARTIFACT,
        INTEGRITY_LAYER,
        provenance,
        f"{filename}.provenance",
        {A_FORMAT: FORMAT_VERSION},
    )


def bundle_referrer(
    subject: Descriptor, filename: str, bundle: bytes, predicate_type: str
) -> Referrer:
    """One attestation as a Sigstore bundle artifact, with cosign's annotations."""
    return _referrer(
        subject,
        SIGSTORE_BUNDLE,
        SIGSTORE_BUNDLE,
        bundle,
        f"{filename}.sigstore.json",
        {SIGSTORE_CONTENT: "dsse-envelope", SIGSTORE_PREDICATE_TYPE: predicate_type},
    )


def provenance_annotations(referrer: Referrer) -> dict[str, str]:
    """What a file's index entries say about its provenance artifact."""
    return {
        A_PROVENANCE: referrer.manifest.descriptor.digest,
        A_PROVENANCE_SHA256: referrer.layer.descriptor.digest.removeprefix("sha256:"),
    }


# --- the referrers index (the fallback tag's content) -------------------------------


def parse_referrers_index(body: bytes) -> list[dict[str, Any]]:
    """The entries of a referrers index, as JSON (other tools' entries are kept as they are)."""
    data = json.loads(body)
    if not isinstance(data, dict) or data.get("mediaType", OCI_INDEX) != OCI_INDEX:
        raise ValueError("not an OCI image index")
    manifests = data.get("manifests") or []
    if not isinstance(manifests, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("digest"), str) for entry in manifests
    ):
        raise ValueError("an OCI image index with unreadable entries")
    return manifests


def merge_referrers(
    existing: Sequence[Mapping[str, Any]],
    fresh: Iterable[Mapping[str, Any]],
    *,
    replaces: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """The entries of an updated referrers index: ``fresh`` ones added, none twice.

    Entries are descriptors as JSON (:meth:`Referrer.descriptor` ``.to_json()``).
    Entries whose digest is in ``replaces`` are taken out (a superseded
    provenance artifact of ours); every other existing entry stays as it
    is, whoever wrote it. The result is sorted by artifactType and digest,
    so it depends on the set of referrers only, not on the order they came.
    """
    dropped = set(replaces)
    merged: dict[str, dict[str, Any]] = {}
    for entry in existing:
        digest = str(entry["digest"])
        if digest not in dropped:
            merged.setdefault(digest, dict(entry))
    for entry in fresh:
        merged[str(entry["digest"])] = dict(entry)
    return sorted(merged.values(), key=lambda e: (str(e.get("artifactType", "")), e["digest"]))


def build_referrers_index(entries: Sequence[Mapping[str, Any]]) -> Blob:
    """The fallback tag's image index over ``entries`` (see :func:`merge_referrers`)."""
    body = canonical_json(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [dict(e) for e in entries]}
    )
    return Blob(Descriptor(OCI_INDEX, digest_of(body), len(body)), body)


@dataclass(frozen=True, slots=True)
class ReferrerManifest:
    """What a stored referrer manifest says: its type, subject and single layer."""

    artifact_type: str
    subject: Descriptor
    layer: Descriptor


def parse_referrer(body: bytes) -> ReferrerManifest:
    """Read a referrer manifest of this format; ``ValueError`` when it is not one."""
    try:
        data = json.loads(body)
        subject = Descriptor.from_json(data["subject"])
        layers = [Descriptor.from_json(layer) for layer in data["layers"]]
        artifact_type = str(data["artifactType"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a referrer manifest: {exc}") from None
    if data.get("mediaType") != OCI_MANIFEST or len(layers) != 1:
        raise ValueError("not a referrer manifest with one layer")
    return ReferrerManifest(artifact_type, subject, layers[0])
