"""A mirror written in format 1 (tests/data/format1-layout) is read, synced into and migrated.

The fixture was written by the previous release; its file bytes are its
blobs, so the index these tests serve is rebuilt from it, byte for byte.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixture_index import FixtureFile, FixtureIndex, serve_index
from layout_check import check_layout
from packaging.requirements import Requirement
from registry_server import RegistryServer

from oci_pypi_sync import format as fmt
from oci_pypi_sync.engine.run import SyncOptions, sync
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.ops.catalog import CATALOG_REPOSITORY, read_catalog
from oci_pypi_sync.ops.copy import copy
from oci_pypi_sync.ops.listing import list_releases
from oci_pypi_sync.ops.verify import repair, verify
from oci_pypi_sync.plan.select import SelectionOptions
from oci_pypi_sync.serve.view import MirrorView
from oci_pypi_sync.stores.layout import LayoutStore
from oci_pypi_sync.stores.protocols import Store
from oci_pypi_sync.stores.registry import RegistryStore

FIXTURE = Path(__file__).parent / "data" / "format1-layout"
LEGACY = "0.1dev-r1234"
OLD_LEGACY_TAG = "_0.1dev-r1234.092a02054fcead48"
NEW_LEGACY_TAG = "legacy-0.1dev.r1234-092a02054fcead48"
BZ2 = "gamma-0.3.tar.bz2"
# No package index is needed to migrate: repair is pointed at a port nobody serves.
NO_INDEX = "http://127.0.0.1:9/simple/"


def format1_layout(path: Path) -> LayoutStore:
    shutil.copytree(FIXTURE, path, ignore=shutil.ignore_patterns("README.md"))
    return LayoutStore(path, create=False)


def ref_names(layout: LayoutStore) -> list[str]:
    return [e["annotations"][fmt.REF_NAME] for e in layout.read_index()["manifests"]]


def index_from_layout(layout: LayoutStore) -> FixtureIndex:
    """The package index the fixture was synced from, rebuilt from its blobs and entries."""
    fixture = FixtureIndex()
    for (repo, _tag), entry in sorted(layout.tags().items()):
        if repo == CATALOG_REPOSITORY:
            continue
        index = json.loads(layout.blob_path(entry["digest"]).read_bytes())
        seen = {f.filename for f in fixture.projects.get(repo, [])}
        for item in index["manifests"]:
            notes = item["annotations"]
            if fmt.entry_filename(fmt.Descriptor.from_json(item)) in seen:
                continue
            manifest = json.loads(layout.blob_path(item["digest"]).read_bytes())
            layers = manifest["layers"]
            metadata = (
                layout.blob_path(layers[1]["digest"]).read_bytes() if len(layers) > 1 else None
            )
            filename = notes[fmt.TITLE]
            seen.add(filename)
            fixture.add(
                repo,
                FixtureFile(
                    filename,
                    layout.blob_path(layers[0]["digest"]).read_bytes(),
                    metadata=metadata,
                    yanked=notes.get(fmt.A_YANKED_REASON, notes.get(fmt.A_YANKED) == "true"),
                    requires_python=notes.get(fmt.A_REQUIRES_PYTHON),
                    upload_time=notes[fmt.A_UPLOAD_TIME],
                ),
            )
    return fixture


async def release_bodies(store: Store) -> dict[tuple[str, str], bytes]:
    out = {}
    for repo in ("alpha", "gamma"):
        for tag in await store.list_tags(repo):
            manifest = await store.get_manifest(repo, tag)
            assert manifest is not None
            out[(repo, tag)] = manifest.body
    return out


async def file_manifests(store: Store, repo: str, tag: str) -> dict[str, str]:
    """Filename -> manifest digest, as the version's index lists them."""
    manifest = await store.get_manifest(repo, tag)
    assert manifest is not None
    _, entries = fmt.parse_release_index(manifest.body)
    return {fmt.entry_filename(e) or "": e.digest for e in entries}


@pytest.fixture
def old(tmp_path: Path) -> LayoutStore:
    return format1_layout(tmp_path / "format1")


@pytest.fixture
def served(old: LayoutStore) -> Iterator[FixtureIndex]:
    with serve_index(index_from_layout(old)) as fixture:
        yield fixture


SELECTION = SyncOptions(selection=SelectionOptions(pre=True, include_yanked=True))
REQUIREMENTS = [Requirement("alpha"), Requirement("gamma")]


async def fresh_format2(index_url: str, path: Path) -> LayoutStore:
    """The same files synced into an empty layout: what format 2 writes."""
    layout = LayoutStore(path)
    async with IndexClient(index_url) as client:
        report = await sync(REQUIREMENTS, client, layout, SELECTION)
    assert not report.failed
    return layout


# --- reading ------------------------------------------------------------------


async def test_a_format1_layout_is_listed_served_and_verified_sound(old: LayoutStore) -> None:
    assert sorted(old.tags()) == [
        ("alpha", "1.0"),
        ("alpha", "2.0"),
        ("gamma", "0.3"),
        ("gamma", OLD_LEGACY_TAG),
        (CATALOG_REPOSITORY, "fragment-all"),
        (CATALOG_REPOSITORY, "latest"),
    ]
    alpha = await list_releases(old, "alpha")
    assert [(r.version, [f.filename for f in r.files]) for r in alpha] == [
        (
            "1.0",
            [
                "alpha-1.0-cp312-cp312-manylinux_2_17_x86_64.whl",
                "alpha-1.0-py3-none-any.whl",
                "alpha-1.0.tar.gz",
            ],
        ),
        ("2.0", ["alpha-2.0-cp312-cp312-macosx_11_0_universal2.whl", "alpha-2.0.tar.gz"]),
    ]
    assert [f.yanked for f in alpha[1].files] == [False, True]
    gamma = await list_releases(old, "gamma")
    assert [(r.version, r.tag) for r in gamma] == [(LEGACY, OLD_LEGACY_TAG), ("0.3", "0.3")]

    project = await MirrorView(old).project("alpha")
    assert project is not None
    assert project.versions == ("1.0", "2.0")
    assert len(project.files) == 5

    report = await verify(old)
    assert report.ok, report.findings  # format 1 is readable: warnings only
    assert {f.kind for f in report.findings} == {"old-format"}
    assert sorted((f.repository, f.tag, f.role) for f in report.findings) == [
        ("alpha", "1.0", "index"),
        ("alpha", "1.0", "ref"),
        ("alpha", "2.0", "index"),
        ("alpha", "2.0", "ref"),
        ("gamma", "0.3", "index"),
        ("gamma", "0.3", "manifest"),  # the .tar.bz2 media type format 2 renamed
        ("gamma", "0.3", "ref"),
        ("gamma", OLD_LEGACY_TAG, "index"),  # format 1's fallback tag
        ("gamma", OLD_LEGACY_TAG, "ref"),
        (CATALOG_REPOSITORY, "fragment-all", "index"),
        (CATALOG_REPOSITORY, "fragment-all", "ref"),
        (CATALOG_REPOSITORY, "latest", "index"),
        (CATALOG_REPOSITORY, "latest", "ref"),
    ]


# --- migrating ------------------------------------------------------------------


async def test_verify_repair_migrates_a_layout_to_what_format2_writes(
    old: LayoutStore, served: FixtureIndex, tmp_path: Path
) -> None:
    blobs_before = {p.name for p in (old.path / "blobs" / "sha256").iterdir()}
    catalog_blobs = set()  # the first version's catalog manifests and documents
    for (repo, _tag), entry in old.tags().items():
        if repo == CATALOG_REPOSITORY:
            body = json.loads(old.blob_path(entry["digest"]).read_bytes())
            digests = [entry["digest"], *(layer["digest"] for layer in body["layers"])]
            catalog_blobs |= {digest.removeprefix("sha256:") for digest in digests}
    manifests_before = await file_manifests(old, "alpha", "1.0")
    manifests_before |= await file_manifests(old, "alpha", "2.0")
    bz2_before = (await file_manifests(old, "gamma", "0.3"))[BZ2]
    catalog_before = await read_catalog(old)

    async with IndexClient(NO_INDEX) as client:
        repaired = await repair(old, await verify(old), client)
    assert repaired.ok, repaired.unrepaired
    after = await verify(old)
    assert after.findings == ()

    # ref names, tags and the layout itself
    assert ref_names(old) == [
        "alpha/1.0",
        "alpha/2.0",
        "gamma/0.3",
        f"gamma/{NEW_LEGACY_TAG}",
        "oci-pypi.catalog/latest",
    ]
    check_layout(old.path)
    # every file manifest keeps its digest, but the one whose media type changed
    assert (await file_manifests(old, "alpha", "1.0")) | (
        await file_manifests(old, "alpha", "2.0")
    ) == manifests_before
    bz2_after = (await file_manifests(old, "gamma", "0.3"))[BZ2]
    assert bz2_after != bz2_before
    manifest = json.loads(old.blob_path(bz2_after).read_bytes())
    assert manifest["layers"][0]["mediaType"] == fmt.SDIST_TAR_BZ2_LAYER
    assert manifest["annotations"][fmt.A_FORMAT] == "2"
    # nothing but the old catalog was deleted (old manifests stay as unreferenced blobs)
    blobs_after = {p.name for p in (old.path / "blobs" / "sha256").iterdir()}
    assert blobs_before - catalog_blobs <= blobs_after
    assert not catalog_blobs & blobs_after
    # the catalog follows: same projects, each release under its tag's new digest
    catalog = await read_catalog(old)
    assert catalog is not None
    assert catalog_before is not None
    assert set(catalog.projects) == set(catalog_before.projects)
    tagged = {(repo, tag): entry["digest"] for (repo, tag), entry in old.tags().items()}
    for name, releases in catalog.projects.items():
        assert {(name, tag): r.digest for tag, r in releases.items()}.items() <= tagged.items()
    assert set(catalog.projects["gamma"]) == {"0.3", NEW_LEGACY_TAG}

    # byte for byte what format 2 writes for the same files
    fresh = await fresh_format2(served.url, tmp_path / "fresh")
    assert await release_bodies(old) == await release_bodies(fresh)


async def test_a_sync_into_a_format1_layout_rewrites_what_it_touches_in_format2(
    old: LayoutStore, served: FixtureIndex, tmp_path: Path
) -> None:
    manifests_before = await file_manifests(old, "alpha", "1.0")
    async with IndexClient(served.url) as client:
        report = await sync(REQUIREMENTS, client, old, SELECTION)
    assert not report.failed
    assert report.count("pushed") == 0  # no file sent again, the .tar.bz2's included
    bz2 = json.loads(old.blob_path((await file_manifests(old, "gamma", "0.3"))[BZ2]).read_bytes())
    assert bz2["layers"][0]["mediaType"] == fmt.SDIST_TAR_BZ2_LAYER
    files_sent = [path for path in served.sent if not path.endswith(".metadata")]
    assert files_sent == []
    assert await file_manifests(old, "alpha", "1.0") == manifests_before

    fresh = await fresh_format2(served.url, tmp_path / "fresh")
    bodies = await release_bodies(old)
    old_legacy = bodies.pop(("gamma", OLD_LEGACY_TAG))
    assert bodies == await release_bodies(fresh)
    assert json.loads(old_legacy)["annotations"][fmt.A_FORMAT] == "1"
    # every ref name renamed when index.json was written; the old fallback tag stays
    assert [name for name in ref_names(old) if ":" in name] == [f"gamma:{OLD_LEGACY_TAG}"]

    # readers list the legacy version once; verify flags only the old tag, and repair drops it
    gamma = await list_releases(old, "gamma")
    assert [(r.version, r.tag) for r in gamma] == [(LEGACY, NEW_LEGACY_TAG), ("0.3", "0.3")]
    project = await MirrorView(old).project("gamma")
    assert project is not None
    assert project.versions == (LEGACY, "0.3")
    report_after = await verify(old)
    assert [(f.kind, f.tag, f.role) for f in report_after.findings] == [
        ("old-format", OLD_LEGACY_TAG, "index"),
        ("old-format", OLD_LEGACY_TAG, "ref"),
    ]
    async with IndexClient(NO_INDEX) as client:
        repaired = await repair(old, report_after, client)
    assert repaired.ok, repaired.unrepaired
    assert (await verify(old)).findings == ()
    assert await old.list_tags("gamma") == ["0.3", NEW_LEGACY_TAG]
    check_layout(old.path)
    catalog = await read_catalog(old)
    assert catalog is not None
    assert {t: r.digest for t, r in catalog.projects["gamma"].items()} == {
        tag: old.tags()[("gamma", tag)]["digest"] for tag in ("0.3", NEW_LEGACY_TAG)
    }


async def test_a_format1_registry_mirror_is_migrated_in_place(
    old: LayoutStore, any_registry: RegistryServer, tmp_path: Path
) -> None:
    prefix = f"format1-{any_registry.implementation}"
    store = RegistryStore(any_registry.host, prefix, plain_http=True)
    try:
        copied = await copy(old, store)
        assert not copied.failed
        before = await verify(store)
        assert before.ok, before.findings
        assert {f.kind for f in before.findings} == {"old-format"}
        assert all(f.role != "ref" for f in before.findings)  # refs are a layout's

        async with IndexClient(NO_INDEX) as client:
            repaired = await repair(store, before, client)
        # a registry keeps the format-1 fallback tag: said, and readers skip it
        [kept] = repaired.unrepaired
        assert (kept.repository, kept.tag) == ("gamma", OLD_LEGACY_TAG)
        assert "delete it with the registry's own tools" in kept.detail

        after = await verify(store)
        assert [(f.kind, f.tag) for f in after.findings] == [("old-format", OLD_LEGACY_TAG)]
        assert after.ok
        gamma = await list_releases(store, "gamma")
        assert [(r.version, r.tag) for r in gamma] == [(LEGACY, NEW_LEGACY_TAG), ("0.3", "0.3")]

        # what was migrated equals a layout migrated the same way
        async with IndexClient(NO_INDEX) as client:
            await repair(old, await verify(old), client)
        migrated = await release_bodies(store)
        migrated.pop(("gamma", OLD_LEGACY_TAG))
        assert migrated == await release_bodies(old)
    finally:
        await store.aclose()
