"""Core metadata (PEP 658 ``.metadata`` files): checking and reading.

Real metadata is messy (duplicate fields, bad encodings, invalid
requirement strings), so reading uses :func:`packaging.metadata.parse_email`,
which keeps what it can and never raises on content; the raw bytes are kept
as served because their digest is what the index advertised.
"""

from __future__ import annotations

import hashlib
import logging

from packaging.metadata import parse_email

from oci_pypi_sync.errors import DigestMismatchError
from oci_pypi_sync.index.records import CoreMetadata, CoreMetadataRef

logger = logging.getLogger(__name__)


def verify_digests(data: bytes, hashes: tuple[tuple[str, str], ...], what: str) -> None:
    """Raise :class:`DigestMismatchError` unless ``data`` matches every hash hashlib knows.

    Hashes of algorithms hashlib lacks (or whose length is variable) are
    skipped, not trusted.
    """
    for algorithm, expected in hashes:
        if algorithm not in hashlib.algorithms_available or algorithm.startswith("shake_"):
            logger.debug("cannot check the %s hash of %s", algorithm, what)
            continue
        actual = hashlib.new(algorithm, data).hexdigest()
        if actual != expected.lower():
            raise DigestMismatchError(what, f"{algorithm}:{expected}", f"{algorithm}:{actual}")


def verify_metadata(raw: bytes, ref: CoreMetadataRef, what: str) -> None:
    """Check ``.metadata`` bytes against the hashes the page advertised for them.

    ``what`` names the file in the error. A ref without hashes (the page
    said just ``true``) cannot be checked and passes.
    """
    verify_digests(raw, ref.hashes, what)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def parse_core_metadata(raw: bytes) -> CoreMetadata:
    """Read the fields we use from core metadata, never raising on its content."""
    try:
        fields, _unparsed = parse_email(raw)
    except Exception:  # lenient by contract: a bad .metadata must not stop a sync
        logger.warning("could not read core metadata; treating it as empty", exc_info=True)
        fields = {}
    return CoreMetadata(
        raw=raw,
        name=_text(fields.get("name")),
        version=_text(fields.get("version")),
        requires_python=_text(fields.get("requires_python")),
        requires_dist=tuple(fields.get("requires_dist") or ()),
        provides_extra=tuple(fields.get("provides_extra") or ()),
    )
