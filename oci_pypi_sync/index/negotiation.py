"""Content negotiation for the simple API: what we ask for, and how we read what came.

We prefer PEP 691 JSON, but servers answer what they like (PyPI's full
project list is HTML whatever the ``Accept``), so parsing dispatches on the
``Content-Type`` the server sent, sniffing the body when there is none.
"""

from __future__ import annotations

import enum
from email.message import Message

from oci_pypi_sync.errors import UnsupportedApiVersionError
from oci_pypi_sync.index.html import parse_html_page
from oci_pypi_sync.index.pep691 import parse_json_page
from oci_pypi_sync.index.records import ProjectPage

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"

_SIMPLE_PREFIX = "application/vnd.pypi.simple."
_READABLE_PREFIXES = (f"{_SIMPLE_PREFIX}v1+", f"{_SIMPLE_PREFIX}latest+")

#: Sent with every page request: JSON first, then versioned HTML, then plain HTML.
ACCEPT = f"{JSON_V1}, {HTML_V1};q=0.2, text/html;q=0.01"


class PageFormat(enum.Enum):
    JSON = "json"
    HTML = "html"


def _media_type_and_charset(content_type: str) -> tuple[str, str | None]:
    message = Message()
    message["content-type"] = content_type
    charset = message.get_param("charset")
    return message.get_content_type(), charset if isinstance(charset, str) else None


def detect_format(content_type: str | None, body: bytes) -> PageFormat:
    """The format of a response, from its ``Content-Type`` or, failing that, its first byte.

    A versioned simple-API media type of a major version other than 1 is
    refused: we cannot know what it means.
    """
    if content_type and content_type.strip():
        media_type, _charset = _media_type_and_charset(content_type)
        if media_type.startswith(_SIMPLE_PREFIX) and not media_type.startswith(_READABLE_PREFIXES):
            raise UnsupportedApiVersionError(
                f"the index answered with {media_type}; this tool reads only version 1"
            )
        if media_type.endswith(("+json", "/json")):
            return PageFormat.JSON
        if media_type.endswith(("+html", "/html", "/xhtml+xml")):
            return PageFormat.HTML
    looks_like_json = body.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")
    return PageFormat.JSON if looks_like_json else PageFormat.HTML


def decode_html(body: bytes, content_type: str | None) -> str:
    """HTML text using the header's charset when it names one we know, else UTF-8."""
    charset = _media_type_and_charset(content_type)[1] if content_type else None
    if charset:
        try:
            return body.decode(charset, errors="replace")
        except LookupError:
            pass
    return body.decode("utf-8", errors="replace")


def parse_project_page(
    body: bytes, content_type: str | None, url: str, project: str
) -> ProjectPage:
    """Parse a project page in whichever format the server actually sent."""
    if detect_format(content_type, body) is PageFormat.JSON:
        return parse_json_page(body, url)
    return parse_html_page(decode_html(body, content_type), url, project)
