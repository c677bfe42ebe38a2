"""verify finds damage on a layout, a tar and the real registry; repair mends it from the index."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fixture_index import FixtureIndex, serve_index
from layout_check import check_layout
from registry_server import RegistryServer
from test_copy import fixture_index, make_mirror, tag_digests

from oci_pypi_sync import format as fmt
from oci_pypi_sync.engine.retry import RetryPolicy
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.ops.copy import copy
from oci_pypi_sync.ops.verify import Finding, repair, verify
from oci_pypi_sync.stores.registry import RegistryStore
from oci_pypi_sync.stores.tarball import open_tar_store

pytestmark = pytest.mark.registry

QUICK = RetryPolicy(attempts=2, initial_wait=0.01)


@pytest.fixture
def index() -> Iterator[FixtureIndex]:
    with serve_index(fixture_index()) as served:
        yield served


def digest_of(index: FixtureIndex, filename: str, metadata: bool = False) -> str:
    file = index.files_by_name()[filename]
    data = file.metadata if metadata else file.data
    assert data is not None
    return fmt.sha256_digest(data)


def kinds(findings: tuple[Finding, ...]) -> set[tuple[str, str, str, str]]:
    return {(f.kind, f.repository, f.tag, f.role) for f in findings}


async def test_a_clean_mirror_verifies_everywhere(
    index: FixtureIndex, registry: RegistryServer, tmp_path: Path
) -> None:
    layout = await make_mirror(index.url, tmp_path / "mirror")
    report = await verify(layout)
    assert report.ok, report.findings
    assert report.tags_checked == len(await tag_digests(layout))
    # alpha 1.0: 3 files, 2.0: 2, beta: 1 (listed twice, one manifest), each with the
    # shared config; wheels have a metadata layer.
    assert report.manifests_checked >= 3 + 6
    assert report.blobs_checked >= 1 + 6 + 4

    tar = tmp_path / "mirror.tar"
    writer = open_tar_store(tar, writable=True)
    await copy(layout, writer)
    await writer.aclose()
    assert (await verify(open_tar_store(tar, writable=False))).ok

    dst = RegistryStore(registry.host, "verify-clean", plain_http=True)
    try:
        await copy(layout, dst)
        shallow = await verify(dst)
        deep = await verify(dst, deep=True)
        assert shallow.ok, shallow.findings
        assert deep.ok, deep.findings
        assert deep.blobs_checked == shallow.blobs_checked > 0
    finally:
        await dst.aclose()


async def test_layout_damage_is_found_and_repaired(index: FixtureIndex, tmp_path: Path) -> None:
    layout = await make_mirror(index.url, tmp_path / "mirror")
    original_index = (layout.path / "index.json").read_bytes()
    original_blobs = sorted(p.name for p in (layout.path / "blobs" / "sha256").iterdir())
    tags = await tag_digests(layout)

    # A deleted file blob, a deleted metadata blob, a modified index blob, a repointed tag.
    sdist = digest_of(index, "alpha-2.0.tar.gz")
    metadata = digest_of(index, "alpha-2.0-py3-none-any.whl", metadata=True)
    layout.blob_path(sdist).unlink()
    layout.blob_path(metadata).unlink()
    layout.blob_path(tags["beta:0.1"]).write_bytes(b'{"tampered":true}')
    data = json.loads(original_index)
    for entry in data["manifests"]:
        if entry["annotations"][fmt.REF_NAME] == "alpha/1.0":
            entry["digest"] = tags["alpha:2.0"]
            entry["size"] = layout.blob_path(tags["alpha:2.0"]).stat().st_size
    (layout.path / "index.json").write_bytes(fmt.canonical_json(data))

    report = await verify(layout)
    found = kinds(report.findings)
    assert ("missing-blob", "alpha", "2.0", "file") in found
    assert ("missing-blob", "alpha", "2.0", "metadata") in found
    assert ("digest-mismatch", "beta", "0.1", "index") in found
    assert ("bad-index", "alpha", "1.0", "index") in found
    bad = next(f for f in report.findings if f.kind == "bad-index")
    assert "version '2.0' under tag 1.0" in bad.detail
    missing = {f.digest for f in report.findings if f.kind == "missing-blob"}
    assert missing == {sdist, metadata}

    async with IndexClient(index.url) as client:
        repaired = await repair(layout, report, client, retry=QUICK)
    assert repaired.ok, repaired.unrepaired
    assert {(a.repository, a.tag, a.what) for a in repaired.repaired} >= {
        ("alpha", "2.0", "blob"),
        ("alpha", "1.0", "index"),
        ("beta", "0.1", "index"),
    }
    assert (await verify(layout)).ok
    assert await tag_digests(layout) == tags
    assert (layout.path / "index.json").read_bytes() == original_index
    assert sorted(p.name for p in (layout.path / "blobs" / "sha256").iterdir()) == original_blobs
    check_layout(layout.path)


async def test_registry_damage_is_found_and_repaired(
    index: FixtureIndex, registry: RegistryServer, tmp_path: Path
) -> None:
    layout = await make_mirror(index.url, tmp_path / "mirror")
    store = RegistryStore(registry.host, "verify-reg", plain_http=True)
    try:
        await copy(layout, store)
        tags = await tag_digests(store)
        wheel = digest_of(index, "alpha-1.0-cp312-cp312-manylinux_2_17_x86_64.whl")
        beta_index = json.loads(layout.blob_path(tags["beta:0.1"]).read_bytes())
        beta_manifest = beta_index["manifests"][0]["digest"]
        base = f"{registry.url}/v2/verify-reg"
        async with httpx.AsyncClient() as http:
            deleted = await http.delete(f"{base}/alpha/blobs/{wheel}")
            assert deleted.status_code == 202
            deleted = await http.delete(f"{base}/beta/manifests/{beta_manifest}")
            assert deleted.status_code == 202
        # The tag 2.0's index under the tag 1.0.
        wrong = layout.blob_path(tags["alpha:2.0"]).read_bytes()
        await store.put_manifest("alpha", "1.0", fmt.OCI_INDEX, wrong)

        report = await verify(store)
        found = kinds(report.findings)
        assert ("bad-index", "alpha", "1.0", "index") in found
        assert ("missing-manifest", "beta", "0.1", "manifest") in found
        assert not report.ok
        # The deleted wheel is listed by 1.0 only, whose tag now points elsewhere:
        # verify sees it once the tag is mended, and repair restores it on the way.
        async with IndexClient(index.url) as client:
            repaired = await repair(store, report, client, retry=QUICK)
        assert repaired.ok, repaired.unrepaired
        restored = {a.digest for a in repaired.repaired}
        assert {wheel, beta_manifest, tags["alpha:1.0"]} <= restored

        after = await verify(store, deep=True)
        assert after.ok, after.findings
        assert await tag_digests(store) == tags
    finally:
        await store.aclose()


async def test_a_deleted_registry_blob_under_an_intact_tag(
    index: FixtureIndex, registry: RegistryServer, tmp_path: Path
) -> None:
    layout = await make_mirror(index.url, tmp_path / "mirror")
    store = RegistryStore(registry.host, "verify-blob", plain_http=True)
    try:
        await copy(layout, store)
        tags = await tag_digests(store)
        sdist = digest_of(index, "alpha-2.0.tar.gz")
        async with httpx.AsyncClient() as http:
            deleted = await http.delete(f"{registry.url}/v2/verify-blob/alpha/blobs/{sdist}")
            assert deleted.status_code == 202
        report = await verify(store)
        assert [(f.kind, f.tag, f.role, f.digest) for f in report.findings] == [
            ("missing-blob", "2.0", "file", sdist)
        ]
        async with IndexClient(index.url) as client:
            repaired = await repair(store, report, client, retry=QUICK)
        assert [(a.what, a.digest) for a in repaired.repaired] == [("blob", sdist)]
        assert (await verify(store)).ok
        assert await tag_digests(store) == tags
    finally:
        await store.aclose()


async def test_what_the_index_cannot_give_back_is_reported(
    index: FixtureIndex, tmp_path: Path
) -> None:
    layout = await make_mirror(index.url, tmp_path / "mirror")
    gone = "alpha-2.0.tar.gz"
    layout.blob_path(digest_of(index, gone)).unlink()
    index.projects["alpha"] = [f for f in index.projects["alpha"] if f.filename != gone]
    report = await verify(layout)
    async with IndexClient(index.url) as client:
        repaired = await repair(layout, report, client, retry=QUICK)
    assert not repaired.ok
    [failure] = repaired.unrepaired
    assert (failure.repository, failure.tag) == ("alpha", "2.0")
    assert f"no longer lists {gone}" in failure.detail
    assert not (await verify(layout)).ok


async def test_a_layout_blob_with_other_bytes_is_a_digest_mismatch(
    index: FixtureIndex, tmp_path: Path
) -> None:
    layout = await make_mirror(index.url, tmp_path / "mirror")
    wheel = digest_of(index, "alpha-1.0-py3-none-any.whl")
    path = layout.blob_path(wheel)
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    report = await verify(layout)
    assert [(f.kind, f.tag, f.role, f.title) for f in report.findings] == [
        ("digest-mismatch", "1.0", "file", "alpha-1.0-py3-none-any.whl")
    ]
    async with IndexClient(index.url) as client:
        repaired = await repair(layout, report, client, retry=QUICK)
    assert repaired.ok
    assert path.read_bytes() == index.files_by_name()["alpha-1.0-py3-none-any.whl"].data
    assert (await verify(layout)).ok
