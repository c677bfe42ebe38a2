"""The full project list, HTML and JSON, and the format dispatch it shares with pages."""

from __future__ import annotations

import json
import re

import pytest

from oci_pypi_sync.errors import InvalidPageError, UnsupportedApiVersionError
from oci_pypi_sync.index.negotiation import ACCEPT, PageFormat, decode_html, detect_format
from oci_pypi_sync.index.projects import parse_project_list

HTML_LIST = b"""<!DOCTYPE html>
<html>
  <head>
    <meta name="pypi:repository-version" content="1.4">
    <title>Simple index</title>
  </head>
  <body>
    <a href="/simple/0/">0</a>
    <a href="/simple/zope-interface/">zope.interface</a>
    <A HREF="/simple/flask/">Flask</A>
    <a class="x" href="/simple/a-b/">  A_B  </a >
    <a href="/simple/at-t/">AT&amp;T</a>
    <a href="/simple/caf/">caf\xc3\xa9</a>
    <a href="/simple/empty/"></a>
  </body>
</html>
"""


def test_html_list_gives_anchor_texts_as_listed() -> None:
    assert parse_project_list(HTML_LIST, "text/html; charset=utf-8") == [
        "0",
        "zope.interface",
        "Flask",
        "A_B",
        "AT&T",
        "caf\u00e9",
    ]


def test_html_list_served_as_versioned_html_or_untyped() -> None:
    expected = parse_project_list(HTML_LIST, "text/html")
    assert parse_project_list(HTML_LIST, "application/vnd.pypi.simple.v1+html") == expected
    assert parse_project_list(HTML_LIST, None) == expected


def test_html_list_of_a_newer_major_version_is_refused() -> None:
    body = HTML_LIST.replace(b'content="1.4"', b'content="2.0"')
    with pytest.raises(UnsupportedApiVersionError, match=re.escape("https://index.test/simple/")):
        parse_project_list(body, "text/html", "https://index.test/simple/")


def test_json_list_gives_project_names() -> None:
    body = json.dumps(
        {
            "meta": {"api-version": "1.1", "_last-serial": 3},
            "projects": [{"name": "Flask", "_last-serial": 1}, {"name": "zope.interface"}],
        }
    ).encode()
    assert parse_project_list(body, "application/vnd.pypi.simple.v1+json") == [
        "Flask",
        "zope.interface",
    ]
    assert parse_project_list(body, None) == ["Flask", "zope.interface"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"meta": {}}', "no 'projects' list"),
        (b'{"projects": [{"nom": "x"}]}', "entry without a name"),
        (b'{"projects": ["x"]}', "entry without a name"),
        (b'{"projects": [], "meta": {"api-version": "3.0"}}', "3.0"),
        (b"{oops", "not valid JSON"),
    ],
)
def test_bad_json_lists_raise_naming_the_list(body: bytes, message: str) -> None:
    with pytest.raises((InvalidPageError, UnsupportedApiVersionError), match=message) as caught:
        parse_project_list(body, "application/json", "https://index.test/simple/")
    assert "https://index.test/simple/" in str(caught.value)


def test_a_large_html_list_parses_whole() -> None:
    lines = [f'    <a href="/simple/project-{i}/">Project_{i}</a>\n' for i in range(200_000)]
    body = ("<html><body>\n" + "".join(lines) + "</body></html>").encode()
    names = parse_project_list(body, "text/html")
    assert len(names) == 200_000
    assert names[12345] == "Project_12345"


# --- negotiation ------------------------------------------------------------------


def test_accept_prefers_json_then_versioned_html_then_html() -> None:
    assert ACCEPT == (
        "application/vnd.pypi.simple.v1+json, "
        "application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
    )


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/vnd.pypi.simple.v1+json", b"<html>", PageFormat.JSON),
        ("application/vnd.pypi.simple.latest+json", b"", PageFormat.JSON),
        ("application/json; charset=utf-8", b"", PageFormat.JSON),
        ("Application/VND.PyPI.Simple.v1+JSON ; charset=UTF-8", b"", PageFormat.JSON),
        ("application/vnd.pypi.simple.v1+html", b"{", PageFormat.HTML),
        ("text/html; charset=ISO-8859-1", b"{", PageFormat.HTML),
        (None, b'  \n{"files": []}', PageFormat.JSON),
        (None, b"\xef\xbb\xbf{}", PageFormat.JSON),
        (None, b"<!DOCTYPE html>", PageFormat.HTML),
        ("", b"{}", PageFormat.JSON),
        ("application/octet-stream", b"<html>", PageFormat.HTML),
        ("application/octet-stream", b"{}", PageFormat.JSON),
    ],
)
def test_format_follows_what_the_server_sent(
    content_type: str | None, body: bytes, expected: PageFormat
) -> None:
    assert detect_format(content_type, body) is expected


def test_a_v2_media_type_is_refused() -> None:
    with pytest.raises(UnsupportedApiVersionError, match="v2"):
        detect_format("application/vnd.pypi.simple.v2+json", b"{}")


def test_html_is_decoded_with_the_header_charset() -> None:
    assert (
        decode_html("caf\u00e9".encode("latin-1"), "text/html; charset=ISO-8859-1") == "caf\u00e9"
    )
    assert decode_html("caf\u00e9".encode(), "text/html") == "caf\u00e9"
    assert decode_html("caf\u00e9".encode(), "text/html; charset=no-such-codec") == "caf\u00e9"


def test_the_json_list_gives_serials_by_normalized_name() -> None:
    from oci_pypi_sync.index.projects import parse_project_index

    body = (
        b'{"meta": {"api-version": "1.1", "_last-serial": 30},'
        b' "projects": [{"name": "Foo_Bar", "_last-serial": 10},'
        b' {"name": "baz", "_last-serial": "30"}]}'
    )
    listed = parse_project_index(body, "application/vnd.pypi.simple.v1+json")
    assert listed.names == ("Foo_Bar", "baz")
    assert listed.serials == {"foo-bar": 10, "baz": 30}
    assert listed.last_serial == 30
    # One project without a serial: the list's serials cannot be trusted to be complete.
    partial = b'{"meta": {}, "projects": [{"name": "a", "_last-serial": 1}, {"name": "b"}]}'
    assert parse_project_index(partial, "application/vnd.pypi.simple.v1+json").serials is None
    html = b'<html><body><a href="/simple/a/">a</a></body></html>'
    assert parse_project_index(html, "text/html").serials is None
