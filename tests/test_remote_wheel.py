"""Reading a wheel's METADATA with range requests, against a real HTTP server on loopback."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator

import pytest
from replay_index import ReplayFile, ReplayIndex, serving

from oci_pypi_sync.index.remote_wheel import RemoteWheelError, fetch_wheel_metadata
from oci_pypi_sync.stores.http import HttpClient

METADATA = (
    b"Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.2.3\n"
    b"Requires-Dist: idna>=2\nRequires-Dist: colorama; sys_platform == 'win32'\n\n"
    + "A description with non-ASCII text: \u00e9t\u00e9 \u2713\n".encode()
    + b"lorem ipsum " * 200
)


def make_wheel(
    filename: str,
    *,
    members: int = 0,
    payload: int = 0,
    method: int = zipfile.ZIP_DEFLATED,
    zip64: bool = False,
    metadata_first: bool = False,
) -> bytes:
    """A real wheel: ``members`` extra files (a big central directory), ``payload``
    random bytes stored before the dist-info (a big file), METADATA compressed with
    ``method``; ``zip64`` forces ZIP64 records for every member; ``metadata_first``
    writes METADATA before the payload, far from the end."""
    stem = filename.split("-")[0] + "-" + filename.split("-")[1]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("demo_pkg/__init__.py", b"")
        info = zipfile.ZipInfo(f"{stem}.dist-info/METADATA", (2024, 1, 2, 3, 4, 5))
        info.compress_type = method
        if metadata_first:
            archive.writestr(info, METADATA)
        if payload:
            archive.writestr("demo_pkg/blob.bin", os.urandom(payload), zipfile.ZIP_STORED)
        for number in range(members):
            archive.writestr(f"demo_pkg/generated/module_with_a_long_name_{number:05}.py", b"x=1\n")
        if not metadata_first:
            with archive.open(info, "w", force_zip64=zip64) as member:
                member.write(METADATA)
        archive.writestr(f"{stem}.dist-info/WHEEL", b"Wheel-Version: 1.0\n")
        archive.writestr(f"{stem}.dist-info/RECORD", b"")
    return buffer.getvalue()


@pytest.fixture(params=[True, False], ids=["ranges", "no-ranges"])
def index(request: pytest.FixtureRequest) -> Iterator[ReplayIndex]:
    with serving(ReplayIndex(ranges=request.param)) as served:
        yield served


async def _read(index: ReplayIndex, filename: str, data: bytes) -> bytes:
    index.add("demo-pkg", ReplayFile.of(filename, data))
    async with HttpClient() as http:
        return await fetch_wheel_metadata(http, f"{index.url}files/{filename}", filename)


@pytest.mark.parametrize(
    ("members", "payload", "method", "zip64"),
    [
        (0, 0, zipfile.ZIP_DEFLATED, False),
        (0, 0, zipfile.ZIP_STORED, False),
        (0, 300_000, zipfile.ZIP_DEFLATED, False),
        (3000, 100_000, zipfile.ZIP_DEFLATED, False),
        (0, 100_000, zipfile.ZIP_DEFLATED, True),
    ],
    ids=["small", "stored", "big-file", "big-directory", "zip64"],
)
async def test_metadata_bytes_are_those_in_the_wheel(
    index: ReplayIndex, members: int, payload: int, method: int, zip64: bool
) -> None:
    filename = "demo_pkg-1.2.3-py3-none-any.whl"
    data = make_wheel(filename, members=members, payload=payload, method=method, zip64=zip64)
    assert await _read(index, filename, data) == METADATA
    gets = [r for r in index.requests if r[1].endswith(filename)]
    if index.ranges:
        assert all(r[2] is not None for r in gets)
        # the tail, the directory when it does not fit in the tail, the member
        assert len(gets) <= 3
        if members == 0 and payload == 0:
            assert len(gets) == 1  # a small wheel is all in the first 16 KiB
    else:
        assert len(gets) == 2  # the refused range request, then the download


@pytest.mark.parametrize(("metadata_first", "requests"), [(False, 1), (True, 2)])
async def test_big_wheel_reads_only_a_little(metadata_first: bool, requests: int) -> None:
    """dist-info at the end (as wheel builders write it) is inside the first 16 KiB;
    METADATA at the start costs one more small range."""
    filename = "demo_pkg-1.2.3-cp312-cp312-manylinux_2_28_x86_64.whl"
    data = make_wheel(filename, payload=5_000_000, metadata_first=metadata_first)
    with serving(ReplayIndex()) as index:
        assert await _read(index, filename, data) == METADATA
        assert len(index.requests) == requests
        assert index.requests[0][2] == "bytes=-16384"


async def test_not_a_zip_is_an_error() -> None:
    with serving(ReplayIndex()) as index, pytest.raises(RemoteWheelError, match="not a zip"):
        await _read(index, "demo_pkg-1.0-py3-none-any.whl", b"\0" * 40_000)


async def test_wheel_without_metadata_is_an_error() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("demo_pkg/__init__.py", b"")
    missing = pytest.raises(RemoteWheelError, match=r"no \.dist-info/METADATA")
    with serving(ReplayIndex()) as index, missing:
        await _read(index, "demo_pkg-1.0-py3-none-any.whl", buffer.getvalue())


async def test_missing_wheel_is_an_http_error() -> None:
    with serving(ReplayIndex()) as index:
        async with HttpClient() as http:
            with pytest.raises(Exception, match="404"):
                await fetch_wheel_metadata(
                    http, f"{index.url}files/nope-1.0-py3-none-any.whl", "nope-1.0-py3-none-any.whl"
                )
