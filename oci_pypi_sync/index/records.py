"""Typed, frozen records for what a simple repository index says.

Parsers (:mod:`.html`, :mod:`.pep691`, :mod:`.projects`) produce them, the
client returns them, and everything downstream (selection, the OCI format)
consumes them. They hold data only: no I/O, no parsing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CoreMetadataRef:
    """Whether a file's core metadata is served beside it (PEP 658/714).

    ``hashes`` is empty when the index says ``true`` without giving a hash.
    """

    hashes: tuple[tuple[str, str], ...] = ()

    @property
    def sha256(self) -> str | None:
        return dict(self.hashes).get("sha256")


@dataclass(frozen=True, slots=True)
class DistributionFile:
    """One file of a project page.

    ``url`` is absolute (resolved against the page URL and any ``<base>``)
    and keeps its fragment stripped. ``hashes`` holds the lowercase hash
    name and hex digest pairs the index gave, sorted by name. ``size`` and
    ``upload_time`` come from PEP 700 JSON and are ``None`` in HTML.
    ``provenance`` is the absolute URL of the file's PEP 740 provenance
    object (the index's Integrity API), ``None`` when the page names none.
    """

    filename: str
    url: str
    hashes: tuple[tuple[str, str], ...] = ()
    requires_python: str | None = None
    yanked: bool = False
    yanked_reason: str | None = None
    core_metadata: CoreMetadataRef | None = None
    size: int | None = None
    upload_time: str | None = None
    provenance: str | None = None

    @property
    def sha256(self) -> str | None:
        return dict(self.hashes).get("sha256")

    @property
    def metadata_url(self) -> str:
        """Where PEP 658 says the core metadata lives (whether or not it exists)."""
        return self.url + ".metadata"


@dataclass(frozen=True, slots=True)
class ProjectPage:
    """A project's page of the simple repository API.

    ``name`` is the name the index gave (PEP 691 ``name``), or the name asked
    for when the page (HTML) does not say. ``versions`` is the PEP 700 list,
    in the order the index sent it, or ``None`` when the page has none.
    ``etag`` is the response's validator, for a conditional fetch next time.
    ``status`` and ``status_reason`` are the PEP 792 project status
    (``active``, ``archived``, ``quarantined``, ``deprecated``) when given.
    """

    name: str
    files: tuple[DistributionFile, ...]
    url: str
    api_version: str | None = None
    versions: tuple[str, ...] | None = None
    last_serial: int | None = None
    status: str | None = None
    status_reason: str | None = None
    etag: str | None = None


@dataclass(frozen=True, slots=True)
class ProjectIndex:
    """The index's full project list (its root page).

    ``names`` are as the index spells them. ``serials`` maps normalized names
    to the ``_last-serial`` the JSON list gives each project (PEP 691 as PyPI
    serves it), or is ``None`` when the list gives none (HTML, other indexes):
    a project whose serial did not move since the last sync has not changed.
    """

    names: tuple[str, ...]
    serials: Mapping[str, int] | None = None
    last_serial: int | None = None


@dataclass(frozen=True, slots=True)
class StoredPage:
    """A project page as the index last served it, kept to be revalidated next time.

    ``url`` is the page's URL as asked for (without credentials), the key;
    ``served_from`` the redacted URL it came from (after redirects), which
    its relative links resolve against. ``etag`` and ``last_modified`` are
    the validators a conditional GET sends back (``If-None-Match``,
    ``If-Modified-Since``): an answer 304 means ``body`` is still the page.
    """

    url: str
    served_from: str
    content_type: str | None
    body: bytes
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True, slots=True)
class CoreMetadata:
    """A file's core metadata: the raw bytes as served, plus the fields we use.

    ``raw`` is kept byte for byte (its sha256 is what PEP 658 advertises
    and what the OCI metadata layer stores); the parsed fields come from
    :mod:`packaging.metadata` in its lenient mode, so messy real metadata
    never raises.
    """

    raw: bytes
    name: str | None
    version: str | None
    requires_python: str | None
    requires_dist: tuple[str, ...]
    provides_extra: tuple[str, ...]
