"""PEP 503 HTML project pages: every edge case of the simple API notes, on handwritten pages."""

from __future__ import annotations

import logging

import pytest

from oci_pypi_sync.errors import InvalidPageError, UnsupportedApiVersionError
from oci_pypi_sync.index.html import parse_html_page
from oci_pypi_sync.index.records import CoreMetadataRef, DistributionFile

PAGE_URL = "https://index.test/simple/demo/"
SHA = "a" * 64
MD5 = "b" * 32


def page(*anchors: str, head: str = "") -> str:
    return (
        f"<!DOCTYPE html><html><head>{head}<title>Links for demo</title></head>"
        f"<body><h1>Links for demo</h1>{''.join(anchors)}</body></html>"
    )


def only_file(html: str | bytes, url: str = PAGE_URL) -> DistributionFile:
    parsed = parse_html_page(html, url, "demo")
    assert len(parsed.files) == 1, parsed.files
    return parsed.files[0]


def test_plain_page_gives_files_in_order_with_absolute_urls() -> None:
    parsed = parse_html_page(
        page(
            f'<a href="../../files/demo-1.0.tar.gz#sha256={SHA}">demo-1.0.tar.gz</a><br/>',
            '<a href="https://files.index.test/p/demo-1.0-py3-none-any.whl">wheel</a>',
        ),
        PAGE_URL,
        "Demo",
    )
    assert parsed.name == "Demo"
    assert parsed.url == PAGE_URL
    assert [f.filename for f in parsed.files] == [
        "demo-1.0.tar.gz",
        "demo-1.0-py3-none-any.whl",
    ]
    assert parsed.files[0].url == "https://index.test/files/demo-1.0.tar.gz"
    assert parsed.files[0].hashes == (("sha256", SHA),)
    assert parsed.files[1].url == "https://files.index.test/p/demo-1.0-py3-none-any.whl"
    assert parsed.files[1].hashes == ()
    assert parsed.versions is None
    assert parsed.files[0].size is None
    assert parsed.files[0].upload_time is None


def test_bytes_body_is_decoded_as_utf8() -> None:
    body = page('<a href="demo-1.0.tar.gz" data-yanked="caf\u00e9">x</a>').encode()
    assert only_file(body).yanked_reason == "caf\u00e9"


# --- base URL --------------------------------------------------------------


def test_base_href_absolute_is_honoured() -> None:
    file = only_file(
        page('<a href="demo-1.0.tar.gz">x</a>', head='<base href="https://mirror.test/pkgs/">')
    )
    assert file.url == "https://mirror.test/pkgs/demo-1.0.tar.gz"


def test_base_href_relative_resolves_against_the_page_url() -> None:
    file = only_file(page('<a href="demo-1.0.tar.gz">x</a>', head='<base href="../../pkgs/">'))
    assert file.url == "https://index.test/pkgs/demo-1.0.tar.gz"


def test_only_the_first_base_counts() -> None:
    file = only_file(
        page(
            '<a href="demo-1.0.tar.gz">x</a>',
            head='<base href="/first/"><base href="/second/">',
        )
    )
    assert file.url == "https://index.test/first/demo-1.0.tar.gz"


def test_links_resolve_against_the_final_url_after_redirects() -> None:
    file = only_file(page('<a href="demo-1.0.tar.gz">x</a>'), "https://other.test/s/demo/")
    assert file.url == "https://other.test/s/demo/demo-1.0.tar.gz"


# --- filenames ---------------------------------------------------------------


def test_filename_comes_from_the_url_not_the_anchor_text() -> None:
    file = only_file(page('<a href="/f/demo-2.0.tar.gz">demo-1.0.tar.gz (old name)</a>'))
    assert file.filename == "demo-2.0.tar.gz"


def test_filename_is_percent_decoded_and_query_stripped() -> None:
    file = only_file(
        page(
            '<a href="/f/torch-2.1.0%2Bcu118-cp311-none-linux_x86_64.whl?token=1#sha256='
            + SHA
            + '">t</a>'
        )
    )
    assert file.filename == "torch-2.1.0+cu118-cp311-none-linux_x86_64.whl"
    assert (
        file.url == "https://index.test/f/torch-2.1.0%2Bcu118-cp311-none-linux_x86_64.whl?token=1"
    )
    assert file.hashes == (("sha256", SHA),)


@pytest.mark.parametrize(
    "href",
    [
        "/f/..%2F..%2Fetc%2Fpasswd",
        "/f/evil%5C..%5Cboot.ini",
        "/f/demo%00.tar.gz",
        "/f/%2E%2E",
        "/f/",
    ],
)
def test_filenames_carrying_a_path_are_skipped_with_a_warning(
    href: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    parsed = parse_html_page(
        page(f'<a href="{href}">bad</a>', '<a href="/f/good-1.0.tar.gz">good</a>'),
        PAGE_URL,
        "demo",
    )
    assert [f.filename for f in parsed.files] == ["good-1.0.tar.gz"]
    assert "unsafe name" in caplog.text


def test_anchors_without_href_are_ignored() -> None:
    parsed = parse_html_page(page("<a name='top'>top</a>", '<a href="">empty</a>'), PAGE_URL, "d")
    assert parsed.files == ()


# --- entities -----------------------------------------------------------------


def test_entities_in_href_and_attributes_are_decoded() -> None:
    file = only_file(
        page(
            '<a href="/f/demo-1.0.tar.gz?a=1&amp;b=2#sha256=' + SHA + '" '
            'data-requires-python="&gt;=3.8,&lt;4" '
            'data-yanked="broken &quot;setup.py&quot; &amp; more">x</a>'
        )
    )
    assert file.url == "https://index.test/f/demo-1.0.tar.gz?a=1&b=2"
    assert file.requires_python == ">=3.8,<4"
    assert file.yanked_reason == 'broken "setup.py" & more'


def test_empty_requires_python_is_none() -> None:
    assert (
        only_file(page('<a href="d-1.tar.gz" data-requires-python="">x</a>')).requires_python
        is None
    )


# --- hashes ---------------------------------------------------------------------


def test_md5_fragment_is_kept_as_md5() -> None:
    assert only_file(page(f'<a href="d-1.tar.gz#md5={MD5}">x</a>')).hashes == (("md5", MD5),)


def test_hash_names_and_digests_are_lowercased() -> None:
    file = only_file(page(f'<a href="d-1.tar.gz#SHA256={SHA.upper()}">x</a>'))
    assert file.hashes == (("sha256", SHA),)
    assert file.sha256 == SHA


@pytest.mark.parametrize(
    "fragment",
    ["egg=demo-1.0", "sha256=nothex", "sha256=abc", "junk", "=", "md5=" + SHA],
)
def test_non_hash_fragments_give_no_hash_and_are_stripped(fragment: str) -> None:
    file = only_file(page(f'<a href="d-1.tar.gz#{fragment}">x</a>'))
    assert file.hashes == ()
    assert file.sha256 is None
    assert file.url == "https://index.test/simple/demo/d-1.tar.gz"


# --- yanked ---------------------------------------------------------------------


def test_valueless_data_yanked_means_yanked_without_reason() -> None:
    file = only_file(page('<a href="d-1.tar.gz" data-yanked>x</a>'))
    assert (file.yanked, file.yanked_reason) == (True, None)


def test_empty_data_yanked_means_yanked_without_reason() -> None:
    file = only_file(page('<a href="d-1.tar.gz" data-yanked="">x</a>'))
    assert (file.yanked, file.yanked_reason) == (True, None)


def test_data_yanked_value_is_the_reason() -> None:
    file = only_file(page('<a href="d-1.tar.gz" data-yanked="Broken on Windows">x</a>'))
    assert (file.yanked, file.yanked_reason) == (True, "Broken on Windows")


def test_files_without_data_yanked_are_not_yanked() -> None:
    file = only_file(page('<a href="d-1.tar.gz">x</a>'))
    assert (file.yanked, file.yanked_reason) == (False, None)


# --- core metadata ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ('data-core-metadata="true"', CoreMetadataRef()),
        ('data-core-metadata="TRUE"', CoreMetadataRef()),
        ("data-core-metadata", CoreMetadataRef()),
        ('data-core-metadata="false"', None),
        (f'data-core-metadata="sha256={SHA}"', CoreMetadataRef((("sha256", SHA),))),
        (f'data-dist-info-metadata="sha256={SHA}"', CoreMetadataRef((("sha256", SHA),))),
        ('data-dist-info-metadata="true"', CoreMetadataRef()),
        ('data-dist-info-metadata="false"', None),
        ("", None),
    ],
)
def test_core_metadata_spellings(attributes: str, expected: CoreMetadataRef | None) -> None:
    file = only_file(page(f'<a href="d-1-py3-none-any.whl" {attributes}>x</a>'))
    assert file.core_metadata == expected


def test_data_core_metadata_wins_over_the_legacy_attribute() -> None:
    file = only_file(
        page(
            f'<a href="d-1-py3-none-any.whl" data-dist-info-metadata="sha256={"c" * 64}" '
            f'data-core-metadata="sha256={SHA}">x</a>'
        )
    )
    assert file.core_metadata is not None
    assert file.core_metadata.sha256 == SHA
    assert file.metadata_url == "https://index.test/simple/demo/d-1-py3-none-any.whl.metadata"


def test_core_metadata_false_wins_over_legacy_true() -> None:
    file = only_file(
        page(
            '<a href="d-1-py3-none-any.whl" data-dist-info-metadata="true" '
            'data-core-metadata="false">x</a>'
        )
    )
    assert file.core_metadata is None


# --- API version and project status ---------------------------------------------


def test_api_version_is_read() -> None:
    parsed = parse_html_page(
        page(
            '<a href="d-1.tar.gz">x</a>', head='<meta name="pypi:repository-version" content="1.1">'
        ),
        PAGE_URL,
        "demo",
    )
    assert parsed.api_version == "1.1"


def test_major_version_2_is_refused_naming_the_page() -> None:
    with pytest.raises(UnsupportedApiVersionError, match=r"index\.test/simple/demo/.*2\.0"):
        parse_html_page(
            page(head='<meta name="pypi:repository-version" content="2.0">'), PAGE_URL, "demo"
        )


def test_newer_minor_version_warns_but_parses(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    parsed = parse_html_page(
        page(
            '<a href="d-1.tar.gz">x</a>', head='<meta name="pypi:repository-version" content="1.9">'
        ),
        PAGE_URL,
        "demo",
    )
    assert [f.filename for f in parsed.files] == ["d-1.tar.gz"]
    assert "1.9" in caplog.text


def test_current_version_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    parse_html_page(
        page(head='<meta name="pypi:repository-version" content="1.4">'), PAGE_URL, "demo"
    )
    assert caplog.records == []


def test_unreadable_api_version_is_an_invalid_page() -> None:
    with pytest.raises(InvalidPageError, match="banana"):
        parse_html_page(
            page(head='<meta name="pypi:repository-version" content="banana">'), PAGE_URL, "demo"
        )


def test_project_status_is_read() -> None:
    parsed = parse_html_page(
        page(
            head='<meta name="pypi:project-status" content="quarantined">'
            '<meta name="pypi:project-status-reason" content="malware &amp; worse">'
        ),
        PAGE_URL,
        "demo",
    )
    assert (parsed.status, parsed.status_reason) == ("quarantined", "malware & worse")


def test_sloppy_markup_does_not_crash() -> None:
    parsed = parse_html_page(
        "<html><body><a href='d-1.tar.gz'>d-1<a href=d-2.tar.gz data-yanked>d-2</body>",
        PAGE_URL,
        "demo",
    )
    assert [(f.filename, f.yanked) for f in parsed.files] == [
        ("d-1.tar.gz", False),
        ("d-2.tar.gz", True),
    ]


# --- PEP 740 provenance ------------------------------------------------------


def test_data_provenance_is_the_provenance_url() -> None:
    url = "https://index.test/integrity/demo/1.0/demo-1.0.tar.gz/provenance"
    file = only_file(
        page(
            f'<a href="demo-1.0.tar.gz#sha256={SHA}" data-provenance="{url}">x</a>',
            head='<meta name="pypi:repository-version" content="1.3">',
        )
    )
    assert file.provenance == url


def test_without_data_provenance_there_is_none() -> None:
    assert only_file(page('<a href="demo-1.0.tar.gz">x</a>')).provenance is None


def test_data_provenance_is_unescaped_and_resolved_against_the_base() -> None:
    file = only_file(
        page(
            '<a href="demo-1.0.tar.gz" data-provenance="/integrity/demo?x=1&amp;y=2">x</a>',
            head='<base href="https://mirror.test/simple/demo/">',
        )
    )
    assert file.provenance == "https://mirror.test/integrity/demo?x=1&y=2"
