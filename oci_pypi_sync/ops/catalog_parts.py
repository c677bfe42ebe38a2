"""The catalog in parts: buckets of projects, one blob per span of buckets, behind one manifest.

Pure: no I/O. A project's bucket is the first 16 bits of the sha256 of its
normalized name (65,536 buckets). The catalog manifest's layers are

* **parts**: each the catalog of the projects whose buckets fall in its
  span (``0000-ffff`` for a small catalog, halves of that and so on as it
  grows: a part past :data:`PART_BYTES` is split in two). Parts never
  overlap; buckets no part covers hold no project.
* **deltas**: a writer's change to a span that another writer changed at
  the same time (see :func:`merge_index`), applied after the parts, in
  order; the next writer of that span folds them into its parts.

A writer rewrites the parts its change falls in, and the manifest: its cost
follows the change, not the catalog. Reading one project costs the layers
that cover its bucket (one part, seldom a delta).
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from oci_pypi_sync.format import (
    A_FORMAT,
    FORMAT_VERSION,
    OCI_MANIFEST,
    canonical_json,
    empty_config,
    sha256_digest,
)
from oci_pypi_sync.limits import loads_json

__all__ = [
    "ALL_BUCKETS",
    "BUCKETS",
    "CATALOG_V2_ARTIFACT",
    "DELTA_LAYER",
    "PART_BYTES",
    "PART_LAYER",
    "CatalogIndex",
    "Layer",
    "Span",
    "Unit",
    "bucket_of",
    "changed_since",
    "merge_index",
    "units_for",
]

BUCKET_BITS = 16
BUCKETS = 1 << BUCKET_BITS
#: A part larger than this is split into the halves of its span (down to one bucket).
PART_BYTES = 256 * 1024

CATALOG_V2_ARTIFACT = "application/vnd.oci-pypi.catalog.v2"
PART_LAYER = "application/vnd.oci-pypi.catalog.part.v2+json"
DELTA_LAYER = "application/vnd.oci-pypi.catalog.delta.v2+json"
#: On each layer: the buckets it covers, ``first-last`` in four hex digits each.
A_BUCKETS = "dev.oci-pypi.catalog.buckets"


def bucket_of(project: str) -> int:
    """The bucket of a normalized project name."""
    return int.from_bytes(hashlib.sha256(project.encode()).digest()[:2], "big")


@dataclass(frozen=True, slots=True, order=True)
class Span:
    """Buckets ``first`` to ``last``, both included."""

    first: int
    last: int

    def __str__(self) -> str:
        return f"{self.first:04x}-{self.last:04x}"

    @classmethod
    def parse(cls, text: object) -> Span:
        if not isinstance(text, str) or len(text) != 9 or text[4] != "-":
            raise ValueError(f"not a span of buckets: {text!r}")
        try:
            first, last = int(text[:4], 16), int(text[5:], 16)
        except ValueError:
            raise ValueError(f"not a span of buckets: {text!r}") from None
        if first > last:
            raise ValueError(f"not a span of buckets: {text!r}")
        return cls(first, last)

    def contains(self, bucket: int) -> bool:
        return self.first <= bucket <= self.last

    def overlaps(self, other: Span) -> bool:
        return self.first <= other.last and other.first <= self.last

    def halves(self) -> tuple[Span, Span]:
        middle = (self.first + self.last) // 2
        return Span(self.first, middle), Span(middle + 1, self.last)


ALL_BUCKETS = Span(0, BUCKETS - 1)


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer of the catalog manifest: a part, or a delta; or a whole catalog of the
    first version (``legacy``: a manifest digest, read the old way)."""

    span: Span
    digest: str
    size: int
    delta: bool = False
    legacy: bool = False

    def descriptor(self) -> dict[str, Any]:
        return {
            "mediaType": DELTA_LAYER if self.delta else PART_LAYER,
            "digest": self.digest,
            "size": self.size,
            "annotations": {A_BUCKETS: str(self.span)},
        }


@dataclass(frozen=True, slots=True)
class CatalogIndex:
    """The catalog manifest: parts sorted by span, then deltas in the order they came."""

    layers: tuple[Layer, ...] = ()

    @classmethod
    def of(cls, layers: Iterable[Layer]) -> CatalogIndex:
        """The layers in the manifest's order (parts by span; deltas keep their order)."""
        listed = list(layers)
        parts = sorted((layer for layer in listed if not layer.delta), key=lambda layer: layer.span)
        return cls((*parts, *(layer for layer in listed if layer.delta)))

    @classmethod
    def legacy(cls, manifest_digest: str) -> CatalogIndex:
        """A catalog of the first version, as one layer covering every bucket."""
        return cls((Layer(ALL_BUCKETS, manifest_digest, 0, legacy=True),))

    @classmethod
    def parse(cls, body: bytes) -> CatalogIndex:
        """A catalog manifest of the second version; ``ValueError`` for anything else."""
        manifest = loads_json(body, "the catalog manifest")
        if not isinstance(manifest, dict) or manifest.get("artifactType") != CATALOG_V2_ARTIFACT:
            raise ValueError("not a catalog manifest of the second version")
        layers = []
        for entry in manifest.get("layers") or []:
            if not isinstance(entry, dict) or entry.get("mediaType") not in (
                PART_LAYER,
                DELTA_LAYER,
            ):
                raise ValueError("a catalog layer of an unknown type")
            digest, size = entry.get("digest"), entry.get("size")
            if not isinstance(digest, str) or not isinstance(size, int):
                raise ValueError("a catalog layer without digest or size")
            span = Span.parse((entry.get("annotations") or {}).get(A_BUCKETS))
            if span.last >= BUCKETS:
                raise ValueError(f"a catalog layer beyond the last bucket: {span}")
            layers.append(Layer(span, digest, size, entry["mediaType"] == DELTA_LAYER))
        parts = [layer for layer in layers if not layer.delta]
        for before, after in itertools.pairwise(parts):
            if before.span.last >= after.span.first:
                raise ValueError("catalog parts out of order or overlapping")
        if any(layer.delta for layer in layers[: len(parts)]):
            raise ValueError("a catalog delta before a part")
        return cls(tuple(layers))

    def manifest(self) -> bytes:
        """The manifest's bytes (canonical JSON): one layer per part and delta."""
        return canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": CATALOG_V2_ARTIFACT,
                "config": empty_config().descriptor.to_json(),
                "layers": [layer.descriptor() for layer in self.layers],
                "annotations": {A_FORMAT: FORMAT_VERSION},
            }
        )

    def covering(self, bucket: int) -> list[Layer]:
        """The layers to read for one bucket: its part (if any), then its deltas in order."""
        return [layer for layer in self.layers if layer.span.contains(bucket)]

    def overlapping(self, span: Span) -> list[Layer]:
        return [layer for layer in self.layers if layer.span.overlaps(span)]

    def segments(self) -> list[Span]:
        """The bucket space cut at the parts' edges: each part's span, and the gaps between."""
        cuts: list[Span] = []
        start = 0
        for layer in self.layers:
            if layer.delta:
                continue
            if layer.span.first > start:
                cuts.append(Span(start, layer.span.first - 1))
            cuts.append(layer.span)
            start = layer.span.last + 1
        if start < BUCKETS:
            cuts.append(Span(start, BUCKETS - 1))
        return cuts


@dataclass(frozen=True, slots=True)
class Unit:
    """The span a writer rewrites, and the layers of the manifest it read there."""

    span: Span
    base: tuple[Layer, ...]


def units_for(index: CatalogIndex, buckets: Iterable[int]) -> list[Unit]:
    """The spans to rewrite for a change to ``buckets``, each with the layers it replaces.

    A changed bucket's segment (its part, or the gap it falls in) is a unit;
    a delta joins every segment it overlaps into one unit, so a unit always
    holds whole parts and whole deltas.
    """
    segments = index.segments()
    starts = [segment.first for segment in segments]
    marked = {bisect.bisect_right(starts, bucket) - 1 for bucket in set(buckets)}
    deltas = [layer.span for layer in index.layers if layer.delta]
    while True:
        grown = set(marked)
        for span in deltas:
            touched = [i for i, segment in enumerate(segments) if segment.overlaps(span)]
            if grown.intersection(touched):
                grown.update(touched)
        if grown == marked:
            break
        marked = grown
    spans: list[Span] = []
    for i in sorted(marked):
        segment = segments[i]
        joined = spans and any(
            span.overlaps(spans[-1]) and span.overlaps(segment) for span in deltas
        )
        if joined:
            spans[-1] = Span(spans[-1].first, segment.last)
        else:
            spans.append(segment)
    return [Unit(span, tuple(index.overlapping(span))) for span in spans]


@dataclass(frozen=True, slots=True)
class UnitWrite:
    """What a writer makes of one unit: the parts replacing its base, and its change alone."""

    unit: Unit
    parts: tuple[Layer, ...]
    delta: Layer | None

    @property
    def ours(self) -> frozenset[str]:
        digests = {layer.digest for layer in self.parts}
        if self.delta is not None:
            digests.add(self.delta.digest)
        return frozenset(digests)


def merge_index(current: CatalogIndex, writes: Sequence[UnitWrite]) -> CatalogIndex | None:
    """The manifest with our units in it; ``None`` when it has them already.

    Where the manifest still holds exactly the layers a unit was built from,
    the unit's new parts replace them. Where another writer changed them
    since (their parts, or a delta), ours go in as a delta after theirs, so
    nothing either wrote is lost; the next writer of that span folds it in.
    Pure, so a registry's settle check can call it again on whatever the tag
    holds then.
    """
    layers = list(current.layers)
    changed = False
    for write in writes:
        here = [layer for layer in layers if layer.span.overlaps(write.unit.span)]
        digests = {layer.digest for layer in here}
        if digests & write.ours or digests == {layer.digest for layer in write.parts}:
            continue  # ours is there (or, for a unit now empty, nothing is)
        if digests == {layer.digest for layer in write.unit.base}:
            layers = [layer for layer in layers if layer not in here] + list(write.parts)
        elif write.delta is not None:
            layers.append(write.delta)
        else:
            continue
        changed = True
    return CatalogIndex.of(layers) if changed else None


def split(
    projects: Mapping[str, Any], span: Span, size: int, limit: int = PART_BYTES
) -> list[tuple[Span, list[str]]]:
    """``span`` cut in halves until each piece's share of ``size`` bytes is under ``limit``.

    ``projects`` are the names in the span (any value); the share of a piece
    is estimated by its names' count. Pieces without a project are left out.
    """
    names = sorted(projects, key=bucket_of)
    if not names:
        return []
    if size <= limit or span.first == span.last:
        return [(span, names)]
    low, high = span.halves()
    keys = [bucket_of(name) for name in names]
    cut = bisect.bisect_right(keys, low.last)
    pieces = []
    for piece, members in ((low, names[:cut]), (high, names[cut:])):
        share = size * len(members) // len(names)
        pieces += split(dict.fromkeys(members), piece, share, limit)
    return pieces


def layer_of(span: Span, data: bytes, *, delta: bool = False) -> Layer:
    return Layer(span, sha256_digest(data), len(data), delta)


def changed_since(seen: CatalogIndex, now: CatalogIndex) -> tuple[list[Layer], list[Span]]:
    """What to read of ``now`` to know every project that may differ from ``seen``.

    Layers are content addressed: buckets that the same layers cover in both
    hold the same projects. Returns the layers of ``now`` to read (in the
    manifest's order; every layer overlapping one of them too, so that each
    is read with its deltas), and the spans of buckets where projects may
    differ. A first-version catalog on either side makes it everything.
    """
    if any(layer.legacy for layer in (*seen.layers, *now.layers)):
        return list(now.layers), [ALL_BUCKETS]
    spans = [layer.span for layer in set(seen.layers) ^ set(now.layers)]
    chosen = {layer for layer in now.layers if any(layer.span.overlaps(s) for s in spans)}
    while True:
        more = {
            layer
            for layer in now.layers
            if layer not in chosen and any(layer.span.overlaps(c.span) for c in chosen)
        }
        if not more:
            break
        chosen |= more
    layers = [layer for layer in now.layers if layer in chosen]
    return layers, spans + [layer.span for layer in layers]
