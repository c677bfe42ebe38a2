"""The simple repository API as bytes: PEP 503 HTML and PEP 691 JSON, pure.

Rendering takes the frozen records of :mod:`.model` and returns bytes, so
every rule (escaping, yank reasons, PEP 658/700 fields, content
negotiation) is testable without a server or a store. File URLs are
relative to the project page (``../../files/<project>/<sha256>/<filename>``),
so the pages stay right behind any host name or path prefix.
"""

from __future__ import annotations

import enum
import gzip
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import quote

from oci_pypi_sync.serve.model import Project, ServedFile

#: 1.3: the PEP 740 ``provenance`` key and ``data-provenance`` attribute;
#: 1.4: the PEP 792 ``project-status``. The fields of 1.2 are optional.
API_VERSION = "1.4"
JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
JSON_LATEST = "application/vnd.pypi.simple.latest+json"
HTML_LATEST = "application/vnd.pypi.simple.latest+html"
TEXT_HTML = "text/html"


class PageFormat(enum.Enum):
    JSON = "json"
    HTML = "html"


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The format chosen for a page and the ``Content-Type`` to answer with."""

    format: PageFormat
    content_type: str


# What we offer, in our order of preference for ties; HTML first (the default).
_OFFERS: Sequence[tuple[str, Negotiated]] = (
    (TEXT_HTML, Negotiated(PageFormat.HTML, "text/html; charset=utf-8")),
    (HTML_V1, Negotiated(PageFormat.HTML, HTML_V1)),
    (HTML_LATEST, Negotiated(PageFormat.HTML, HTML_V1)),
    (JSON_V1, Negotiated(PageFormat.JSON, JSON_V1)),
    (JSON_LATEST, Negotiated(PageFormat.JSON, JSON_V1)),
)
_DEFAULT = _OFFERS[0][1]
_FORMAT_ALIASES = {"json": JSON_V1, "html": HTML_V1}


def _accept_items(header: str) -> list[tuple[str, float]]:
    items = []
    for part in header.split(","):
        media_type, *params = (piece.strip() for piece in part.split(";"))
        if not media_type:
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        items.append((media_type.lower(), max(0.0, min(quality, 1.0))))
    return items


def _quality(offer: str, items: Sequence[tuple[str, float]]) -> float | None:
    """The q-value the client gives ``offer``: the most specific matching range wins."""
    kind = offer.split("/", 1)[0]
    best: tuple[int, float] | None = None
    for media_type, quality in items:
        if media_type == offer:
            specificity = 2
        elif media_type == f"{kind}/*":
            specificity = 1
        elif media_type == "*/*":
            specificity = 0
        else:
            continue
        if best is None or specificity > best[0]:
            best = (specificity, quality)
    return None if best is None else best[1]


def negotiate(accept: str | None, format_override: str | None = None) -> Negotiated | None:
    """Choose a page format from ``Accept`` (PEP 691, with q-values) or a ``?format=``.

    No ``Accept`` at all means HTML, as PEP 503 clients expect. ``None``
    means nothing acceptable was asked for (answer 406).
    """
    if format_override:
        # A literal "+" typed in a query string arrives as a space.
        given = format_override.strip().lower().replace(" ", "+")
        wanted = _FORMAT_ALIASES.get(given, given)
        return next((n for offer, n in _OFFERS if offer == wanted), None)
    if not accept or not accept.strip():
        return _DEFAULT
    items = _accept_items(accept)
    best: tuple[float, Negotiated] | None = None
    for offer, negotiated in _OFFERS:
        quality = _quality(offer, items)
        if quality is None or quality <= 0:
            continue
        if best is None or quality > best[0]:
            best = (quality, negotiated)
    return None if best is None else best[1]


# --- URLs -----------------------------------------------------------------


def file_path(project: str, file: ServedFile) -> str:
    """The file's URL path below the server root; the filename is the last segment."""
    return f"files/{quote(project)}/{quote(file.sha256)}/{quote(file.filename, safe='')}"


def _file_href(project: str, file: ServedFile) -> str:
    return "../../" + file_path(project, file)


def provenance_path(project: str, file: ServedFile) -> str:
    """The file's Integrity API path below the server root (PEP 740, as the index routes it)."""
    return f"integrity/{project}/{quote(file.version)}/{quote(file.filename)}/provenance"


def provenance_url(base_url: str, project: str, file: ServedFile) -> str | None:
    """The absolute URL of the file's provenance (PEP 740 wants it fully qualified), if any."""
    if file.provenance_sha256 is None:
        return None
    return base_url.rstrip("/") + "/" + provenance_path(project, file)


# --- project pages --------------------------------------------------------------


def _json_file(project: str, file: ServedFile, base_url: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "filename": file.filename,
        "url": _file_href(project, file),
        "hashes": {"sha256": file.sha256},
        "yanked": (file.yanked_reason or True) if file.yanked else False,
    }
    if file.requires_python:
        out["requires-python"] = file.requires_python
    if file.size is not None:
        out["size"] = file.size
    if file.upload_time:
        out["upload-time"] = file.upload_time
    if file.metadata_sha256:
        # Only the PEP 714 key: older pip misreads the legacy one in JSON.
        out["core-metadata"] = {"sha256": file.metadata_sha256}
    out["provenance"] = provenance_url(base_url, project, file)
    return out


def project_json(project: Project, base_url: str) -> bytes:
    """A PEP 691 project page, with PEP 700's ``versions``, ``size`` and ``upload-time``
    and PEP 792's ``project-status``.

    ``base_url`` is the server's root as the client reached it: the PEP 740
    ``provenance`` URL of each file is absolute.
    """
    page: dict[str, Any] = {
        "meta": {"api-version": API_VERSION},
        "name": project.name,
        "files": [_json_file(project.name, file, base_url) for file in project.files],
        "versions": list(project.versions),
    }
    if project.status is not None:
        status = {"status": project.status.status}
        if project.status.reason:
            status["reason"] = project.status.reason
        page["project-status"] = status
    return json.dumps(page, ensure_ascii=False, separators=(",", ":")).encode()


def _attribute(name: str, value: str) -> str:
    """``name="value"`` with the value escaped (quotes included): no value ends an attribute."""
    return f'{name}="{escape(value, quote=True)}"'


def _anchor(project: str, file: ServedFile, base_url: str) -> str:
    """One file's link; every value in it is escaped, whatever the mirror holds."""
    attrs = [_attribute("href", f"{_file_href(project, file)}#sha256={quote(file.sha256)}")]
    if file.requires_python:
        attrs.append(_attribute("data-requires-python", file.requires_python))
    if file.yanked:
        attrs.append(_attribute("data-yanked", file.yanked_reason or ""))
    if file.metadata_sha256:
        value = f"sha256={file.metadata_sha256}"
        attrs.append(_attribute("data-core-metadata", value))
        attrs.append(_attribute("data-dist-info-metadata", value))  # pip before 23.x reads it
    provenance = provenance_url(base_url, project, file)
    if provenance is not None:
        attrs.append(_attribute("data-provenance", provenance))
    return f"    <a {' '.join(attrs)}>{escape(file.filename)}</a><br/>\n"


def _html_document(title: str, body: Iterable[str], meta: Sequence[tuple[str, str]] = ()) -> bytes:
    more = "".join(f'    <meta name="{name}" content="{escape(value)}">\n' for name, value in meta)
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f'    <meta name="pypi:repository-version" content="{escape(API_VERSION)}">\n'
        + more
        + f"    <title>{escape(title)}</title>\n  </head>\n  <body>\n"
        f"    <h1>{escape(title)}</h1>\n" + "".join(body) + "  </body>\n</html>\n"
    ).encode()


def project_html(project: Project, base_url: str) -> bytes:
    """A PEP 503 project page, with PEP 592 yanks, PEP 658/714 metadata, PEP 740
    provenance and the PEP 792 status."""
    meta: list[tuple[str, str]] = []
    if project.status is not None:
        meta.append(("pypi:project-status", project.status.status))
        if project.status.reason:
            meta.append(("pypi:project-status-reason", project.status.reason))
    return _html_document(
        f"Links for {project.name}",
        (_anchor(project.name, file, base_url) for file in project.files),
        meta,
    )


def render_project(project: Project, page_format: PageFormat, base_url: str) -> bytes:
    if page_format is PageFormat.JSON:
        return project_json(project, base_url)
    return project_html(project, base_url)


# --- the project list ----------------------------------------------------------


def index_json(projects: Iterable[str]) -> bytes:
    page = {
        "meta": {"api-version": API_VERSION},
        "projects": [{"name": name} for name in projects],
    }
    return json.dumps(page, ensure_ascii=False, separators=(",", ":")).encode()


def index_html(projects: Iterable[str]) -> bytes:
    return _html_document(
        "Simple index",
        (
            f"    <a {_attribute('href', quote(name) + '/')}>{escape(name)}</a><br/>\n"
            for name in projects
        ),
    )


def render_index(projects: Sequence[str], page_format: PageFormat) -> bytes:
    if page_format is PageFormat.JSON:
        return index_json(projects)
    return index_html(projects)


@dataclass(frozen=True, slots=True)
class Body:
    """A page's bytes, gzipped too, and an ETag for each (they are different representations)."""

    plain: bytes
    gzipped: bytes
    etag: str
    gzip_etag: str


def rendered_body(body: bytes) -> Body:
    """``body`` with its gzip form (no timestamp in it, so the bytes are reproducible)."""
    tag = hashlib.sha256(body).hexdigest()[:32]
    packed = gzip.compress(body, compresslevel=6, mtime=0)
    return Body(body, packed, f'"{tag}"', f'"{tag}-gzip"')


def render_root(projects: Sequence[str]) -> dict[PageFormat, Body]:
    """The project list in both formats, each also gzipped: made once per catalog revision.

    A million names make 50 MB of HTML (5 MB gzipped): too much to render
    per request, and rendering takes seconds, so it runs off the event loop.
    """
    return {
        page_format: rendered_body(render_index(projects, page_format))
        for page_format in PageFormat
    }


# --- files ---------------------------------------------------------------------

_FILE_TYPES = (
    (".whl", "application/zip"),
    (".zip", "application/zip"),
    (".tar.gz", "application/gzip"),
    (".tgz", "application/gzip"),
    (".tar.bz2", "application/x-bzip2"),
    (".tar.xz", "application/x-xz"),
    (".tar", "application/x-tar"),
)


def file_content_type(filename: str) -> str:
    """The media type of a distribution file, never with a content encoding."""
    lower = filename.lower()
    return next(
        (kind for suffix, kind in _FILE_TYPES if lower.endswith(suffix)), "application/octet-stream"
    )
