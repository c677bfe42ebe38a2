"""PEP 691 JSON project pages, with the PEP 700, PEP 740 and PEP 792 additions.

The JSON is checked field by field: a page of the wrong shape raises
:class:`InvalidPageError` naming the page, rather than a ``KeyError`` deep
in a sync.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urldefrag, urljoin

from oci_pypi_sync.errors import InvalidPageError
from oci_pypi_sync.index.fields import (
    check_api_version,
    checked_filename,
    checked_hashes,
    core_metadata_from_json,
    provenance_url,
    yank_state,
)
from oci_pypi_sync.index.records import DistributionFile, ProjectPage
from oci_pypi_sync.limits import loads_json


def load_json_object(body: bytes | str, url: str) -> Mapping[str, Any]:
    """Decode a JSON document that must be an object, or raise naming ``url``."""
    try:
        data = loads_json(body, f"the page {url}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidPageError(f"the page {url} is not valid JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise InvalidPageError(f"the page {url} is JSON but not an object")
    return data


def _optional_str(value: object, what: str, url: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidPageError(f"the page {url} has a non-string {what}: {value!r}")


def parse_last_serial(value: object, url: str) -> int | None:
    """``_last-serial`` as an int; indexes send it as an int or a string of digits."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise InvalidPageError(f"the page {url} has an unreadable _last-serial {value!r}")


def _file(entry: object, page_url: str) -> DistributionFile | None:
    if not isinstance(entry, Mapping):
        raise InvalidPageError(f"the page {page_url} has a file entry that is not an object")
    filename, href = entry.get("filename"), entry.get("url")
    if not isinstance(filename, str) or not isinstance(href, str):
        raise InvalidPageError(f"the page {page_url} has a file without a filename or url")
    if checked_filename(filename, page_url) is None:
        return None
    url, _fragment = urldefrag(urljoin(page_url, href))

    hashes = entry.get("hashes", {})
    if not isinstance(hashes, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in hashes.items()
    ):
        raise InvalidPageError(f"the page {page_url} has unreadable hashes for {filename}")

    if "core-metadata" in entry:
        core_metadata = core_metadata_from_json(entry["core-metadata"], page_url)
    else:
        core_metadata = core_metadata_from_json(entry.get("dist-info-metadata"), page_url)

    yanked_value = entry.get("yanked", False)
    if not isinstance(yanked_value, bool | str):
        raise InvalidPageError(f"the page {page_url} has an unreadable yanked value for {filename}")
    yanked, reason = yank_state(yanked_value)

    size = entry.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise InvalidPageError(f"the page {page_url} has an unreadable size for {filename}")

    requires_python = _optional_str(entry.get("requires-python"), "requires-python", page_url)
    provenance = _optional_str(entry.get("provenance"), "provenance", page_url)
    return DistributionFile(
        filename=filename,
        url=url,
        hashes=checked_hashes(hashes.items()),
        requires_python=(requires_python.strip() or None) if requires_python else None,
        yanked=yanked,
        yanked_reason=reason,
        core_metadata=core_metadata,
        size=size,
        upload_time=_optional_str(entry.get("upload-time"), "upload-time", page_url),
        provenance=provenance_url(provenance, page_url),
    )


def parse_json_page(body: bytes | str, url: str) -> ProjectPage:
    """Parse a PEP 691 project page fetched from ``url`` (the final URL after redirects).

    Relative file URLs resolve against ``url``. Files with unsafe names are
    skipped with a warning, as in HTML.
    """
    data = load_json_object(body, url)

    meta = data.get("meta", {})
    if not isinstance(meta, Mapping):
        raise InvalidPageError(f"the page {url} has a 'meta' that is not an object")
    api_version = _optional_str(meta.get("api-version"), "api-version", url)
    check_api_version(api_version, url)

    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidPageError(f"the page {url} has no project name")

    entries = data.get("files")
    if not isinstance(entries, list):
        raise InvalidPageError(f"the page {url} has no 'files' list")
    files = tuple(file for file in (_file(entry, url) for entry in entries) if file is not None)

    versions = data.get("versions")
    if versions is not None and (
        not isinstance(versions, list) or not all(isinstance(v, str) for v in versions)
    ):
        raise InvalidPageError(f"the page {url} has a 'versions' that is not a list of strings")

    status = data.get("project-status", {})
    if not isinstance(status, Mapping):
        raise InvalidPageError(f"the page {url} has a 'project-status' that is not an object")

    return ProjectPage(
        name=name,
        files=files,
        url=url,
        api_version=api_version,
        versions=tuple(versions) if versions is not None else None,
        last_serial=parse_last_serial(meta.get("_last-serial"), url),
        status=_optional_str(status.get("status"), "project status", url),
        status_reason=_optional_str(status.get("reason"), "project status reason", url),
    )
