"""OCI descriptors and blobs, and the canonical JSON every manifest is written in."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from oci_pypi_sync.format.media import (
    A_FORMAT,
    EMPTY_CONFIG_BYTES,
    FORMAT_VERSION,
    OCI_EMPTY,
    OCI_MANIFEST,
)
from oci_pypi_sync.format.platforms import Platform


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    artifact_type: str | None = None
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Descriptor:
        platform = data.get("platform")
        return cls(
            media_type=str(data["mediaType"]),
            digest=str(data["digest"]),
            size=int(data["size"]),
            artifact_type=data.get("artifactType"),
            platform=Platform.from_json(platform) if platform else None,
            annotations=dict(data.get("annotations") or {}),
        )


@dataclass(frozen=True, slots=True)
class Blob:
    """Bytes held in memory together with their descriptor (configs, metadata, manifests)."""

    descriptor: Descriptor
    data: bytes


def canonical_json(value: Any) -> bytes:
    """Serialise deterministically: sorted keys, no insignificant whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def is_sha256_hex(text: str) -> bool:
    """Whether ``text`` is a sha256 in hex: 64 lower-case hex digits, nothing else.

    Digests come from pages, annotations, manifests and tar members, any of
    which may be crafted; only this grammar is ever made part of a path, a
    URL or a page.
    """
    return _SHA256_HEX.fullmatch(text) is not None


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def empty_config() -> Blob:
    return Blob(
        Descriptor(OCI_EMPTY, sha256_digest(EMPTY_CONFIG_BYTES), len(EMPTY_CONFIG_BYTES)),
        EMPTY_CONFIG_BYTES,
    )


def marker_manifest(artifact_type: str, annotations: Mapping[str, str]) -> bytes:
    """A manifest that says something in its annotations alone.

    Its config and one layer are the empty blob (a target's identity, a
    writer's lease, a retired catalog tag); the format annotation is added.
    """
    empty = empty_config().descriptor.to_json()
    return canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": empty,
            "layers": [empty],
            "annotations": {A_FORMAT: FORMAT_VERSION, **annotations},
        }
    )
