"""The catalog in parts: content, updates that cost the change, concurrent writers, removals,
superseded parts, and catalogs of the first version read and migrated.

Everything is read back from a real layout or a real registry.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from registry_server import RegistryServer

from oci_pypi_sync.engine.binding import bind_state
from oci_pypi_sync.engine.results import ReleaseResult
from oci_pypi_sync.engine.retry import RetryPolicy, with_retries
from oci_pypi_sync.engine.writer import Writer
from oci_pypi_sync.format import OCI_MANIFEST, canonical_json, empty_config, sha256_digest
from oci_pypi_sync.ops.catalog import (
    CATALOG_ARTIFACT,
    CATALOG_LAYER,
    CATALOG_REPOSITORY,
    LATEST_TAG,
    PART_SCHEMA,
    Catalog,
    CatalogChange,
    CatalogNamesReader,
    CatalogRelease,
    ProjectStatus,
    read_catalog,
    read_catalog_entry,
    read_catalog_since,
    update_catalog,
)
from oci_pypi_sync.ops.catalog_parts import (
    BUCKETS,
    CATALOG_V2_ARTIFACT,
    DELTA_LAYER,
    PART_LAYER,
    CatalogIndex,
    Layer,
    Span,
    Unit,
    UnitWrite,
    bucket_of,
    changed_since,
    merge_index,
    units_for,
)
from oci_pypi_sync.state.journal import Journal
from oci_pypi_sync.stores.layout import LayoutStore
from oci_pypi_sync.stores.targets import open_store, parse_target


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _releases(project: str, *versions: str) -> dict[str, dict[str, CatalogRelease]]:
    return {project: {v: CatalogRelease(v, v, _digest(project + v)) for v in versions}}


def _change(project: str, *versions: str) -> CatalogChange:
    return CatalogChange(_releases(project, *versions))


def _many(count: int, prefix: str = "project") -> CatalogChange:
    releases: dict[str, dict[str, CatalogRelease]] = {}
    for i in range(count):
        releases.update(_releases(f"{prefix}-{i}", "1.0", "2.0"))
    return CatalogChange(releases)


async def _index(store: LayoutStore) -> CatalogIndex:
    manifest = await store.get_manifest(CATALOG_REPOSITORY, LATEST_TAG)
    assert manifest is not None
    return CatalogIndex.parse(manifest.body)


class _CountingLayout(LayoutStore):
    """A layout that remembers which blobs were opened and how many bytes were written."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.opened: list[str] = []
        self.written = 0

    async def open_blob(self, repo: str, digest: str) -> AsyncIterator[bytes]:
        self.opened.append(digest)
        async for chunk in super().open_blob(repo, digest):
            yield chunk

    async def put_blob_bytes(self, repo: str, digest: str, data: bytes) -> bool:
        self.written += len(data)
        return await super().put_blob_bytes(repo, digest, data)


# --- content -------------------------------------------------------------------------------


def test_from_releases_keeps_only_tagged_releases() -> None:
    catalog = Catalog.from_releases(
        [
            ReleaseResult("a", "1.0", "1.0", "sha256:" + "1" * 64, "pushed"),
            ReleaseResult("a", "2.0", "2.0", "sha256:" + "2" * 64, "unchanged"),
            ReleaseResult("a", "3.0", "3.0", None, "failed", "boom"),
        ]
    )
    assert [r.version for r in catalog.releases("a")] == ["1.0", "2.0"]


def test_a_part_and_a_delta_round_trip() -> None:
    part = Catalog(
        {**_releases("a", "10.0", "9.0", "1.0rc1"), **_releases("b", "0.1")},
        {"b": ProjectStatus("archived", "done")},
    )
    again = Catalog.from_json(part.to_json(PART_SCHEMA), PART_SCHEMA)
    assert again == part
    assert [r.version for r in again.releases("a")] == ["1.0rc1", "9.0", "10.0"]
    assert json.loads(part.to_json(PART_SCHEMA))["schema"] == PART_SCHEMA
    with pytest.raises(ValueError, match="schema 2"):
        Catalog.from_json(b'{"schema": 1}', PART_SCHEMA)

    delta = CatalogChange(
        _releases("c", "1.0"),
        {"b": ProjectStatus("active")},
        {"a": frozenset({"9.0"})},
    )
    assert CatalogChange.from_json(delta.to_json()) == delta
    assert part.applied(delta) == Catalog(
        {
            "a": {t: r for t, r in part.projects["a"].items() if t != "9.0"},
            "b": part.projects["b"],
            **_releases("c", "1.0"),
        }
    )


def test_a_project_name_falls_in_one_bucket_by_its_sha256() -> None:
    assert bucket_of("six") == int(hashlib.sha256(b"six").hexdigest()[:4], 16)
    assert all(0 <= bucket_of(f"p{i}") < BUCKETS for i in range(100))
    assert str(Span(0, 0x7FFF)) == "0000-7fff"
    assert Span.parse("0000-7fff") == Span(0, 0x7FFF)
    assert Span(0, BUCKETS - 1).halves() == (Span(0, 0x7FFF), Span(0x8000, 0xFFFF))
    for bad in ("7fff-0000", "0-1", "zzzz-ffff", None):
        with pytest.raises(ValueError, match="span"):
            Span.parse(bad)


def test_a_manifest_with_overlapping_parts_is_refused() -> None:
    parts = [Layer(Span(0, 10), _digest("x"), 1), Layer(Span(5, 20), _digest("y"), 1)]
    body = CatalogIndex(tuple(parts)).manifest()
    with pytest.raises(ValueError, match="overlapping"):
        CatalogIndex.parse(body)
    good = CatalogIndex.of([Layer(Span(11, 20), _digest("y"), 1), parts[0]])
    assert CatalogIndex.parse(good.manifest()) == good
    assert json.loads(good.manifest())["artifactType"] == CATALOG_V2_ARTIFACT


def test_a_writer_whose_parts_another_replaced_adds_a_delta_the_next_folds_in() -> None:
    old = Layer(Span(0, BUCKETS - 1), _digest("old"), 1)
    base = CatalogIndex((old,))
    [unit] = units_for(base, [bucket_of("a")])
    assert unit == Unit(Span(0, BUCKETS - 1), (old,))
    theirs = UnitWrite(unit, (Layer(unit.span, _digest("theirs"), 1),), None)
    ours = UnitWrite(
        unit,
        (Layer(unit.span, _digest("ours"), 1),),
        Layer(unit.span, _digest("ours-delta"), 1, delta=True),
    )
    after_theirs = merge_index(base, [theirs])
    assert after_theirs is not None
    after_ours = merge_index(after_theirs, [ours])
    assert after_ours is not None
    assert [layer.digest for layer in after_ours.layers] == [
        _digest("theirs"),
        _digest("ours-delta"),
    ]
    assert merge_index(after_ours, [ours]) is None  # ours is there: nothing to write
    # The next writer of that span reads the part and the delta, and replaces both.
    [next_unit] = units_for(after_ours, [bucket_of("b")])
    assert set(next_unit.base) == set(after_ours.layers)
    folded = UnitWrite(next_unit, (Layer(unit.span, _digest("folded"), 1),), None)
    merged = merge_index(after_ours, [folded])
    assert merged is not None
    assert [layer.digest for layer in merged.layers] == [_digest("folded")]


# --- a layout -------------------------------------------------------------------------------


async def test_updates_are_read_back_whole_and_one_project_at_a_time(tmp_path: Path) -> None:
    store = LayoutStore(tmp_path / "m")
    assert await read_catalog(store) is None
    assert await read_catalog_entry(store, "a") is None
    await update_catalog(Writer(store), _change("a", "1.0"))
    await update_catalog(Writer(store), _change("b", "2.0"))
    await update_catalog(
        Writer(store), CatalogChange(_releases("a", "1.1"), {"b": ProjectStatus("deprecated")})
    )
    catalog = await read_catalog(store)
    assert catalog is not None
    assert sorted(catalog.projects) == ["a", "b"]
    assert [r.version for r in catalog.releases("a")] == ["1.0", "1.1"]
    assert catalog.statuses == {"b": ProjectStatus("deprecated")}
    entry = await read_catalog_entry(store, "b")
    assert entry is not None
    assert [r.version for r in entry.releases] == ["2.0"]
    assert entry.status == ProjectStatus("deprecated")
    assert await read_catalog_entry(store, "c") is None
    assert await store.list_tags(CATALOG_REPOSITORY) == [LATEST_TAG]
    manifest = await store.get_manifest(CATALOG_REPOSITORY, LATEST_TAG)
    assert manifest is not None
    document = json.loads(manifest.body)
    assert document["artifactType"] == CATALOG_V2_ARTIFACT
    assert [layer["mediaType"] for layer in document["layers"]] == [PART_LAYER]


async def test_a_large_catalog_is_cut_in_parts_and_a_change_rewrites_one(tmp_path: Path) -> None:
    store = _CountingLayout(tmp_path / "m")
    await update_catalog(Writer(store), _many(6000))
    index = await _index(store)
    assert len(index.layers) >= 4
    assert not any(layer.delta for layer in index.layers)
    total = sum(layer.size for layer in index.layers)

    store.opened.clear()
    store.written = 0
    await update_catalog(Writer(store), _change("project-17", "3.0"))
    after = await _index(store)
    replaced = set(index.layers) - set(after.layers)
    added = set(after.layers) - set(index.layers)
    assert len(replaced) == 1
    assert len(added) == 1
    [part] = added
    assert part.span.contains(bucket_of("project-17"))
    assert store.opened == [layer.digest for layer in replaced]  # only that part was read
    assert store.written < total / 2  # the part, its delta and the manifest, not the catalog

    store.opened.clear()
    entry = await read_catalog_entry(store, "project-17")
    assert entry is not None
    assert [r.version for r in entry.releases] == ["1.0", "2.0", "3.0"]
    assert store.opened == [part.digest]  # one project costs one part


async def test_a_layout_keeps_no_superseded_part(tmp_path: Path) -> None:
    store = LayoutStore(tmp_path / "m")
    for i in range(4):
        await update_catalog(Writer(store), _change(f"p{i}", "1.0"))
    await update_catalog(Writer(store), _many(3000))
    await update_catalog(Writer(store), CatalogChange(removed={"p0": frozenset({"1.0"})}))
    manifest = await store.get_manifest(CATALOG_REPOSITORY, LATEST_TAG)
    assert manifest is not None
    index = CatalogIndex.parse(manifest.body)
    referenced = {layer.digest for layer in index.layers}
    referenced |= {manifest.digest, empty_config().descriptor.digest}
    stored = {"sha256:" + path.name for path in (tmp_path / "m" / "blobs" / "sha256").iterdir()}
    assert stored == referenced
    catalog = await read_catalog(store)
    assert catalog is not None
    assert "p0" not in catalog.projects
    assert len(catalog.projects) == 3003


async def test_tags_the_target_no_longer_holds_are_removed_once_confirmed(tmp_path: Path) -> None:
    store = LayoutStore(tmp_path / "m")
    await update_catalog(Writer(store), _change("a", "1.0", "2.0", "3.0"))
    # A writer listed a's tags and saw 1.0 only; the target (which holds no tag of
    # a at all here) confirms 2.0 and 3.0 are gone, and 4.0 is new.
    await update_catalog(
        Writer(store), CatalogChange(_releases("a", "4.0"), holds={"a": frozenset({"1.0"})})
    )
    catalog = await read_catalog(store)
    assert catalog is not None
    assert sorted(catalog.projects["a"]) == ["1.0", "4.0"]
    # Removing every tag of a project removes the project.
    await update_catalog(Writer(store), CatalogChange(removed={"a": frozenset({"1.0", "4.0"})}))
    assert await read_catalog(store) == Catalog()


async def test_concurrent_writers_of_a_layout_lose_nothing(tmp_path: Path) -> None:
    store = LayoutStore(tmp_path / "m")
    await update_catalog(Writer(store), _many(10, "base"))
    await asyncio.gather(
        *(
            update_catalog(Writer(LayoutStore(tmp_path / "m")), _change(f"w{k}", "1.0"))
            for k in range(8)
        )
    )
    catalog = await read_catalog(store)
    assert catalog is not None
    assert sorted(catalog.projects) == sorted(
        [f"base-{i}" for i in range(10)] + [f"w{k}" for k in range(8)]
    )


# --- a registry ------------------------------------------------------------------------------


@pytest.mark.registry
async def test_concurrent_writers_of_a_registry_lose_nothing(registry: RegistryServer) -> None:
    target = parse_target(f"{registry.host}/catalog-race")
    store = open_store(target)
    await update_catalog(Writer(store), _many(10, "base"))

    async def one(k: int) -> None:
        writer = Writer(open_store(target))
        # As a sync writes it: Distribution answers a read of a tag that another
        # writer is rewriting with a 500 now and then, and the sync tries again.
        await with_retries(
            RetryPolicy(), "catalog", lambda: update_catalog(writer, _change(f"w{k}", "1.0"))
        )
        await writer.settle()
        await writer.store.aclose()

    await asyncio.gather(*(one(k) for k in range(6)))
    catalog = await read_catalog(store)
    assert catalog is not None
    assert sorted(catalog.projects) == sorted(
        [f"base-{i}" for i in range(10)] + [f"w{k}" for k in range(6)]
    )
    # One more write folds whatever deltas the race left into parts.
    await update_catalog(Writer(store), _change("base-0", "9.0"))
    manifest = await store.get_manifest(CATALOG_REPOSITORY, LATEST_TAG)
    assert manifest is not None
    assert not any(layer.delta for layer in CatalogIndex.parse(manifest.body).layers)
    again = await read_catalog(store)
    assert again is not None
    assert sorted(again.projects["base-0"]) == ["1.0", "2.0", "9.0"]
    assert set(again.projects) == set(catalog.projects)
    await store.aclose()


# --- the first version ------------------------------------------------------------------------


async def _write_first_version(writer: Writer, tag: str, catalog: Catalog) -> str:
    """A catalog of the first version, as the tool wrote it before parts."""
    blob = catalog.to_json()
    config = empty_config()
    await writer.blob_bytes(CATALOG_REPOSITORY, config.descriptor.digest, config.data)
    await writer.blob_bytes(CATALOG_REPOSITORY, sha256_digest(blob), blob)
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": CATALOG_ARTIFACT,
            "config": config.descriptor.to_json(),
            "layers": [
                {
                    "mediaType": CATALOG_LAYER,
                    "digest": sha256_digest(blob),
                    "size": len(blob),
                    "annotations": {"org.opencontainers.image.title": "catalog.json"},
                }
            ],
            "annotations": {"dev.oci-pypi.format": "2"},
        }
    )
    return await writer.put_tag(CATALOG_REPOSITORY, tag, OCI_MANIFEST, manifest)


async def test_a_first_version_catalog_is_read_then_migrated_in_a_layout(tmp_path: Path) -> None:
    store = LayoutStore(tmp_path / "m")
    writer = Writer(store)
    old = Catalog(
        {**_releases("a", "1.0"), **_releases("b", "1.0")}, {"b": ProjectStatus("archived")}
    )
    shard = Catalog(_releases("c", "1.0"))
    await _write_first_version(writer, "fragment-shard-0-of-2", old)
    await _write_first_version(writer, "fragment-shard-1-of-2", shard)
    await _write_first_version(writer, LATEST_TAG, old)  # latest lagged the second fragment
    assert await read_catalog(store) == old
    assert await read_catalog(store, exact=True) == old.merged(shard)
    entry = await read_catalog_entry(store, "b")
    assert entry is not None
    assert entry.status == ProjectStatus("archived")

    await update_catalog(Writer(store), _change("d", "1.0"))
    assert await store.list_tags(CATALOG_REPOSITORY) == [LATEST_TAG]
    manifest = await store.get_manifest(CATALOG_REPOSITORY, LATEST_TAG)
    assert manifest is not None
    assert json.loads(manifest.body)["artifactType"] == CATALOG_V2_ARTIFACT
    catalog = await read_catalog(store)
    assert catalog is not None
    assert sorted(catalog.projects) == ["a", "b", "c", "d"]
    assert catalog.statuses == {"b": ProjectStatus("archived")}
    # nothing of the first version is left behind
    referenced = {layer.digest for layer in CatalogIndex.parse(manifest.body).layers}
    referenced |= {manifest.digest, empty_config().descriptor.digest}
    stored = {"sha256:" + p.name for p in (tmp_path / "m" / "blobs" / "sha256").iterdir()}
    assert stored == referenced


@pytest.mark.registry
async def test_a_first_version_catalog_is_migrated_in_a_registry(registry: RegistryServer) -> None:
    target = parse_target(f"{registry.host}/catalog-v1")
    store = open_store(target)
    writer = Writer(store)
    old = Catalog(_releases("a", "1.0"))
    await _write_first_version(writer, "fragment-all", old)
    await _write_first_version(writer, LATEST_TAG, old)
    await update_catalog(Writer(store), _change("b", "1.0"))
    catalog = await read_catalog(store, exact=True)
    assert catalog is not None
    assert sorted(catalog.projects) == ["a", "b"]
    # A registry's fragment tag cannot be deleted: it names nothing now.
    retired = await store.get_manifest(CATALOG_REPOSITORY, "fragment-all")
    assert retired is not None
    assert json.loads(retired.body)["artifactType"] != CATALOG_ARTIFACT
    await store.aclose()


# --- readers -----------------------------------------------------------------------------------


async def test_the_names_reader_reads_again_only_the_parts_that_changed(tmp_path: Path) -> None:
    store = _CountingLayout(tmp_path / "m")
    await update_catalog(Writer(store), _many(6000))
    await update_catalog(
        Writer(store), CatalogChange(statuses={"project-3": ProjectStatus("quarantined")})
    )
    reader = CatalogNamesReader()
    manifest = await store.get_manifest(CATALOG_REPOSITORY, LATEST_TAG)
    assert manifest is not None
    store.opened.clear()
    names = await reader.read(store, manifest)
    assert len(names.names) == 6000
    assert names.statuses == {"project-3": ProjectStatus("quarantined")}
    parts = len(CatalogIndex.parse(manifest.body).layers)
    assert len(store.opened) == parts

    await update_catalog(Writer(store), _change("new-one", "1.0"))
    manifest = await store.get_manifest(CATALOG_REPOSITORY, LATEST_TAG)
    assert manifest is not None
    store.opened.clear()
    names = await reader.read(store, manifest)
    assert "new-one" in names.names
    assert len(names.names) == 6001
    assert len(store.opened) == 1
    assert DELTA_LAYER not in manifest.body.decode()


# --- what changed since a catalog seen before ----------------------------------------------


def test_what_changed_since_is_the_layers_that_differ_with_their_neighbours() -> None:
    low, high = Span(0, 0x7FFF), Span(0x8000, 0xFFFF)
    a, b = Layer(low, _digest("a"), 1), Layer(high, _digest("b"), 1)
    b2 = Layer(high, _digest("b2"), 1)
    delta = Layer(high, _digest("d"), 1, delta=True)
    seen = CatalogIndex((a, b))
    assert changed_since(seen, seen) == ([], [])
    layers, spans = changed_since(seen, CatalogIndex((a, b2)))
    assert layers == [b2]
    assert set(spans) == {high}
    # a delta beside an unchanged part: both read, the part for the delta's sake
    layers, spans = changed_since(seen, CatalogIndex((a, b, delta)))
    assert layers == [b, delta]
    assert set(spans) == {high}
    # a part gone without a successor: its span differs, nothing is there to read
    layers, spans = changed_since(seen, CatalogIndex((a,)))
    assert layers == []
    assert spans == [high]


async def test_a_catalog_read_since_another_costs_the_parts_that_differ(tmp_path: Path) -> None:
    store = _CountingLayout(tmp_path / "m")
    await update_catalog(Writer(store), _many(6000))
    before = await store.get_manifest(CATALOG_REPOSITORY, LATEST_TAG)
    assert before is not None
    await update_catalog(Writer(store), _change("project-17", "3.0"))
    after = await store.get_manifest(CATALOG_REPOSITORY, LATEST_TAG)
    assert after is not None
    store.opened.clear()
    diff = await read_catalog_since(store, before.body, after)
    assert len(store.opened) == 1
    assert diff.covers("project-17")
    assert sorted(diff.catalog.projects["project-17"]) == ["1.0", "2.0", "3.0"]
    outside = [f"project-{i}" for i in range(6000) if not diff.covers(f"project-{i}")]
    assert len(outside) > 3000
    assert not set(outside) & set(diff.catalog.projects)
    # nothing seen before: the whole catalog
    whole = await read_catalog_since(store, None, after)
    assert len(whole.catalog.projects) == 6000
    assert all(whole.covers(f"project-{i}") for i in range(0, 6000, 97))


async def test_a_state_forgets_only_what_another_writer_changed_reading_only_that(
    tmp_path: Path,
) -> None:
    store = _CountingLayout(tmp_path / "m")
    target = str(tmp_path / "m")
    with Journal.open(tmp_path / "state.sqlite", target=target) as journal:
        await bind_state(Writer(store), journal, RetryPolicy())
        change = _many(6000)
        await update_catalog(Writer(store), change)
        for name in ("project-17", "project-4000"):
            for tag, release in change.releases[name].items():
                journal.record_release(name, release.version, tag, release.digest)
        written = await store.get_manifest(CATALOG_REPOSITORY, LATEST_TAG)
        assert written is not None
        journal.record_catalog(written.digest, written.body)
        # Another writer moves project-17's 1.0 to another index.
        moved = CatalogRelease("1.0", "1.0", _digest("elsewhere"))
        await update_catalog(Writer(store), CatalogChange({"project-17": {"1.0": moved}}))
        store.opened.clear()
        rederived = await bind_state(Writer(store), journal, RetryPolicy())
        assert rederived == frozenset({"project-17"})
        assert len(store.opened) == 1  # one part, not the catalog
        assert journal.all_release_digests().keys() == {"project-4000"}
