"""The catalog artifact: content, fragments per writer, and concurrent writers losing nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from oci_pypi_sync.engine.results import ReleaseResult
from oci_pypi_sync.engine.writer import Writer
from oci_pypi_sync.errors import RegistryError
from oci_pypi_sync.ops.catalog import (
    CATALOG_ARTIFACT,
    CATALOG_REPOSITORY,
    LATEST_TAG,
    Catalog,
    CatalogRelease,
    read_catalog,
    update_catalog,
    writer_tag,
)
from oci_pypi_sync.plan.shard import Shard
from oci_pypi_sync.stores.layout import LayoutStore


def _catalog(project: str, *versions: str) -> Catalog:
    return Catalog.from_releases(
        ReleaseResult(project, v, v, f"sha256:{project}{v}".ljust(71, "0"), "pushed")
        for v in versions
    )


def test_from_releases_keeps_only_tagged_releases() -> None:
    catalog = Catalog.from_releases(
        [
            ReleaseResult("a", "1.0", "1.0", "sha256:" + "1" * 64, "pushed"),
            ReleaseResult("a", "2.0", "2.0", "sha256:" + "2" * 64, "unchanged"),
            ReleaseResult("a", "3.0", "3.0", None, "failed", "boom"),
        ]
    )
    assert [r.version for r in catalog.releases("a")] == ["1.0", "2.0"]


def test_json_round_trip_and_pep440_order() -> None:
    catalog = _catalog("a", "10.0", "9.0", "1.0rc1").merged(_catalog("b", "0.1"))
    again = Catalog.from_json(catalog.to_json())
    assert again == catalog
    assert [r.version for r in again.releases("a")] == ["1.0rc1", "9.0", "10.0"]
    assert json.loads(catalog.to_json())["schema"] == 1
    with pytest.raises(ValueError, match="schema 1"):
        Catalog.from_json(b'{"schema": 2}')


def test_merge_prefers_the_newer_release_of_a_tag() -> None:
    old = Catalog({"a": {"1.0": CatalogRelease("1.0", "1.0", "sha256:old")}})
    new = Catalog({"a": {"1.0": CatalogRelease("1.0", "1.0", "sha256:new")}})
    assert old.merged(new).projects["a"]["1.0"].digest == "sha256:new"


def test_writer_tags_start_with_a_letter() -> None:
    assert writer_tag(None) == "fragment-all"
    assert writer_tag(Shard(2, 8)) == "fragment-shard-2-of-8"


async def test_a_writer_merges_into_its_own_fragment(tmp_path: Path) -> None:
    store = LayoutStore(tmp_path / "m")
    await update_catalog(Writer(store), _catalog("a", "1.0"))
    await update_catalog(Writer(store), _catalog("b", "2.0"))  # a later unsharded run
    catalog = await read_catalog(store)
    assert catalog is not None
    assert sorted(catalog.projects) == ["a", "b"]
    assert await store.list_tags(CATALOG_REPOSITORY) == ["fragment-all", LATEST_TAG]
    manifest = await store.get_manifest(CATALOG_REPOSITORY, LATEST_TAG)
    assert manifest is not None
    assert json.loads(manifest.body)["artifactType"] == CATALOG_ARTIFACT


async def test_concurrent_shards_lose_no_update(tmp_path: Path) -> None:
    store = LayoutStore(tmp_path / "m")
    shards = [Shard(k, 4) for k in range(4)]
    await asyncio.gather(
        *(update_catalog(Writer(store), _catalog(f"p{s.index}", "1.0"), s) for s in shards)
    )
    latest = await read_catalog(store)
    exact = await read_catalog(store, exact=True)
    assert latest is not None
    assert exact is not None
    assert sorted(latest.projects) == sorted(exact.projects) == ["p0", "p1", "p2", "p3"]


async def test_no_catalog_reads_as_none(tmp_path: Path) -> None:
    store = LayoutStore(tmp_path / "m")
    assert await read_catalog(store) is None
    assert await read_catalog(store, exact=True) is None


class _LatestRefused(LayoutStore):
    """Refuses the first writes of 'latest' the way a registry refuses a racing PUT."""

    def __init__(self, root: Path, *errors: RegistryError) -> None:
        super().__init__(root)
        self.errors = list(errors)

    async def put_manifest(self, repo: str, reference: str, media_type: str, body: bytes) -> str:
        if reference == LATEST_TAG and self.errors:
            raise self.errors.pop(0)
        return await super().put_manifest(repo, reference, media_type, body)


async def test_a_concurrent_write_of_latest_is_merged_again(tmp_path: Path) -> None:
    racing = RegistryError("provided digest did not match", status=400, code="DIGEST_INVALID")
    store = _LatestRefused(tmp_path / "m", racing)
    _, merged = await update_catalog(Writer(store), _catalog("a", "1.0"))
    assert store.errors == []  # the refusal happened, and the next attempt wrote it
    assert sorted(merged.projects) == ["a"]
    catalog = await read_catalog(store)
    assert catalog is not None
    assert sorted(catalog.projects) == ["a"]


async def test_a_refusal_that_is_not_a_race_is_raised(tmp_path: Path) -> None:
    denied = RegistryError("denied", status=403, code="DENIED")
    store = _LatestRefused(tmp_path / "m", denied)
    with pytest.raises(RegistryError, match="denied"):
        await update_catalog(Writer(store), _catalog("a", "1.0"))
