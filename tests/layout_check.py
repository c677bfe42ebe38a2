"""An independent check of an OCI image layout against the image-layout spec.

Written from the spec, not from our writer: ``oci-layout`` names a 1.x
version; ``index.json`` is an image index; every blob's name is its sha256;
every descriptor reachable from ``index.json`` points at a blob of that
digest and size; ``org.opencontainers.image.ref.name`` follows the spec's
grammar.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

_REF_NAME = re.compile(
    r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*(?:/[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*)*"
)
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_INDEX = "application/vnd.oci.image.index.v1+json"
_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def check_layout(root: Path) -> int:
    """Raise AssertionError on the first violation; return the number of blobs checked."""
    layout = json.loads((root / "oci-layout").read_bytes())
    assert str(layout["imageLayoutVersion"]).startswith("1."), layout
    blobs = root / "blobs" / "sha256"
    assert blobs.is_dir()
    for blob in blobs.iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, blob
    index = json.loads((root / "index.json").read_bytes())
    assert index["schemaVersion"] == 2
    assert index.get("mediaType", _INDEX) == _INDEX
    seen: set[str] = set()
    for descriptor in index["manifests"]:
        ref = descriptor.get("annotations", {}).get("org.opencontainers.image.ref.name")
        if ref is not None:
            assert _REF_NAME.fullmatch(ref), ref
        _check_descriptor(blobs, descriptor, seen)
    return len(seen)


def _check_descriptor(blobs: Path, descriptor: dict[str, Any], seen: set[str]) -> None:
    digest = descriptor["digest"]
    assert _DIGEST.fullmatch(digest), digest
    path = blobs / digest.removeprefix("sha256:")
    assert path.is_file(), f"missing blob {digest}"
    data = path.read_bytes()
    assert len(data) == descriptor["size"], f"size of {digest}"
    if digest in seen:
        return
    seen.add(digest)
    media_type = descriptor["mediaType"]
    if media_type == _INDEX:
        body = json.loads(data)
        assert body["mediaType"] == _INDEX
        for child in body["manifests"]:
            _check_descriptor(blobs, child, seen)
    elif media_type == _MANIFEST:
        body = json.loads(data)
        assert body["mediaType"] == _MANIFEST
        _check_descriptor(blobs, body["config"], seen)
        for layer in body["layers"]:
            _check_descriptor(blobs, layer, seen)


def held_files(root: Path) -> dict[str, tuple[str, str]]:
    """Every file a version tag of the layout reaches: filename -> (``repo:tag``, sha256 of
    its layer's bytes).

    The layer is read and hashed, so a file is listed only with the bytes
    the layout really holds. Ref names are ``repo/tag`` (``repo:tag`` in an
    older layout); only version tags (they start with a digit) are followed;
    an entry names its file in ``dev.oci-pypi.filename`` (format 2) or its title.
    """
    blobs = root / "blobs" / "sha256"
    index = json.loads((root / "index.json").read_bytes())
    held: dict[str, tuple[str, str]] = {}
    for descriptor in index["manifests"]:
        ref = descriptor.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
        cut = max(ref.rfind("/"), ref.rfind(":"))
        repo, tag = ref[:cut], ref[cut + 1 :]
        if cut <= 0 or not tag[:1].isdigit():
            continue
        release = json.loads((blobs / descriptor["digest"].removeprefix("sha256:")).read_bytes())
        for entry in release["manifests"]:
            notes = entry["annotations"]
            title = notes.get("dev.oci-pypi.filename") or notes["org.opencontainers.image.title"]
            manifest = json.loads((blobs / entry["digest"].removeprefix("sha256:")).read_bytes())
            layer = manifest["layers"][0]["digest"].removeprefix("sha256:")
            digest = hashlib.sha256((blobs / layer).read_bytes()).hexdigest()
            held[title] = (f"{repo}:{tag}", digest)
    return held
