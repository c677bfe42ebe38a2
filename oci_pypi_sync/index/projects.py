"""The index's full project list (the root of the simple API), HTML or JSON.

PyPI's list is one 40 MB HTML page of ~930k anchors, served as HTML even
when JSON is asked for. A general HTML parser takes seconds to minutes on
it; the list's anchors are flat (``<a href="...">name</a>``), so one
compiled bytes regex reads them in a fraction of a second. Entities are
decoded only in the rare names that contain ``&``.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from oci_pypi_sync.errors import InvalidPageError
from oci_pypi_sync.index.fields import check_api_version
from oci_pypi_sync.index.html import meta_tags
from oci_pypi_sync.index.negotiation import PageFormat, decode_html, detect_format
from oci_pypi_sync.index.pep691 import load_json_object, parse_last_serial
from oci_pypi_sync.index.records import ProjectIndex, ProjectIndexBuilder
from oci_pypi_sync.limits import MAX_JSON_DEPTH, json_depth

_ANCHOR_TEXT = re.compile(rb"<a\s[^>]*>([^<]*)</a\s*>", re.IGNORECASE)
_FIRST_ANCHOR = re.compile(rb"<a\s", re.IGNORECASE)
_HEAD_LIMIT = 64 * 1024
_MAX_SERIAL = 1 << 63


def _names_from_html(body: bytes, content_type: str | None, url: str) -> ProjectIndex:
    first_anchor = _FIRST_ANCHOR.search(body, 0, _HEAD_LIMIT)
    head = body[: first_anchor.start() if first_anchor else _HEAD_LIMIT]
    meta = meta_tags(decode_html(head, content_type))
    check_api_version(meta.get("pypi:repository-version"), url)

    listed = ProjectIndexBuilder()
    for match in _ANCHOR_TEXT.finditer(body):
        name = match.group(1).decode("utf-8", errors="replace").strip()
        if "&" in name:
            name = html.unescape(name)
        if name:
            listed.add(name, None)
    return ProjectIndex(listed)


def _index_from_json(body: bytes, url: str) -> ProjectIndex:
    """The JSON list read in one pass, each entry straight into the compact list.

    ``json.loads`` calls the hook for every object; an entry (an object with
    a ``name``) goes to the builder and leaves ``...`` (which JSON cannot
    express) in its place, so a million entries never exist as dicts. A list
    where that does not add up (an object with a ``name`` outside
    ``projects``) is read again the plain way.
    """
    listed = ProjectIndexBuilder()

    add = listed.add

    def entry(pairs: list[tuple[str, Any]]) -> Any:
        if len(pairs) == 2:  # the usual shape, taken without a loop
            (first, name), (second, serial) = pairs
            if (
                first == "name"
                and second == "_last-serial"
                and type(name) is str
                and type(serial) is int
                and 0 <= serial < _MAX_SERIAL
            ):
                add(name, serial)
                return ...
        return any_entry(pairs)

    def any_entry(pairs: list[tuple[str, Any]]) -> Any:
        name: object = None
        serial: object = None
        named = False
        for key, value in pairs:
            if key == "name":
                named, name = True, value
            elif key == "_last-serial":
                serial = value
        if not named:
            return dict(pairs)
        if not isinstance(name, str):
            raise InvalidPageError(f"the project list {url} has an entry without a name")
        add(name, _serial(serial, url))
        return ...

    data = _load(body, url, entry)
    projects = data.get("projects") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or not isinstance(projects, list)
        or sum(1 for p in projects if p is ...) != len(listed)
    ):
        return _index_from_plain_json(body, url)
    if len(listed) != len(projects):
        raise InvalidPageError(f"the project list {url} has an entry without a name")
    return ProjectIndex(listed, _meta_serial(data, url))


def _index_from_plain_json(body: bytes, url: str) -> ProjectIndex:
    data = load_json_object(body, url)
    projects = data.get("projects")
    if not isinstance(projects, list):
        _meta_serial(data, url)  # an unreadable version says so first
        raise InvalidPageError(f"the project list {url} has no 'projects' list")
    listed = ProjectIndexBuilder()
    for entry in projects:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            raise InvalidPageError(f"the project list {url} has an entry without a name")
        listed.add(name, _serial(entry.get("_last-serial"), url))
    return ProjectIndex(listed, _meta_serial(data, url))


def _load(body: bytes, url: str, hook: Callable[[list[tuple[str, Any]]], Any]) -> Any:
    try:
        data = json.loads(body, object_pairs_hook=hook)
    except RecursionError:
        raise InvalidPageError(
            f"the page {url} nests deeper than {MAX_JSON_DEPTH} levels"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidPageError(f"the page {url} is not valid JSON: {exc}") from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise InvalidPageError(f"the page {url} nests deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(data, dict) and data is not ...:
        raise InvalidPageError(f"the page {url} is JSON but not an object")
    return data


def _meta_serial(data: Mapping[str, Any], url: str) -> int | None:
    """Check the list's API version; its ``_last-serial``, if it gives one."""
    meta = data.get("meta", {})
    check_api_version(meta.get("api-version") if isinstance(meta, dict) else None, url)
    return parse_last_serial(meta.get("_last-serial"), url) if isinstance(meta, dict) else None


def _serial(value: object, url: str) -> int | None:
    serial = parse_last_serial(value, url)
    if serial is not None and not 0 <= serial < _MAX_SERIAL:
        raise InvalidPageError(f"the project list {url} has an unreadable _last-serial {value!r}")
    return serial


def parse_project_index(
    body: bytes, content_type: str | None, url: str = "the project list"
) -> ProjectIndex:
    """The project list with each project's serial, when the list is JSON and gives one.

    Names are returned as given, not normalised; ``url`` only names the
    page in errors.
    """
    if detect_format(content_type, body) is PageFormat.JSON:
        return _index_from_json(body, url)
    return _names_from_html(body, content_type, url)


def parse_project_list(
    body: bytes, content_type: str | None, url: str = "the project list"
) -> list[str]:
    """Project names as the index lists them: anchor text (HTML) or ``projects[].name`` (JSON)."""
    return list(parse_project_index(body, content_type, url).names)
