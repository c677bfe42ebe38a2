"""Rules for the fields HTML and JSON project pages share.

Both page formats carry the same facts (API version, filenames, hashes,
core-metadata flags, yank state) in different spellings; the parsers
translate the spelling and leave the judgement to these functions, so a
filename or a hash is accepted or refused the same way whatever the format.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urldefrag, urljoin, urlsplit

from packaging.version import InvalidVersion, Version

from oci_pypi_sync.errors import InvalidPageError, UnsupportedApiVersionError
from oci_pypi_sync.format import is_plain_filename
from oci_pypi_sync.index.records import CoreMetadataRef

logger = logging.getLogger(__name__)

#: The newest simple-API version this reader knows (PEP 792 made it 1.4).
SUPPORTED_API_VERSION = Version("1.4")

_HEX = re.compile(r"[0-9a-fA-F]+")


def check_api_version(declared: str | None, url: str) -> None:
    """Refuse a major version we cannot read (PEP 629); warn on a newer minor.

    ``declared`` is ``None`` when the page does not say, which PEP 629
    tells us to read as 1.0.
    """
    if declared is None:
        return
    try:
        version = Version(declared.strip())
    except InvalidVersion:
        raise InvalidPageError(
            f"the page {url} declares an unreadable repository version {declared!r}"
        ) from None
    if version.major > SUPPORTED_API_VERSION.major:
        raise UnsupportedApiVersionError(
            f"the page {url} uses simple repository API version {declared}; "
            f"this tool reads only {SUPPORTED_API_VERSION.major}.x"
        )
    if version > SUPPORTED_API_VERSION:
        logger.warning(
            "the page %s uses simple repository API version %s, newer than %s: "
            "fields added since are ignored",
            url,
            declared,
            SUPPORTED_API_VERSION,
        )


def checked_filename(filename: str, url: str) -> str | None:
    """Return ``filename`` if it is a plain file name, else ``None`` (with a warning).

    The rule is :func:`~oci_pypi_sync.format.is_plain_filename`.
    """
    if not is_plain_filename(filename):
        logger.warning("skipping a file with an unsafe name %r on the page %s", filename, url)
        return None
    return filename


def _digest_length(algorithm: str) -> int | None:
    """Hex length of a fixed-size hashlib digest, or ``None`` for unknown/variable ones."""
    if algorithm not in hashlib.algorithms_guaranteed or algorithm.startswith("shake_"):
        return None
    return hashlib.new(algorithm).digest_size * 2


def checked_hash(algorithm: str, digest: str) -> tuple[str, str] | None:
    """Normalise one ``(algorithm, hex digest)`` pair, or ``None`` when it is not one.

    Names are lowercased; digests must be hex of the algorithm's length when
    hashlib knows it. Junk is dropped quietly: a missing hash costs a
    download, a wrong one would cost a sync.
    """
    name = algorithm.strip().lower()
    value = digest.strip().lower()
    if not name or not _HEX.fullmatch(value):
        return None
    expected = _digest_length(name)
    if expected is not None and len(value) != expected:
        return None
    return name, value


def checked_hashes(pairs: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Normalise hash pairs, dropping junk, sorted by algorithm name."""
    kept = dict(pair for pair in (checked_hash(n, d) for n, d in pairs) if pair is not None)
    return tuple(sorted(kept.items()))


def hash_from_fragment(fragment: str) -> tuple[str, str] | None:
    """The hash a URL fragment such as ``sha256=<hex>`` carries, if any.

    ``egg=`` and other fragments are not hashes and give ``None``.
    """
    name, sep, value = fragment.partition("=")
    if not sep or name.strip().lower() == "egg":
        return None
    return checked_hash(name, value)


def core_metadata_from_attribute(value: str | None) -> CoreMetadataRef | None:
    """Read an HTML ``data-core-metadata`` value: ``true``, ``false`` or ``<hash>=<hex>``.

    A value-less attribute or a value we cannot read still says the file
    exists: it is taken as ``true`` without a hash.
    """
    if value is None:
        return CoreMetadataRef()
    text = value.strip()
    if text.lower() == "false":
        return None
    if text.lower() in {"true", ""}:
        return CoreMetadataRef()
    pair = hash_from_fragment(text)
    return CoreMetadataRef(hashes=(pair,) if pair else ())


def core_metadata_from_json(value: object, url: str) -> CoreMetadataRef | None:
    """Read a JSON ``core-metadata`` value: a bool or a dict of hashes."""
    if value is None or value is False:
        return None
    if value is True:
        return CoreMetadataRef()
    if isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return CoreMetadataRef(hashes=checked_hashes(value.items()))
    raise InvalidPageError(f"the page {url} has an unreadable core-metadata value {value!r}")


def yank_state(value: object) -> tuple[bool, str | None]:
    """``(yanked, reason)`` from a PEP 592 yank value.

    ``None``/``False`` is not yanked; ``True`` or any string is yanked, a
    non-empty string being the reason.
    """
    if value is None or value is False:
        return False, None
    if isinstance(value, str):
        return True, value.strip() or None
    return True, None


def provenance_url(value: str | None, base_url: str) -> str | None:
    """The absolute URL of a file's PEP 740 provenance, from ``provenance`` or ``data-provenance``.

    PEP 740 asks for a fully qualified URL; a relative one is resolved
    against the page (as file URLs are) rather than refused. Anything but an
    ``http``/``https`` URL counts as no provenance.
    """
    text = (value or "").strip()
    if not text:
        return None
    url, _fragment = urldefrag(urljoin(base_url, text))
    if urlsplit(url).scheme not in {"http", "https"}:
        logger.warning("ignoring the provenance URL %r: not an http(s) URL", text)
        return None
    return url
