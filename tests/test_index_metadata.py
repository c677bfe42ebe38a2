"""Core metadata: lenient reading and digest checks."""

from __future__ import annotations

import hashlib

import pytest

from oci_pypi_sync.errors import DigestMismatchError
from oci_pypi_sync.index.metadata import parse_core_metadata, verify_metadata
from oci_pypi_sync.index.records import CoreMetadataRef

METADATA = b"""Metadata-Version: 2.1
Name: Demo.Pkg
Version: 1.2.3
Summary: A demo
Requires-Python: >=3.8
Requires-Dist: requests>=2
Requires-Dist: pytest; extra == "test"
Provides-Extra: test

Long description with a \xc3\xa9.
"""


def test_fields_are_read_and_raw_bytes_kept() -> None:
    metadata = parse_core_metadata(METADATA)
    assert metadata.raw == METADATA
    assert metadata.name == "Demo.Pkg"
    assert metadata.version == "1.2.3"
    assert metadata.requires_python == ">=3.8"
    assert metadata.requires_dist == ("requests>=2", 'pytest; extra == "test"')
    assert metadata.provides_extra == ("test",)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage \x80",
        b"Name: a\nName: b\nVersion: 1\n",  # duplicated single-use field
        b"Metadata-Version: 9.9\nName: x\nRequires-Dist: !!not a requirement\n",
        b"Name: caf\xe9\nVersion: 1.0-SNAPSHOT\n",  # latin-1 byte, legacy version
    ],
)
def test_messy_metadata_never_raises(raw: bytes) -> None:
    metadata = parse_core_metadata(raw)
    assert metadata.raw == raw
    assert isinstance(metadata.requires_dist, tuple)


def test_messy_metadata_keeps_what_it_can() -> None:
    metadata = parse_core_metadata(b"Name: x\nVersion: 1.0-SNAPSHOT\nRequires-Dist: !!bad\n")
    assert metadata.name == "x"
    assert metadata.version == "1.0-SNAPSHOT"
    assert metadata.requires_dist == ("!!bad",)
    assert parse_core_metadata(b"Name: a\nName: b\n").name is None


def test_matching_sha256_passes() -> None:
    ref = CoreMetadataRef((("sha256", hashlib.sha256(METADATA).hexdigest()),))
    verify_metadata(METADATA, ref, "demo-1.0-py3-none-any.whl.metadata")


def test_mismatching_sha256_raises_naming_the_file_and_both_digests() -> None:
    expected = "0" * 64
    with pytest.raises(DigestMismatchError) as caught:
        verify_metadata(METADATA, CoreMetadataRef((("sha256", expected),)), "demo.whl.metadata")
    error = caught.value
    assert error.what == "demo.whl.metadata"
    assert error.expected == f"sha256:{expected}"
    assert error.actual == f"sha256:{hashlib.sha256(METADATA).hexdigest()}"
    assert "demo.whl.metadata" in str(error)


def test_other_known_algorithms_are_checked_too() -> None:
    ref = CoreMetadataRef((("sha512", "1" * 128),))
    with pytest.raises(DigestMismatchError, match="sha512"):
        verify_metadata(METADATA, ref, "demo.whl.metadata")


def test_a_ref_without_hashes_or_with_unknown_algorithms_cannot_be_checked() -> None:
    verify_metadata(b"anything", CoreMetadataRef(), "demo.whl.metadata")
    verify_metadata(b"anything", CoreMetadataRef((("blake3", "ab"),)), "demo.whl.metadata")
    verify_metadata(b"anything", CoreMetadataRef((("shake_128", "ab"),)), "demo.whl.metadata")
