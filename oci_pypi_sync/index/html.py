"""PEP 503 HTML project pages, with the PEP 592/629/658/714/740/792 additions.

Project pages are small (a large one is under 2 MB), so the stdlib
:class:`html.parser.HTMLParser` is used for correctness: it unescapes
entities in attribute values and copes with sloppy markup.
"""

from __future__ import annotations

import logging
from html.parser import HTMLParser
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

from oci_pypi_sync.index.fields import (
    check_api_version,
    checked_filename,
    core_metadata_from_attribute,
    hash_from_fragment,
    provenance_url,
    yank_state,
)
from oci_pypi_sync.index.records import DistributionFile, ProjectPage

logger = logging.getLogger(__name__)

_Attributes = dict[str, str | None]


class _PageCollector(HTMLParser):
    """Collects anchors' attributes, the first ``<base href>`` and the meta tags.

    Anchor text is not kept: it is for humans and may differ from the file name.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[_Attributes] = []
        self.base_href: str | None = None
        self.meta: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes: _Attributes = {}
        for attribute, value in attrs:
            attributes.setdefault(attribute, value)  # the first of duplicate attributes wins
        if tag == "a":
            self.anchors.append(attributes)
        elif tag == "base" and self.base_href is None:
            self.base_href = attributes.get("href") or None
        elif tag == "meta":
            meta_name, content = attributes.get("name"), attributes.get("content")
            if meta_name and content is not None:
                self.meta.setdefault(meta_name.strip().lower(), content)


def _distribution_file(
    attributes: _Attributes, base_url: str, page_url: str
) -> DistributionFile | None:
    href = (attributes.get("href") or "").strip()
    if not href:
        return None
    url, fragment = urldefrag(urljoin(base_url, href))
    filename = checked_filename(unquote(urlsplit(url).path.rsplit("/", 1)[-1]), page_url)
    if filename is None:
        return None
    fragment_hash = hash_from_fragment(fragment) if fragment else None

    if "data-yanked" in attributes:
        yanked_value = attributes["data-yanked"]
        yanked, reason = yank_state(True if yanked_value is None else yanked_value)
    else:
        yanked, reason = False, None

    if "data-core-metadata" in attributes:
        core_metadata = core_metadata_from_attribute(attributes["data-core-metadata"])
    elif "data-dist-info-metadata" in attributes:
        core_metadata = core_metadata_from_attribute(attributes["data-dist-info-metadata"])
    else:
        core_metadata = None

    requires_python = (attributes.get("data-requires-python") or "").strip() or None
    provenance = provenance_url(attributes.get("data-provenance"), base_url)
    return DistributionFile(
        filename=filename,
        url=url,
        hashes=(fragment_hash,) if fragment_hash else (),
        requires_python=requires_python,
        yanked=yanked,
        yanked_reason=reason,
        core_metadata=core_metadata,
        provenance=provenance,
    )


def meta_tags(text: str) -> dict[str, str]:
    """The ``<meta name=... content=...>`` pairs of an HTML fragment, names lowercased."""
    collector = _PageCollector()
    collector.feed(text)
    collector.close()
    return collector.meta


def parse_html_page(body: bytes | str, url: str, project: str) -> ProjectPage:
    """Parse a PEP 503 project page fetched from ``url`` (the final URL after redirects).

    Links resolve against the first ``<base href>`` (itself resolved
    against ``url``). The filename is the link's last path segment,
    percent-decoded: anchor text is for humans and may differ. Anchors
    whose filename would carry a path are skipped with a warning.
    """
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    collector = _PageCollector()
    collector.feed(text)
    collector.close()

    api_version = collector.meta.get("pypi:repository-version")
    check_api_version(api_version, url)
    base_url = urljoin(url, collector.base_href.strip()) if collector.base_href else url

    files = tuple(
        file
        for file in (_distribution_file(anchor, base_url, url) for anchor in collector.anchors)
        if file is not None
    )
    return ProjectPage(
        name=project,
        files=files,
        url=url,
        api_version=api_version.strip() if api_version else None,
        status=collector.meta.get("pypi:project-status"),
        status_reason=collector.meta.get("pypi:project-status-reason"),
    )
