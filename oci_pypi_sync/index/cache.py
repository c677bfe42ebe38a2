"""What a run keeps of the index for the next one: pages, metadata by digest, closures.

The dependency closure reads every project page of the closure and the
core metadata of the releases it weighs. Kept between runs, a rerun asks
the index only whether each page changed (a conditional GET, answered 304
when it did not), never fetches metadata it has seen (metadata is kept
under a digest, so what it says cannot change), and, when no page of a
closure changed, takes the closure as it was instead of resolving it
again. The state file keeps all of it
(:class:`~oci_pypi_sync.state.journal.Journal` has these methods); a run
without one keeps nothing.

A kept page never holds a secret: a page any of whose URLs carries a
credential or a token (see :func:`~oci_pypi_sync.redact.redact_url`) is
read in full every time instead.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from oci_pypi_sync.index.negotiation import parse_project_page
from oci_pypi_sync.index.records import ProjectPage, StoredPage
from oci_pypi_sync.redact import redact_url

__all__ = [
    "NO_PAGES",
    "IndexCache",
    "PagesRead",
    "StoredPage",
    "keepable",
    "metadata_key",
    "read_page",
    "wheel_metadata_key",
]


class IndexCache(Protocol):
    """Pages, core metadata and dependency closures kept from earlier runs."""

    def stored_page(self, url: str) -> StoredPage | None:
        """The copy of the page at ``url`` kept last, if any."""

    def record_page(self, page: StoredPage) -> None:
        """Keep this copy of a page (the one kept before for its URL is replaced)."""

    def stored_metadata(self, key: str) -> bytes | None:
        """The core metadata kept under ``key`` (see :func:`metadata_key`), if any."""

    def record_metadata(self, key: str, raw: bytes) -> None:
        """Keep core metadata under ``key``."""

    def stored_closure(self, key: str) -> bytes | None:
        """The closure kept under ``key`` (a document of :mod:`oci_pypi_sync.plan.resolve`)."""

    def record_closure(self, key: str, document: bytes) -> None:
        """Keep a closure under ``key``, in place of the one kept before."""


class PagesRead(Protocol):
    """Project pages a run has read already (the closure's), by normalized project name."""

    def etag(self, project: str) -> str | None:
        """The ``ETag`` of the project's page as read this run; ``None``: not read, or none."""

    def page(self, project: str) -> ProjectPage | None:
        """The project's page as read this run, if it was."""


class _NoPages:
    def etag(self, project: str) -> str | None:
        return None

    def page(self, project: str) -> ProjectPage | None:
        return None


#: No page read yet.
NO_PAGES: PagesRead = _NoPages()


def read_page(copy: StoredPage, project: str) -> ProjectPage:
    """The page a copy holds, parsed as the index served it, with its ``ETag``."""
    page = parse_project_page(copy.body, copy.content_type, copy.served_from, project)
    return replace(page, etag=copy.etag) if copy.etag else page


def keepable(copy: StoredPage, page: ProjectPage) -> bool:
    """Whether a copy is worth keeping (it has a validator) and may be kept (no secret)."""
    if not (copy.etag or copy.last_modified):
        return False
    urls = [page.url, *(f.url for f in page.files), *(f.provenance or "" for f in page.files)]
    return all(redact_url(url) == url for url in urls if url)


def metadata_key(sha256: str) -> str:
    """The key of core metadata whose own bytes have this sha256 (PEP 658's advertised hash)."""
    return f"sha256:{sha256.lower()}"


def wheel_metadata_key(wheel_sha256: str) -> str:
    """The key of the ``METADATA`` inside the wheel whose bytes have this sha256."""
    return f"wheel-sha256:{wheel_sha256.lower()}"
