"""The air-gap round trip: sync into a layout, pack it, copy it into a fresh registry,
serve from that registry, and pip installs; every digest equal to the source's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fixture_index import serve_index
from packaging.requirements import Requirement
from registry_server import running_registry
from serve_thread import serving
from test_serve_install import Served, _Collect, _fixture, pip_install

from oci_pypi_sync.engine.run import SyncOptions, sync
from oci_pypi_sync.format.leases import is_lease_tag
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.ops.catalog import CATALOG_REPOSITORY
from oci_pypi_sync.ops.copy import copy
from oci_pypi_sync.plan.select import SelectionOptions
from oci_pypi_sync.stores.layout import LayoutStore
from oci_pypi_sync.stores.protocols import Store
from oci_pypi_sync.stores.tarball import open_tar_store
from oci_pypi_sync.stores.targets import open_store, parse_target

pytestmark = pytest.mark.registry

PROJECTS = ("alpha", "beta", "gamma", "delta", "yankme")


async def _tags(store: Store) -> dict[tuple[str, str], str]:
    out = {}
    for repository in await store.list_repositories():
        for tag in await store.list_tags(repository):
            manifest = await store.get_manifest(repository, tag)
            assert manifest is not None
            out[repository, tag] = manifest.digest
    return out


async def _outside(layout: Path, tar: Path) -> dict[tuple[str, str], str]:
    """The connected side: sync from the index into a layout, then pack it."""
    options = SyncOptions(selection=SelectionOptions(include_yanked=True))
    with serve_index(_fixture()) as index:
        async with IndexClient(index.url) as client:
            report = await sync(
                [Requirement(p) for p in PROJECTS], client, LayoutStore(layout), options
            )
    assert not report.failed
    source = LayoutStore(layout, create=False)
    packed = open_tar_store(tar, writable=True)
    try:
        assert not (await copy(source, packed)).failed
    finally:
        await packed.aclose()
    return await _tags(source)


async def _inside(tar: Path, registry_host: str) -> dict[tuple[str, str], str]:
    """The disconnected side: the tar into a fresh registry."""
    carried = open_tar_store(tar, writable=False)
    registry = open_store(parse_target(f"{registry_host}/inside"))
    try:
        assert not (await copy(carried, registry)).failed
        return await _tags(registry)
    finally:
        await carried.aclose()
        await registry.aclose()


@pytest.fixture
def inside_server(
    tmp_path: Path,
) -> Iterator[tuple[Served, dict[tuple[str, str], str], dict[tuple[str, str], str]]]:
    layout, tar = tmp_path / "layout", tmp_path / "carry" / "mirror.tar"
    tar.parent.mkdir()
    with ThreadPoolExecutor(1) as pool:
        source_tags = pool.submit(asyncio.run, _outside(layout, tar)).result()
    with running_registry(tmp_path / "registry") as registry:
        with ThreadPoolExecutor(1) as pool:
            inside_tags = pool.submit(asyncio.run, _inside(tar, registry.host)).result()
        store = open_store(parse_target(f"{registry.host}/inside"), create=False)
        access = logging.getLogger("oci_pypi_sync.serve.access")
        with serving(store) as base:
            served = Served(f"{base}/simple/")
            handler = _Collect(served)
            access.addHandler(handler)
            access.setLevel(logging.INFO)
            try:
                yield served, source_tags, inside_tags
            finally:
                access.removeHandler(handler)


def test_air_gap_round_trip(
    inside_server: tuple[Served, dict[tuple[str, str], str], dict[tuple[str, str], str]],
    tmp_path: Path,
) -> None:
    served, source_tags, inside_tags = inside_server
    # The registry's own: the lease of the copy that wrote it (not carried, not in a layout).
    leases = {key for key in inside_tags if key[0] == CATALOG_REPOSITORY and is_lease_tag(key[1])}
    assert leases == {(CATALOG_REPOSITORY, "writer-0")}
    carried = {key: digest for key, digest in inside_tags.items() if key not in leases}
    assert carried == source_tags  # every tag, every digest, carried unchanged
    assert ("oci-pypi.catalog", "latest") in inside_tags  # the catalog came along
    home = tmp_path / "home"
    home.mkdir()
    target = home / "site"
    assert pip_install(served, target, "alpha", "gamma[fast]") == {
        "alpha-1.0",
        "beta-2.0",
        "gamma-1.0",
        "delta-1.0",
    }
    paths = [record.path for record in served.since(0)]
    assert any(path.startswith("/files/alpha/") for path in paths)
