"""The index's full project list (the root of the simple API), HTML or JSON.

PyPI's list is one 40 MB HTML page of ~930k anchors, served as HTML even
when JSON is asked for. A general HTML parser takes seconds to minutes on
it; the list's anchors are flat (``<a href="...">name</a>``), so one
compiled bytes regex reads them in a fraction of a second. Entities are
decoded only in the rare names that contain ``&``.
"""

from __future__ import annotations

import html
import re

from packaging.utils import canonicalize_name

from oci_pypi_sync.errors import InvalidPageError
from oci_pypi_sync.index.fields import check_api_version
from oci_pypi_sync.index.html import meta_tags
from oci_pypi_sync.index.negotiation import PageFormat, decode_html, detect_format
from oci_pypi_sync.index.pep691 import load_json_object, parse_last_serial
from oci_pypi_sync.index.records import ProjectIndex

_ANCHOR_TEXT = re.compile(rb"<a\s[^>]*>([^<]*)</a\s*>", re.IGNORECASE)
_FIRST_ANCHOR = re.compile(rb"<a\s", re.IGNORECASE)
_HEAD_LIMIT = 64 * 1024


def _names_from_html(body: bytes, content_type: str | None, url: str) -> tuple[str, ...]:
    first_anchor = _FIRST_ANCHOR.search(body, 0, _HEAD_LIMIT)
    head = body[: first_anchor.start() if first_anchor else _HEAD_LIMIT]
    meta = meta_tags(decode_html(head, content_type))
    check_api_version(meta.get("pypi:repository-version"), url)

    names = []
    for raw in _ANCHOR_TEXT.findall(body):
        name = raw.decode("utf-8", errors="replace").strip()
        if "&" in name:
            name = html.unescape(name)
        if name:
            names.append(name)
    return tuple(names)


def _index_from_json(body: bytes, url: str) -> ProjectIndex:
    data = load_json_object(body, url)
    meta = data.get("meta", {})
    check_api_version(meta.get("api-version") if isinstance(meta, dict) else None, url)
    projects = data.get("projects")
    if not isinstance(projects, list):
        raise InvalidPageError(f"the project list {url} has no 'projects' list")
    names = []
    serials: dict[str, int] | None = {}
    for entry in projects:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            raise InvalidPageError(f"the project list {url} has an entry without a name")
        names.append(name)
        if serials is not None:
            serial = parse_last_serial(entry.get("_last-serial"), url)
            if serial is None:
                serials = None  # one project without: the list gives no usable serials
            else:
                serials[canonicalize_name(name)] = serial
    last = parse_last_serial(meta.get("_last-serial"), url) if isinstance(meta, dict) else None
    return ProjectIndex(tuple(names), serials if names else None, last)


def parse_project_index(
    body: bytes, content_type: str | None, url: str = "the project list"
) -> ProjectIndex:
    """The project list with its serials, when the list is JSON and gives one per project.

    Names are returned as given, not normalised; ``url`` only names the
    page in errors.
    """
    if detect_format(content_type, body) is PageFormat.JSON:
        return _index_from_json(body, url)
    return ProjectIndex(_names_from_html(body, content_type, url))


def parse_project_list(
    body: bytes, content_type: str | None, url: str = "the project list"
) -> list[str]:
    """Project names as the index lists them: anchor text (HTML) or ``projects[].name`` (JSON)."""
    return list(parse_project_index(body, content_type, url).names)
