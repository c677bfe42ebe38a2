"""Media types, annotation keys and the format version: the vocabulary of the format."""

from __future__ import annotations

from collections.abc import Mapping

FORMAT_VERSION = "2"
#: Every format version readers understand (and ``verify --repair`` migrates from).
READABLE_FORMATS = frozenset({"1", "2"})

# --- media types ---------------------------------------------------------

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

RELEASE_ARTIFACT = "application/vnd.oci-pypi.release.v1"
DISTRIBUTION_ARTIFACT = "application/vnd.oci-pypi.distribution.v1"

WHEEL_LAYER = "application/vnd.oci-pypi.wheel.v1+zip"
SDIST_TAR_GZ_LAYER = "application/vnd.oci-pypi.sdist.v1.tar+gzip"
SDIST_ZIP_LAYER = "application/vnd.oci-pypi.sdist.v1+zip"
# RFC 6838: no ``+bzip2`` or ``+xz`` structured-syntax suffix is registered, so no suffix.
SDIST_TAR_BZ2_LAYER = "application/vnd.oci-pypi.sdist.v1.tar.bzip2"
SDIST_TAR_XZ_LAYER = "application/vnd.oci-pypi.sdist.v1.tar.xz"
SDIST_TAR_LAYER = "application/vnd.oci-pypi.sdist.v1.tar"
CORE_METADATA_LAYER = "application/vnd.oci-pypi.core-metadata.v1"

# Referrers of a file's manifest: its PEP 740 provenance, and each attestation
# as a Sigstore bundle (the media type cosign and actions/attest use).
PROVENANCE_ARTIFACT = "application/vnd.oci-pypi.provenance.v1"
INTEGRITY_LAYER = "application/vnd.pypi.integrity.v1+json"
SIGSTORE_BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"

EMPTY_CONFIG_BYTES = b"{}"

#: Layer media types format 1 wrote that format 2 renamed, with their new names.
FORMAT1_LAYER_TYPES: Mapping[str, str] = {
    "application/vnd.oci-pypi.sdist.v1.tar+bzip2": SDIST_TAR_BZ2_LAYER,
    "application/vnd.oci-pypi.sdist.v1.tar+xz": SDIST_TAR_XZ_LAYER,
}

# --- annotation keys -------------------------------------------------------

TITLE = "org.opencontainers.image.title"
OCI_VERSION = "org.opencontainers.image.version"
REF_NAME = "org.opencontainers.image.ref.name"
_NS = "dev.oci-pypi."
A_FORMAT = _NS + "format"
A_WRITER_NONCE = _NS + "writer.nonce"
A_WRITER_STATE = _NS + "writer.state"
A_WRITER_EXPIRES = _NS + "writer.expires"
A_FILENAME = _NS + "filename"
A_PROJECT = _NS + "project"
A_VERSION = _NS + "version"
A_PACKAGETYPE = _NS + "packagetype"
A_PYTHON_TAGS = _NS + "python-tags"
A_ABI_TAGS = _NS + "abi-tags"
A_PLATFORM_TAGS = _NS + "platform-tags"
A_REQUIRES_PYTHON = _NS + "requires-python"
A_YANKED = _NS + "yanked"
A_YANKED_REASON = _NS + "yanked-reason"
A_UPLOAD_TIME = _NS + "upload-time"
A_SIZE = _NS + "size"
A_SHA256 = _NS + "sha256"
A_METADATA_SHA256 = _NS + "core-metadata-sha256"
A_PROVENANCE = _NS + "provenance"
A_PROVENANCE_SHA256 = _NS + "provenance-sha256"
#: Index-entry annotations that record stored facts, not the index's: kept on refresh.
PROVENANCE_ANNOTATIONS = (A_PROVENANCE, A_PROVENANCE_SHA256)
SIGSTORE_CONTENT = "dev.sigstore.bundle.content"
SIGSTORE_PREDICATE_TYPE = "dev.sigstore.bundle.predicateType"

SDIST_SUFFIXES: Mapping[str, str] = {
    ".tar.gz": SDIST_TAR_GZ_LAYER,
    ".tgz": SDIST_TAR_GZ_LAYER,
    ".zip": SDIST_ZIP_LAYER,
    ".tar.bz2": SDIST_TAR_BZ2_LAYER,
    ".tar.xz": SDIST_TAR_XZ_LAYER,
    ".tar": SDIST_TAR_LAYER,
}
