"""Sync into an OCI image layout from a fixture index served over real HTTP."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixture_index import FixtureFile, FixtureIndex, make_sdist, make_wheel, serve_index
from layout_check import check_layout
from packaging.requirements import Requirement

from oci_pypi_sync import format as fmt
from oci_pypi_sync.engine import run as sync_module
from oci_pypi_sync.engine.release import SMALL_WHEEL_BYTES
from oci_pypi_sync.engine.run import SyncOptions, SyncReport, sync
from oci_pypi_sync.errors import AuthenticationError
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.ops.catalog import read_catalog
from oci_pypi_sync.plan.select import SelectionOptions
from oci_pypi_sync.stores.layout import LayoutStore
from oci_pypi_sync.stores.protocols import ListsRepositoriesWithin


@pytest.fixture
def index() -> Iterator[FixtureIndex]:
    fixture = FixtureIndex()
    fixture.add("Demo.Pkg", make_wheel("Demo.Pkg", "1.0"), make_sdist("Demo.Pkg", "1.0"))
    fixture.add(
        "Demo.Pkg",
        make_wheel("Demo.Pkg", "2.0", tag="cp312-cp312-manylinux_2_17_x86_64"),
        make_wheel("Demo.Pkg", "2.0", tag="cp312-cp312-macosx_11_0_universal2"),
        make_sdist("Demo.Pkg", "2.0"),
    )
    fixture.add("Demo.Pkg", make_wheel("Demo.Pkg", "3.0rc1"))
    yanked = make_sdist("Demo.Pkg", "2.1")
    yanked.yanked = "broken build"
    fixture.add("Demo.Pkg", yanked)
    with serve_index(fixture):
        yield fixture


async def _sync(index: FixtureIndex, path: Path, *reqs: str, **options: object) -> SyncReport:
    store = LayoutStore(path)
    async with IndexClient(index.url) as client:
        return await sync(
            [Requirement(r) for r in reqs],
            client,
            store,
            SyncOptions(selection=SelectionOptions(**options)),  # type: ignore[arg-type]
        )


async def test_sync_writes_a_valid_layout_with_one_index_per_version(
    index: FixtureIndex, tmp_path: Path
) -> None:
    report = await _sync(index, tmp_path / "mirror", "demo-pkg")
    assert not report.failed
    assert sorted(r.tag for r in report.releases) == ["1.0", "2.0"]  # no rc, no yanked-only
    assert report.count("pushed") == 5
    store = LayoutStore(tmp_path / "mirror")
    assert sorted(store.tags()) == [
        ("demo-pkg", "1.0"),
        ("demo-pkg", "2.0"),
        ("oci-pypi.catalog", "latest"),
    ]
    names = [e["annotations"][fmt.REF_NAME] for e in store.read_index()["manifests"]]
    assert names == [
        "demo-pkg/1.0",
        "demo-pkg/2.0",
        "oci-pypi.catalog/latest",
    ]
    catalog = await read_catalog(store)
    assert catalog is not None
    assert [r.tag for r in catalog.releases("demo-pkg")] == ["1.0", "2.0"]
    check_layout(tmp_path / "mirror")

    manifest = await store.get_manifest("demo-pkg", "2.0")
    assert manifest is not None
    _, entries = fmt.parse_release_index(manifest.body)
    platforms = sorted(str(e.platform) for e in entries if e.platform)
    assert platforms == ["darwin/amd64", "darwin/arm64", "linux/amd64"]
    files = index.files_by_name()
    for entry in entries:
        child = await store.get_manifest("demo-pkg", entry.digest)
        assert child is not None
        layers = json.loads(child.body)["layers"]
        original = files[entry.annotations[fmt.A_FILENAME]]
        assert fmt.TITLE not in entry.annotations
        assert layers[0]["digest"] == "sha256:" + hashlib.sha256(original.data).hexdigest()
        blob = store.blob_path(layers[0]["digest"]).read_bytes()
        assert blob == original.data
        if original.metadata is not None:
            assert store.blob_path(layers[1]["digest"]).read_bytes() == original.metadata


async def test_rerun_pushes_nothing_and_keeps_digests(index: FixtureIndex, tmp_path: Path) -> None:
    first = await _sync(index, tmp_path / "m", "demo-pkg")
    index_json = (tmp_path / "m" / "index.json").read_bytes()
    second = await _sync(index, tmp_path / "m", "demo-pkg")
    assert second.count("pushed") == 0
    assert second.count("present") == first.count("pushed")
    assert all(r.action == "unchanged" for r in second.releases)
    assert (tmp_path / "m" / "index.json").read_bytes() == index_json


async def test_pre_and_yanked_are_opt_in(index: FixtureIndex, tmp_path: Path) -> None:
    report = await _sync(index, tmp_path / "m", "demo-pkg>=2", pre=True, include_yanked=True)
    assert sorted(r.version for r in report.releases) == ["2.0", "2.1", "3.0rc1"]
    pinned = await _sync(index, tmp_path / "p", "demo-pkg==2.1")
    assert [f.filename for f in pinned.files] == ["demo_pkg-2.1.tar.gz"]  # == pins a yanked file
    store = LayoutStore(tmp_path / "p")
    manifest = await store.get_manifest("demo-pkg", "2.1")
    assert manifest is not None
    _, (entry,) = fmt.parse_release_index(manifest.body)
    assert entry.annotations[fmt.A_YANKED_REASON] == "broken build"


async def test_only_binary_and_dry_run(index: FixtureIndex, tmp_path: Path) -> None:
    store = LayoutStore(tmp_path / "dry")
    async with IndexClient(index.url) as client:
        report = await sync(
            [Requirement("demo-pkg==1.0")],
            client,
            store,
            SyncOptions(selection=SelectionOptions(only_binary=True), dry_run=True),
        )
    assert [(f.filename, f.action) for f in report.files] == [
        ("demo_pkg-1.0-py3-none-any.whl", "planned")
    ]
    assert store.tags() == {}
    assert not (tmp_path / "dry").exists()  # a dry run creates nothing


async def test_a_file_whose_bytes_lie_fails_alone_and_is_never_stored(
    index: FixtureIndex, tmp_path: Path
) -> None:
    liar = make_sdist("liar", "1.0")
    liar.advertised_sha256 = hashlib.sha256(b"something else").hexdigest()
    index.add("liar", liar, make_wheel("liar", "1.0"))
    report = await _sync(index, tmp_path / "m", "liar")
    assert report.failed
    failed = [f for f in report.files if f.action == "failed"]
    assert [f.filename for f in failed] == ["liar-1.0.tar.gz"]
    assert "digest mismatch" in (failed[0].error or "")
    store = LayoutStore(tmp_path / "m")
    assert not store.blob_path("sha256:" + liar.advertised_sha256).exists()
    manifest = await store.get_manifest("liar", "1.0")
    assert manifest is not None  # the good wheel is tagged, the liar is not in the index
    _, entries = fmt.parse_release_index(manifest.body)
    assert [fmt.entry_filename(e) for e in entries] == ["liar-1.0-py3-none-any.whl"]
    check_layout(tmp_path / "m")


async def test_unknown_project_is_reported_by_name(index: FixtureIndex, tmp_path: Path) -> None:
    report = await _sync(index, tmp_path / "m", "demo-pkg==1.0", "no-such-project")
    assert [e.project for e in report.project_errors] == ["no-such-project"]
    assert "no-such-project" in report.project_errors[0].error
    assert report.count("pushed") == 2


async def test_new_yank_upstream_updates_only_the_index(
    index: FixtureIndex, tmp_path: Path
) -> None:
    await _sync(index, tmp_path / "m", "demo-pkg==1.0")
    store = LayoutStore(tmp_path / "m")
    before = await store.get_manifest("demo-pkg", "1.0")
    sdist: FixtureFile = index.files_by_name()["demo_pkg-1.0.tar.gz"]
    sdist.yanked = "security"
    report = await _sync(index, tmp_path / "m", "demo-pkg==1.0")
    assert report.count("pushed") == 0
    (release,) = report.releases
    assert release.action == "pushed"
    after = await store.get_manifest("demo-pkg", "1.0")
    assert before is not None
    assert after is not None
    assert before.digest != after.digest
    _, entries = fmt.parse_release_index(after.body)
    yanked = [e for e in entries if e.annotations.get(fmt.A_YANKED) == "true"]
    assert [fmt.entry_filename(e) for e in yanked] == ["demo_pkg-1.0.tar.gz"]


async def test_a_small_wheel_s_own_metadata_saves_the_metadata_request(tmp_path: Path) -> None:
    fixture = FixtureIndex()
    wheel = make_wheel("meta", "1.0", requires=("six",))
    odd = make_wheel("odd", "1.0")
    odd.metadata = b"Metadata-Version: 2.1\nName: odd\nVersion: 1.0\nSummary: served apart\n"
    fixture.add("meta", wheel)
    fixture.add("odd", odd)
    with serve_index(fixture):
        report = await _sync(fixture, tmp_path / "m", "meta", "odd")
    assert not report.failed
    gets = [path for method, path in fixture.requests if method == "GET"]
    # The wheel streamed carried the advertised METADATA: no .metadata request.
    assert not any(path.endswith("meta-1.0-py3-none-any.whl.metadata") for path in gets)
    # A .metadata that differs from the wheel's own is fetched, and it is what is stored.
    assert any(path.endswith("odd-1.0-py3-none-any.whl.metadata") for path in gets)
    store = LayoutStore(tmp_path / "m")
    for name, expected in (("meta", wheel.metadata), ("odd", odd.metadata)):
        manifest = await store.get_manifest(name, "1.0")
        assert manifest is not None
        _, (entry,) = fmt.parse_release_index(manifest.body)
        child = await store.get_manifest(name, entry.digest)
        assert child is not None
        layer = json.loads(child.body)["layers"][1]
        assert expected is not None
        assert store.blob_path(layer["digest"]).read_bytes() == expected


async def test_wheels_sharing_core_metadata_fetch_it_once(tmp_path: Path) -> None:
    fixture = FixtureIndex()
    big = SMALL_WHEEL_BYTES + 4096  # over the size whose own METADATA is read
    tags = ("cp312-cp312-manylinux_2_17_x86_64", "cp312-cp312-manylinux_2_17_aarch64")
    wheels = [make_wheel("plat", "1.0", tag=tag, payload=big) for tag in tags]
    other = make_wheel("plat", "2.0", tag=tags[0], payload=big)
    assert wheels[0].metadata == wheels[1].metadata
    fixture.add("plat", *wheels, other)
    with serve_index(fixture):
        report = await _sync(fixture, tmp_path / "m", "plat")
    assert not report.failed
    assert report.count("pushed") == 3
    fetched = [p for m, p in fixture.requests if m == "GET" and p.endswith(".whl.metadata")]
    # one per release: the two 1.0 wheels advertise the same hash
    assert len([p for p in fetched if "-1.0-" in p]) == 1
    assert len([p for p in fetched if "-2.0-" in p]) == 1
    store = LayoutStore(tmp_path / "m")
    manifest = await store.get_manifest("plat", "1.0")
    assert manifest is not None
    _, entries = fmt.parse_release_index(manifest.body)
    assert len(entries) == 2
    for entry in entries:
        child = await store.get_manifest("plat", entry.digest)
        assert child is not None
        layer = json.loads(child.body)["layers"][1]
        assert store.blob_path(layer["digest"]).read_bytes() == wheels[0].metadata


class _CatalogRefused(LayoutStore, ListsRepositoriesWithin):
    """A store whose catalog answers like a registry that refuses these credentials."""

    catalog_reads = 0

    async def repositories_within(self, pages: int) -> frozenset[str] | None:
        self.catalog_reads += 1
        raise AuthenticationError("registry test: the catalog needs other credentials")


async def test_a_refused_catalog_falls_back_to_tag_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync_module, "CATALOG_MIN_PROJECTS", 2)
    fixture = FixtureIndex()
    for name in ("ref-a", "ref-b"):
        fixture.add(name, make_wheel(name, "1.0"))
    store = _CatalogRefused(tmp_path / "m")
    with serve_index(fixture):
        async with IndexClient(fixture.url) as client:
            report = await sync([Requirement("ref-a"), Requirement("ref-b")], client, store)
    assert store.catalog_reads == 1
    assert not report.failed
    assert await store.list_tags("ref-a") == ["1.0"]
    assert await store.list_tags("ref-b") == ["1.0"]
