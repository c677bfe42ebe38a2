"""Packed layouts: deterministic bytes, valid after extraction, read in place, resumable writes."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixture_index import FixtureIndex, serve_index
from layout_check import check_layout
from test_copy import fixture_index, make_mirror, referenced_blobs, tag_digests

from oci_pypi_sync import format as fmt
from oci_pypi_sync.errors import LayoutError
from oci_pypi_sync.ops.copy import copy
from oci_pypi_sync.stores.layout import LayoutStore
from oci_pypi_sync.stores.tarball import (
    TarReadStore,
    TarWriteStore,
    is_tar_path,
    open_tar_store,
    pack_layout,
    staging_dir,
)


@pytest.fixture
def index() -> Iterator[FixtureIndex]:
    with serve_index(fixture_index()) as served:
        yield served


@pytest.fixture
async def mirror(index: FixtureIndex, tmp_path: Path) -> LayoutStore:
    return await make_mirror(index.url, tmp_path / "mirror")


async def test_packing_is_deterministic_and_extracts_to_a_valid_layout(
    mirror: LayoutStore, tmp_path: Path
) -> None:
    first, second = tmp_path / "one.tar", tmp_path / "two.tar"
    pack_layout(mirror.path, first)
    # A second pack through a copy into a fresh tar: same content, same bytes.
    writer = open_tar_store(second, writable=True)
    await copy(mirror, writer)
    await writer.aclose()
    assert first.read_bytes() == second.read_bytes()

    with tarfile.open(first) as archive:
        members = archive.getmembers()
        names = [m.name for m in members]
        assert names[:4] == ["oci-layout", "index.json", "blobs", "blobs/sha256"]
        assert names[4:] == sorted(names[4:])
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
        assert {m.mode for m in members if m.isfile()} == {0o644}
        archive.extractall(tmp_path / "out", filter="data")
    blobs = check_layout(tmp_path / "out")
    assert blobs == len(list((mirror.path / "blobs" / "sha256").iterdir()))
    assert (tmp_path / "out" / "index.json").read_bytes() == (
        mirror.path / "index.json"
    ).read_bytes()


async def test_a_tar_is_read_in_place(mirror: LayoutStore, tmp_path: Path) -> None:
    tar = tmp_path / "mirror.tar"
    pack_layout(mirror.path, tar)
    reader = open_tar_store(tar, writable=False)
    assert isinstance(reader, TarReadStore)
    assert await reader.list_repositories() == await mirror.list_repositories()
    assert await tag_digests(reader) == await tag_digests(mirror)
    big = next(p for p in (mirror.path / "blobs" / "sha256").iterdir() if p.stat().st_size > 50_000)
    digest = "sha256:" + big.name
    chunks = [chunk async for chunk in reader.open_blob("alpha", digest)]
    assert b"".join(chunks) == big.read_bytes()
    assert max(len(c) for c in chunks) <= 1 << 20
    assert reader.blob_size(digest) == big.stat().st_size
    assert not await reader.has_blob("alpha", "sha256:" + "0" * 64)
    assert await reader.get_manifest("alpha", "9.9") is None
    with pytest.raises(LayoutError, match="read-only"):
        await reader.put_blob_bytes("alpha", fmt.sha256_digest(b"x"), b"x")


async def test_an_abandoned_write_resumes_from_the_staging_directory(
    mirror: LayoutStore, tmp_path: Path
) -> None:
    tar = tmp_path / "mirror.tar"
    writer = open_tar_store(tar, writable=True)
    assert isinstance(writer, TarWriteStore)
    with pytest.raises(LayoutError, match="in use"):
        open_tar_store(tar, writable=True)
    first = await copy(mirror, writer, repositories=["alpha"])
    writer.abandon()  # as a crash would leave it: no tar yet, the staging directory kept
    assert not tar.exists()
    assert (staging_dir(tar) / "oci-layout").is_file()

    resumed = open_tar_store(tar, writable=True)
    assert await resumed.list_tags("alpha") == ["1.0", "2.0"]
    rest = await copy(mirror, resumed)
    await resumed.aclose()
    assert first.blobs_copied > 0
    assert rest.count("unchanged") == 2  # alpha's tags were already staged
    distinct = {digest for _, digest, _ in await referenced_blobs(mirror)}
    assert first.blobs_copied + rest.blobs_copied == len(distinct)  # nothing copied twice
    assert not staging_dir(tar).exists()
    assert await tag_digests(TarReadStore(tar)) == await tag_digests(mirror)


async def test_writing_into_an_existing_tar_adds_to_it(mirror: LayoutStore, tmp_path: Path) -> None:
    tar = tmp_path / "mirror.tar"
    writer = open_tar_store(tar, writable=True)
    await copy(mirror, writer, repositories=["beta"])
    await writer.aclose()
    assert await TarReadStore(tar).list_repositories() == ["beta"]

    more = open_tar_store(tar, writable=True)
    report = await copy(mirror, more)
    await more.aclose()
    assert report.count("unchanged") == 1
    assert await tag_digests(TarReadStore(tar)) == await tag_digests(mirror)
    whole = tmp_path / "whole.tar"
    pack_layout(mirror.path, whole)
    assert tar.read_bytes() == whole.read_bytes()

    untouched = open_tar_store(tar, writable=True)
    before = tar.stat().st_mtime_ns
    await untouched.aclose()  # nothing written: the tar is left as it was
    assert tar.stat().st_mtime_ns == before


def test_tar_paths() -> None:
    assert is_tar_path("mirror.tar")
    assert is_tar_path(Path("/media/usb/mirror.tar"))
    assert not is_tar_path("mirror")
    assert not is_tar_path("mirror.tar.gz")
    assert staging_dir("/media/usb/mirror.tar") == Path("/media/usb/mirror.tar.staging")


def test_a_file_that_is_not_a_tar_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.tar"
    bogus.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(LayoutError, match=r"bogus\.tar"):
        open_tar_store(bogus, writable=False)
    with pytest.raises(LayoutError, match=r"missing\.tar"):
        open_tar_store(tmp_path / "missing.tar", writable=False)
