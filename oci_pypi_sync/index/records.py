"""Typed, frozen records for what a simple repository index says.

Parsers (:mod:`.html`, :mod:`.pep691`, :mod:`.projects`) produce them, the
client returns them, and everything downstream (selection, the OCI format)
consumes them. They hold data only: no I/O, no parsing.
"""

from __future__ import annotations

import io
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from packaging.utils import canonicalize_name


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


class ProjectIndex:
    """The index's full project list (its root page), held compactly.

    Names are as the index spells them, in its order; each may come with the
    ``_last-serial`` the JSON list gives it (PEP 691 as PyPI serves it): a
    project whose serial did not move since its last complete sync has not
    changed. A million names take about 30 MB here (the names joined in one
    UTF-8 string, offsets and serials in arrays) rather than a Python object
    each, so that a run over the whole index holds its list cheaply.
    """

    __slots__ = ("_ends", "_joined", "_serials", "last_serial")

    def __init__(
        self,
        projects: Iterable[tuple[str, int | None]] | ProjectIndexBuilder = (),
        last_serial: int | None = None,
    ) -> None:
        """``(name as listed, serial or None)`` pairs (consumed one at a time), or what a
        parser collected in a builder."""
        if isinstance(projects, ProjectIndexBuilder):
            builder = projects
        else:
            builder = ProjectIndexBuilder()
            for name, serial in projects:
                builder.add(name, serial)
        self._joined, self._ends, self._serials = builder.parts()
        self.last_serial = last_serial

    @classmethod
    def of_names(cls, names: Iterable[str]) -> ProjectIndex:
        """A list without serials (an HTML list, another index's)."""
        return cls((name, None) for name in names)

    def __len__(self) -> int:
        return len(self._ends)

    def __iter__(self) -> Iterator[tuple[str, int | None]]:
        """``(name as listed, serial or None)`` in the index's order, made one at a time."""
        joined = self._joined
        start = 0
        for end, serial in zip(self._ends, self._serials, strict=True):
            name = joined[start:end].decode("utf-8", "surrogatepass")
            yield name, None if serial == _NO_SERIAL else serial
            start = end

    @property
    def names(self) -> tuple[str, ...]:
        """Every name, as listed (a tuple made on each call: for small lists and messages)."""
        return tuple(name for name, _ in self)

    @property
    def gives_serials(self) -> bool:
        """Whether every project comes with its serial."""
        return bool(len(self)) and _NO_SERIAL not in self._serials

    @property
    def serials(self) -> dict[str, int] | None:
        """Serials by normalized name when every project has one, else ``None``."""
        if not self.gives_serials:
            return None
        return {canonicalize_name(name): serial for name, serial in self if serial is not None}


class ProjectIndexBuilder:
    """Collects a project list one name at a time (a parser feeds it as it reads)."""

    __slots__ = ("_end", "_ends", "_joined", "_serials")

    def __init__(self) -> None:
        self._joined = io.BytesIO()
        self._ends = array("q")
        self._serials = array("q")
        self._end = 0

    def add(self, name: str, serial: int | None) -> None:
        """One more project; ``serial`` is ``None`` or at least 0."""
        end = self._end + self._joined.write(name.encode("utf-8", "surrogatepass"))
        self._end = end
        self._ends.append(end)
        self._serials.append(_NO_SERIAL if serial is None else serial)

    def __len__(self) -> int:
        return len(self._ends)

    def parts(self) -> tuple[bytes, array[int], array[int]]:
        """The names joined (UTF-8), where each ends, and the serials (-1: none)."""
        return self._joined.getvalue(), self._ends, self._serials


#: A project the list gives no serial (serials are never negative: see the parser).
_NO_SERIAL = -1


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
