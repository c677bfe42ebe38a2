"""PEP 691 JSON project pages (with PEP 592, 658/714, 700 and 792 fields), handwritten."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from oci_pypi_sync.errors import InvalidPageError, UnsupportedApiVersionError
from oci_pypi_sync.index.pep691 import parse_json_page
from oci_pypi_sync.index.records import CoreMetadataRef

PAGE_URL = "https://index.test/simple/demo/"
SHA = "a" * 64
SHA512 = "c" * 128


def body(files: list[Any] | None = None, **top: Any) -> bytes:
    data: dict[str, Any] = {
        "meta": {"api-version": "1.1", "_last-serial": 42},
        "name": "Demo",
        "files": files if files is not None else [],
        "versions": ["1.0", "1.10", "1.9"],
    }
    data.update(top)
    return json.dumps(data).encode()


def file_entry(**fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "filename": "demo-1.0-py3-none-any.whl",
        "url": "https://files.index.test/p/demo-1.0-py3-none-any.whl",
        "hashes": {"sha256": SHA},
    }
    entry.update(fields)
    return entry


def test_full_page_is_read() -> None:
    page = parse_json_page(
        body(
            [
                file_entry(
                    **{
                        "requires-python": ">=3.8",
                        "size": 1234,
                        "upload-time": "2024-01-02T03:04:05.123456Z",
                        "core-metadata": {"sha256": SHA},
                    }
                )
            ]
        ),
        PAGE_URL,
    )
    assert page.name == "Demo"
    assert page.url == PAGE_URL
    assert page.api_version == "1.1"
    assert page.last_serial == 42
    assert page.versions == ("1.0", "1.10", "1.9")  # as sent, not sorted
    (file,) = page.files
    assert file.filename == "demo-1.0-py3-none-any.whl"
    assert file.url == "https://files.index.test/p/demo-1.0-py3-none-any.whl"
    assert file.sha256 == SHA
    assert file.requires_python == ">=3.8"
    assert file.size == 1234
    assert file.upload_time == "2024-01-02T03:04:05.123456Z"
    assert file.core_metadata == CoreMetadataRef((("sha256", SHA),))
    assert (file.yanked, file.yanked_reason) == (False, None)


def test_relative_file_urls_resolve_against_the_page_url() -> None:
    page = parse_json_page(
        body([file_entry(url="../../files/demo-1.0-py3-none-any.whl#sha256=" + SHA)]), PAGE_URL
    )
    assert page.files[0].url == "https://index.test/files/demo-1.0-py3-none-any.whl"


def test_several_hashes_are_kept_lowercased_and_sorted() -> None:
    page = parse_json_page(
        body([file_entry(hashes={"SHA512": SHA512.upper(), "sha256": SHA, "md5": "d" * 32})]),
        PAGE_URL,
    )
    assert page.files[0].hashes == (("md5", "d" * 32), ("sha256", SHA), ("sha512", SHA512))


def test_hashes_of_the_wrong_length_are_dropped() -> None:
    page = parse_json_page(body([file_entry(hashes={"sha256": "abc", "blake3": "ee"})]), PAGE_URL)
    assert page.files[0].hashes == (("blake3", "ee"),)
    assert page.files[0].sha256 is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, (True, None)),
        (False, (False, None)),
        ("Bad build", (True, "Bad build")),
        ("", (True, None)),
    ],
)
def test_yanked_bool_or_reason(value: object, expected: tuple[bool, str | None]) -> None:
    page = parse_json_page(body([file_entry(yanked=value)]), PAGE_URL)
    assert (page.files[0].yanked, page.files[0].yanked_reason) == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"core-metadata": True}, CoreMetadataRef()),
        ({"core-metadata": False}, None),
        ({"core-metadata": {"sha256": SHA}}, CoreMetadataRef((("sha256", SHA),))),
        ({"dist-info-metadata": {"sha256": SHA}}, CoreMetadataRef((("sha256", SHA),))),
        ({"dist-info-metadata": True}, CoreMetadataRef()),
        ({"core-metadata": False, "dist-info-metadata": True}, None),
        ({}, None),
    ],
)
def test_core_metadata_spellings(fields: dict[str, Any], expected: CoreMetadataRef | None) -> None:
    page = parse_json_page(body([file_entry(**fields)]), PAGE_URL)
    assert page.files[0].core_metadata == expected


@pytest.mark.parametrize(("serial", "expected"), [(7, 7), ("26356948", 26356948), (None, None)])
def test_last_serial_int_or_string(serial: object, expected: int | None) -> None:
    page = parse_json_page(body(meta={"api-version": "1.0", "_last-serial": serial}), PAGE_URL)
    assert page.last_serial == expected


def test_page_without_versions_has_none() -> None:
    data = json.loads(body())
    del data["versions"]
    assert parse_json_page(json.dumps(data).encode(), PAGE_URL).versions is None


def test_project_status() -> None:
    status = {"status": "archived", "reason": "moved to demo2"}
    page = parse_json_page(body(None, **{"project-status": status}), PAGE_URL)
    assert (page.status, page.status_reason) == ("archived", "moved to demo2")


def test_unsafe_filenames_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    page = parse_json_page(
        body([file_entry(filename="../evil.whl"), file_entry(filename="ok-1.0.tar.gz")]), PAGE_URL
    )
    assert [f.filename for f in page.files] == ["ok-1.0.tar.gz"]
    assert "unsafe name" in caplog.text


def test_major_version_2_is_refused() -> None:
    with pytest.raises(UnsupportedApiVersionError, match=r"2\.0"):
        parse_json_page(body(meta={"api-version": "2.0"}), PAGE_URL)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "not an object"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (body(files=None, name=None), "no project name"),
        (json.dumps({"name": "d", "meta": {}}).encode(), "no 'files' list"),
        (body(meta=[]), "'meta' that is not an object"),
        (body([{"filename": "x.whl"}]), "without a filename or url"),
        (body(["x.whl"]), "not an object"),
        (body([file_entry(hashes=["sha256", SHA])]), "unreadable hashes"),
        (body([file_entry(size="12")]), "unreadable size"),
        (body([file_entry(size=True)]), "unreadable size"),
        (body([file_entry(yanked=1)]), "unreadable yanked"),
        (body([file_entry(**{"core-metadata": "yes"})]), "core-metadata"),
        (body([file_entry(**{"requires-python": 3})]), "requires-python"),
        (body(versions="1.0"), "versions"),
        (body(meta={"_last-serial": "12a"}), "_last-serial"),
    ],
)
def test_wrong_shapes_raise_invalid_page_naming_the_url(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidPageError, match=message) as caught:
        parse_json_page(raw, PAGE_URL)
    assert PAGE_URL in str(caught.value)


# --- PEP 740 provenance ------------------------------------------------------


def test_provenance_url_is_read_and_null_means_none() -> None:
    url = "https://index.test/integrity/demo/1.0/demo-1.0-py3-none-any.whl/provenance"
    page = parse_json_page(
        body(
            [
                file_entry(provenance=url),
                file_entry(filename="demo-1.0.tar.gz", provenance=None),
                file_entry(filename="demo-0.9.tar.gz"),
            ],
            meta={"api-version": "1.3"},
        ),
        PAGE_URL,
    )
    assert [f.provenance for f in page.files] == [url, None, None]


def test_a_relative_provenance_url_resolves_against_the_page() -> None:
    page = parse_json_page(body([file_entry(provenance="../../integrity/x/provenance")]), PAGE_URL)
    assert page.files[0].provenance == "https://index.test/integrity/x/provenance"


def test_a_provenance_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(InvalidPageError, match="provenance"):
        parse_json_page(body([file_entry(provenance={"url": "x"})]), PAGE_URL)


def test_a_provenance_url_of_another_scheme_is_ignored() -> None:
    page = parse_json_page(body([file_entry(provenance="file:///etc/passwd")]), PAGE_URL)
    assert page.files[0].provenance is None
