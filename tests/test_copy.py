"""Copy between a layout, the real registry and a packed tar: every digest and blob preserved."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, Callable, Iterator
from pathlib import Path

import pytest
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index
from layout_check import check_layout
from packaging.requirements import Requirement
from registry_server import RegistryServer, running_registry

from oci_pypi_sync import format as fmt
from oci_pypi_sync.engine.run import sync
from oci_pypi_sync.format.leases import is_lease_tag
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.ops.copy import CopyReport, TagCopy, copy
from oci_pypi_sync.stores.layout import LayoutStore
from oci_pypi_sync.stores.protocols import Store
from oci_pypi_sync.stores.registry import RegistryStore
from oci_pypi_sync.stores.tarball import open_tar_store, staging_dir

pytestmark = pytest.mark.registry

CATALOG_REPO = "oci-pypi.catalog"
REQUIREMENTS = [Requirement("alpha"), Requirement("beta")]


def fixture_index() -> FixtureIndex:
    fixture = FixtureIndex()
    fixture.add(
        "alpha",
        make_wheel("alpha", "1.0"),
        make_wheel("alpha", "1.0", tag="cp312-cp312-manylinux_2_17_x86_64"),
        make_sdist("alpha", "1.0"),
        make_wheel("alpha", "2.0"),
        make_sdist("alpha", "2.0", size=100_000),
    )
    fixture.add("beta", make_wheel("beta", "0.1", tag="cp312-cp312-macosx_11_0_universal2"))
    return fixture


@pytest.fixture
def index() -> Iterator[FixtureIndex]:
    with serve_index(fixture_index()) as served:
        yield served


async def add_catalog(store: Store) -> str:
    """A non-version artifact in a repository whose name has a dot, as a catalog is."""
    payload = b'{"projects":["alpha","beta"]}'
    config = fmt.empty_config()
    await store.put_blob_bytes(CATALOG_REPO, config.descriptor.digest, config.data)
    await store.put_blob_bytes(CATALOG_REPO, fmt.sha256_digest(payload), payload)
    manifest = fmt.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": fmt.OCI_MANIFEST,
            "artifactType": "application/vnd.oci-pypi.catalog.v1",
            "config": config.descriptor.to_json(),
            "layers": [
                {
                    "mediaType": "application/json",
                    "digest": fmt.sha256_digest(payload),
                    "size": len(payload),
                }
            ],
        }
    )
    return await store.put_manifest(CATALOG_REPO, "latest", fmt.OCI_MANIFEST, manifest)


async def make_mirror(index_url: str, path: Path) -> LayoutStore:
    """A layout synced from the fixture index, plus a catalog artifact."""
    layout = LayoutStore(path)
    async with IndexClient(index_url) as client:
        report = await sync(REQUIREMENTS, client, layout)
    assert not report.failed
    if CATALOG_REPO not in await layout.list_repositories():
        await add_catalog(layout)
    await layout.aclose()  # as a sync ends: index.json names every tag
    return layout


async def tag_digests(store: Store, *, leases: bool = False) -> dict[str, str]:
    """Every tag and its digest; a registry's writer leases only with ``leases``: each
    target has its own, and copy does not carry them (a layout copied has none)."""
    out = {}
    for repo in await store.list_repositories():
        for tag in await store.list_tags(repo):
            if repo == CATALOG_REPO and is_lease_tag(tag) and not leases:
                continue
            manifest = await store.get_manifest(repo, tag)
            assert manifest is not None
            out[f"{repo}:{tag}"] = manifest.digest
    return out


async def referenced_blobs(store: Store) -> set[tuple[str, str, int]]:
    """Every (repository, blob digest, size) the tags reach, read through the store."""
    blobs: set[tuple[str, str, int]] = set()

    async def walk(repo: str, reference: str) -> None:
        manifest = await store.get_manifest(repo, reference)
        assert manifest is not None, f"{repo}@{reference}"
        data = json.loads(manifest.body)
        for child in data.get("manifests", ()):
            await walk(repo, child["digest"])
        for blob in [data["config"], *data["layers"]] if "layers" in data else ():
            blobs.add((repo, blob["digest"], blob["size"]))

    for repo in await store.list_repositories():
        for tag in await store.list_tags(repo):
            await walk(repo, tag)
    return blobs


async def assert_same_content(src: Store, dst: Store) -> dict[str, str]:
    """Same tags at the same digests, and every blob in ``dst`` with the source's bytes."""
    digests = await tag_digests(src)
    assert await tag_digests(dst) == digests
    for repo, digest, size in await referenced_blobs(src):
        assert await dst.has_blob(repo, digest), f"{repo}@{digest}"
        data = b"".join([chunk async for chunk in dst.open_blob(repo, digest)])
        assert len(data) == size
        assert fmt.sha256_digest(data) == digest
    return digests


def registry_store(registry: RegistryServer, prefix: str) -> RegistryStore:
    return RegistryStore(registry.host, prefix, plain_http=True)


VERSION_TAGS = {"alpha:1.0", "alpha:2.0", "beta:0.1"}


async def test_layout_to_registry_then_rerun_copies_nothing(
    index: FixtureIndex, registry: RegistryServer, tmp_path: Path
) -> None:
    layout = await make_mirror(index.url, tmp_path / "mirror")
    dst = registry_store(registry, "copy-a")
    try:
        report = await copy(layout, dst)
        copied = {f"{t.repository}:{t.tag}" for t in report.tags}
        assert copied == set(await tag_digests(layout))
        assert copied > VERSION_TAGS
        assert any(name.startswith(CATALOG_REPO + ":") for name in copied)
        assert report.count("copied") == len(copied)
        assert not report.failed
        digests = await assert_same_content(layout, dst)
        blobs = await referenced_blobs(layout)
        distinct = {(repo, digest) for repo, digest, _ in blobs}
        # The empty config is shared by every repository: uploaded once, mounted elsewhere.
        assert report.blobs_copied + report.blobs_mounted == len(distinct)
        assert report.blobs_mounted >= 2
        assert report.bytes_copied >= 100_000

        again = await copy(layout, dst)
        assert again.count("unchanged") == len(copied)
        assert (again.blobs_copied, again.blobs_mounted, again.manifests_copied) == (0, 0, 0)
        assert {t.digest for t in again.tags} == set(digests.values())
    finally:
        await dst.aclose()


async def test_registry_to_layout_and_between_prefixes(
    index: FixtureIndex, registry: RegistryServer, tmp_path: Path
) -> None:
    layout = await make_mirror(index.url, tmp_path / "mirror")
    first = registry_store(registry, "copy-b1")
    second = registry_store(registry, "copy-b2/nested")
    try:
        tags = len(await tag_digests(layout))
        await copy(layout, first, jobs=2)
        report = await copy(first, second, repositories=["alpha", "beta", CATALOG_REPO])
        assert report.count("copied") == tags
        digests = await assert_same_content(layout, second)

        back = LayoutStore(tmp_path / "back")
        from_registry = await copy(second, back)
        assert from_registry.count("copied") == tags
        assert await assert_same_content(layout, back) == digests
        check_layout(back.path)
        assert (back.path / "index.json").read_bytes() == (layout.path / "index.json").read_bytes()
    finally:
        await first.aclose()
        await second.aclose()


async def test_layout_to_tar_to_a_fresh_registry(
    index: FixtureIndex, registry: RegistryServer, tmp_path: Path
) -> None:
    layout = await make_mirror(index.url, tmp_path / "mirror")
    tar = tmp_path / "carry" / "mirror.tar"
    tar.parent.mkdir()
    writer = open_tar_store(tar, writable=True)
    report = await copy(layout, writer)
    await writer.aclose()
    tags = len(await tag_digests(layout))
    assert report.count("copied") == tags
    assert tar.is_file()
    assert not staging_dir(tar).exists()

    reader = open_tar_store(tar, writable=False)
    with running_registry(tmp_path / "inside") as inside:
        dst = registry_store(inside, "mirror")
        try:
            into = await copy(reader, dst)
            assert into.count("copied") == tags
            assert not into.failed
            await assert_same_content(layout, dst)
        finally:
            await dst.aclose()


class CountingStore:
    """A store that counts completed blob uploads and can stop the copy after some."""

    def __init__(self, inner: RegistryStore, stop_after: int | None = None) -> None:
        self.inner = inner
        self.uploaded: list[str] = []
        self.stop_after = stop_after
        self.stopped = asyncio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def put_blob(
        self,
        repo: str,
        digest: str,
        size: int | None,
        chunks: AsyncIterable[bytes],
        *,
        reopen: Callable[[], AsyncIterable[bytes]] | None = None,
    ) -> bool:
        uploaded = await self.inner.put_blob(repo, digest, size, chunks, reopen=reopen)
        if not uploaded:
            return False
        self.uploaded.append(f"{repo}@{digest}")
        if self.stop_after is not None and len(self.uploaded) >= self.stop_after:
            self.stopped.set()
            await asyncio.Event().wait()  # hold here until cancelled
        return True


async def test_interrupted_copy_resumes_with_only_the_missing_part(
    index: FixtureIndex, registry: RegistryServer, tmp_path: Path
) -> None:
    layout = await make_mirror(index.url, tmp_path / "mirror")
    # The uninterrupted copy, for reference.
    reference = CountingStore(registry_store(registry, "copy-d-ref"))
    try:
        full = await copy(layout, reference, jobs=1)  # type: ignore[arg-type]
    finally:
        await reference.inner.aclose()
    assert full.blobs_copied == len(reference.uploaded) >= 8

    interrupted = CountingStore(registry_store(registry, "copy-d"), stop_after=4)
    task = asyncio.create_task(copy(layout, interrupted, jobs=1))  # type: ignore[arg-type]
    await asyncio.wait_for(interrupted.stopped.wait(), 300)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(interrupted.uploaded) == 4

    rerun = CountingStore(interrupted.inner)
    try:
        report = await copy(layout, rerun, jobs=1)  # type: ignore[arg-type]
        assert not report.failed
        assert not set(rerun.uploaded) & set(interrupted.uploaded)
        assert sorted(rerun.uploaded + interrupted.uploaded) == sorted(reference.uploaded)
        await assert_same_content(layout, interrupted.inner)
    finally:
        await interrupted.inner.aclose()


async def test_a_missing_source_blob_fails_its_tag_only(
    index: FixtureIndex, registry: RegistryServer, tmp_path: Path
) -> None:
    layout = await make_mirror(index.url, tmp_path / "mirror")
    sdist = index.files_by_name()["alpha-2.0.tar.gz"]
    layout.blob_path(fmt.sha256_digest(sdist.data)).unlink()
    dst = LayoutStore(tmp_path / "out")
    from oci_pypi_sync.engine.retry import RetryPolicy

    report: CopyReport = await copy(layout, dst, retry=RetryPolicy.never())
    failed = [t for t in report.tags if t.action == "failed"]
    assert [(t.repository, t.tag) for t in failed] == [("alpha", "2.0")]
    assert isinstance(failed[0], TagCopy)
    assert "no blob" in (failed[0].reason or "")
    assert report.count("copied") == len(await tag_digests(layout)) - 1
    assert await dst.list_tags("alpha") == ["1.0"]
    check_layout(dst.path)
