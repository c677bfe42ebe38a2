"""Incremental syncs: the journal's shortcuts, updates upstream, pruning, quarantine, mounts."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index
from packaging.requirements import Requirement
from registry_server import RegistryServer

from oci_pypi_sync import format as fmt
from oci_pypi_sync.engine.results import SyncReport
from oci_pypi_sync.engine.retry import RetryPolicy
from oci_pypi_sync.engine.run import SyncOptions, sync
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.ops.catalog import CATALOG_REPOSITORY
from oci_pypi_sync.state.journal import Journal
from oci_pypi_sync.stores.layout import LayoutStore
from oci_pypi_sync.stores.protocols import Store, StoredManifest
from oci_pypi_sync.stores.targets import open_store, parse_target

QUICK = RetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.05)


class CountingStore:
    """A store that counts every call by name and passes it on."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()  # calls on project repositories
        self.catalog_calls: Counter[str] = Counter()  # calls on the catalog repository

    def _count(self, name: str, repo: str) -> None:
        (self.catalog_calls if repo == CATALOG_REPOSITORY else self.calls)[name] += 1

    @property
    def display_name(self) -> str:
        return self.inner.display_name

    async def has_blob(self, repo: str, digest: str) -> bool:
        self._count("has_blob", repo)
        return await self.inner.has_blob(repo, digest)

    async def put_blob(
        self,
        repo: str,
        digest: str,
        size: int | None,
        chunks: AsyncIterable[bytes],
        *,
        reopen: Callable[[], AsyncIterable[bytes]] | None = None,
    ) -> bool:
        self._count("put_blob", repo)
        return await self.inner.put_blob(repo, digest, size, chunks, reopen=reopen)

    async def put_blob_bytes(self, repo: str, digest: str, data: bytes) -> bool:
        self._count("put_blob_bytes", repo)
        return await self.inner.put_blob_bytes(repo, digest, data)

    def open_blob(self, repo: str, digest: str) -> AsyncIterator[bytes]:
        self._count("open_blob", repo)
        return self.inner.open_blob(repo, digest)

    async def get_manifest(self, repo: str, reference: str) -> StoredManifest | None:
        self._count("get_manifest", repo)
        return await self.inner.get_manifest(repo, reference)

    async def has_manifest(self, repo: str, digest: str) -> bool:
        self._count("has_manifest", repo)
        return await self.inner.has_manifest(repo, digest)

    async def put_manifest(self, repo: str, reference: str, media_type: str, body: bytes) -> str:
        self._count("put_manifest", repo)
        return await self.inner.put_manifest(repo, reference, media_type, body)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def list_tags(self, repo: str) -> list[str]:
        self._count("list_tags", repo)
        return await self.inner.list_tags(repo)

    async def list_repositories(self) -> list[str]:
        self.calls["list_repositories"] += 1
        return await self.inner.list_repositories()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def index() -> Iterator[FixtureIndex]:
    fixture = FixtureIndex()
    fixture.add("alpha", make_wheel("alpha", "1.0"), make_sdist("alpha", "1.0"))
    fixture.add("alpha", make_wheel("alpha", "2.0"), make_sdist("alpha", "2.0"))
    fixture.add("beta", make_wheel("beta", "0.1"))
    with serve_index(fixture):
        yield fixture


async def _run(
    index: FixtureIndex,
    store: Store,
    *reqs: str,
    journal: Journal | None = None,
    **options: Any,
) -> SyncReport:
    async with IndexClient(index.url) as client:
        return await sync(
            [Requirement(r) for r in reqs],
            client,
            store,
            SyncOptions(retry=QUICK, **options),
            journal=journal,
        )


def _downloads(index: FixtureIndex) -> list[str]:
    return [
        path.rsplit("/", 1)[-1]
        for method, path in index.requests
        if method == "GET" and "/files/" in path and not path.endswith(".metadata")
    ]


async def test_unchanged_project_costs_one_page_fetch_and_no_target_access(
    index: FixtureIndex, tmp_path: Path
) -> None:
    layout = LayoutStore(tmp_path / "m")
    with Journal.open(tmp_path / "state.sqlite", target=f"oci:{tmp_path / 'm'}") as journal:
        first = await _run(index, layout, "alpha", "beta", journal=journal)
        assert first.count("pushed") == 5
        index.requests.clear()
        counting = CountingStore(layout)
        second = await _run(index, counting, "alpha", "beta", journal=journal)
    assert second.projects_unchanged == 2
    assert second.count("unchanged") == 5
    assert counting.calls == Counter()  # not one read or write on a project's repository
    # Once per run, whatever the number of projects: the target's identity and the
    # catalog's digest, which say whether the state file still describes this target.
    assert counting.catalog_calls == Counter({"get_manifest": 2})
    assert sorted(path for _, path in index.requests) == ["/simple/alpha/", "/simple/beta/"]


async def test_an_index_with_etags_answers_an_unchanged_project_with_304(
    index: FixtureIndex, tmp_path: Path
) -> None:
    index.etags = True
    layout = LayoutStore(tmp_path / "m")
    with Journal.open(tmp_path / "state.sqlite", target=f"oci:{tmp_path / 'm'}") as journal:
        first = await _run(index, layout, "alpha", journal=journal)
        index.requests.clear()
        index.statuses.clear()
        counting = CountingStore(layout)
        second = await _run(index, counting, "alpha", journal=journal)
        changed_selection = await _run(index, counting, "alpha==1.0", journal=journal)
    assert index.statuses == [304, 200]  # the new selection does not trust the old validator
    # only for alpha==1.0: its tag list, its existing version's index, and a check
    # that each file it lists is there (manifest and bytes)
    assert counting.calls == Counter(
        {"list_tags": 1, "get_manifest": 1, "has_manifest": 2, "has_blob": 2}
    )
    assert sorted((f.filename, f.action) for f in second.files) == sorted(
        (f.filename, "unchanged") for f in first.files
    )
    assert {r.tag: r.digest for r in second.releases} == {r.tag: r.digest for r in first.releases}
    assert [r.action for r in changed_selection.releases] == ["unchanged"]


async def test_without_a_journal_the_target_is_read_not_written(
    index: FixtureIndex, tmp_path: Path
) -> None:
    layout = LayoutStore(tmp_path / "m")
    await _run(index, layout, "alpha", "beta")
    index.requests.clear()
    counting = CountingStore(layout)
    with Journal.open(tmp_path / "fresh.sqlite", target=f"oci:{tmp_path / 'm'}") as journal:
        report = await _run(index, counting, "alpha", "beta", journal=journal)
        assert journal.summary().files_done == 5
    assert report.count("present") == 5
    assert all(r.action == "unchanged" for r in report.releases)
    # One tag list per project, one read of each version's index, and per file a
    # check that its manifest and bytes are there; no downloads, no writes.
    assert counting.calls == Counter(
        {"list_tags": 2, "get_manifest": 3, "has_manifest": 5, "has_blob": 5}
    )
    assert _downloads(index) == []


async def test_upstream_changes_update_only_what_changed(
    index: FixtureIndex, tmp_path: Path
) -> None:
    layout = LayoutStore(tmp_path / "m")
    with Journal.open(tmp_path / "state.sqlite", target=f"oci:{tmp_path / 'm'}") as journal:
        first = await _run(index, layout, "alpha", journal=journal)
        digests = {r.tag: r.digest for r in first.releases}
        files = index.files_by_name()
        files["alpha-1.0.tar.gz"].yanked = "broken"  # a new yank
        new_wheel = make_wheel("alpha", "2.0", requires=("six",), tag="cp312-cp312-win_amd64")
        index.add("alpha", new_wheel)  # a new file in an existing release
        index.add("alpha", make_sdist("alpha", "3.0"))  # a new release
        index.requests.clear()
        second = await _run(index, layout, "alpha", journal=journal)
    by_tag = {r.tag: r for r in second.releases}
    assert set(by_tag) == {"1.0", "2.0", "3.0"}
    assert all(r.action == "pushed" for r in by_tag.values())
    assert by_tag["1.0"].digest != digests["1.0"]
    assert by_tag["2.0"].digest != digests["2.0"]
    assert sorted(_downloads(index)) == ["alpha-2.0-cp312-cp312-win_amd64.whl", "alpha-3.0.tar.gz"]
    pushed = sorted(f.filename for f in second.files if f.action == "pushed")
    assert pushed == ["alpha-2.0-cp312-cp312-win_amd64.whl", "alpha-3.0.tar.gz"]
    manifest = await layout.get_manifest("alpha", "1.0")
    assert manifest is not None
    _, entries = fmt.parse_release_index(manifest.body)
    yanked = {fmt.entry_filename(e): e.annotations.get(fmt.A_YANKED) for e in entries}
    assert yanked == {"alpha-1.0-py3-none-any.whl": None, "alpha-1.0.tar.gz": "true"}


async def test_files_removed_upstream_are_reported_and_pruned_on_request(
    index: FixtureIndex, tmp_path: Path
) -> None:
    layout = LayoutStore(tmp_path / "m")
    await _run(index, layout, "alpha==1.0")
    index.projects["alpha"] = [
        f for f in index.projects["alpha"] if f.filename != "alpha-1.0.tar.gz"
    ]
    kept = await _run(index, layout, "alpha==1.0")
    (release,) = kept.releases
    assert release.removed_upstream == ("alpha-1.0.tar.gz",)
    assert not release.pruned
    assert release.action == "unchanged"
    pruned = await _run(index, layout, "alpha==1.0", prune=True)
    (release,) = pruned.releases
    assert release.pruned
    assert release.action == "pushed"
    manifest = await layout.get_manifest("alpha", "1.0")
    assert manifest is not None
    _, entries = fmt.parse_release_index(manifest.body)
    assert [fmt.entry_filename(e) for e in entries] == ["alpha-1.0-py3-none-any.whl"]


async def test_a_project_that_keeps_failing_is_quarantined_and_never_blocks_others(
    index: FixtureIndex, tmp_path: Path
) -> None:
    liar = make_sdist("gamma", "1.0")
    liar.advertised_sha256 = "0" * 64
    index.add("gamma", liar)
    layout = LayoutStore(tmp_path / "m")
    with Journal.open(tmp_path / "state.sqlite", target=f"oci:{tmp_path / 'm'}") as journal:
        for _ in range(3):
            report = await _run(index, layout, "gamma", "beta", journal=journal)
            assert report.failed
            assert [f.filename for f in report.files if f.action == "failed"] == [
                "gamma-1.0.tar.gz"
            ]
        index.requests.clear()
        report = await _run(index, layout, "gamma", "beta", journal=journal)
        (error,) = report.project_errors
        assert error.project == "gamma"
        assert error.quarantined
        assert "digest mismatch" in error.error
        assert not any("gamma" in path for _, path in index.requests)  # not even its page
        assert journal.summary().quarantined[0].project == "gamma"
        retried = await _run(index, layout, "gamma", journal=journal, retry_quarantined=True)
        assert [f.action for f in retried.files] == ["failed"]
    assert sorted(t for t in layout.tags() if t[0] != CATALOG_REPOSITORY) == [("beta", "0.1")]


async def test_a_blob_known_in_another_repository_is_mounted_not_downloaded(
    registry: RegistryServer, tmp_path: Path
) -> None:
    shared = make_sdist("one", "1.0", size=200_000)
    twin = make_sdist("two", "1.0", size=10)
    twin.data = shared.data  # the same bytes published under another project
    fixture = FixtureIndex()
    fixture.add("one", shared)
    fixture.add("two", twin)
    target = parse_target(f"{registry.host}/mounts")
    with serve_index(fixture), Journal.open(tmp_path / "s.sqlite", target=target) as journal:
        store = open_store(target)
        try:
            await _run(fixture, store, "one", journal=journal)
            fixture.requests.clear()
            report = await _run(fixture, store, "two", journal=journal)
        finally:
            await store.aclose()
        locations = journal.blob_repositories("sha256:" + shared.sha256, limit=5)
    assert [f.action for f in report.files] == ["present"]
    assert _downloads(fixture) == []
    assert sorted(locations) == ["one", "two"]


def _config_requests(registry: RegistryServer, since: int, repo: str) -> list[str]:
    """The log lines after ``since`` bytes that wrote or mounted the empty config into ``repo``."""
    config = fmt.empty_config().descriptor.digest.split(":")[1]
    with registry.log.open("rb") as log:
        log.seek(since)
        text = log.read().decode(errors="replace")
    return [
        line
        for line in text.splitlines()
        if config in line and f"/v2/{repo}/" in line and ('"POST ' in line or '"PUT ' in line)
    ]


async def test_a_new_release_of_a_known_project_asks_nothing_about_the_config(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """The state file vouches for the config of a repository it wrote a release into;
    a registry that lost it anyway gets it again when the manifest is refused."""
    fixture = FixtureIndex()
    fixture.add("gamma", make_wheel("gamma", "1.0"))
    prefix = f"configs-{uuid.uuid4().hex[:8]}"
    target = parse_target(f"{registry.host}/{prefix}")
    repo = f"{prefix}/gamma"
    config = fmt.empty_config().descriptor.digest
    with serve_index(fixture), Journal.open(tmp_path / "s.sqlite", target=target) as journal:
        store = open_store(target)
        try:
            await _run(fixture, store, "gamma", journal=journal)
            fixture.add("gamma", make_wheel("gamma", "2.0"))
            offset = registry.log.stat().st_size
            second = await _run(fixture, store, "gamma", journal=journal)
            asked = _config_requests(registry, offset, repo)
            # the registry loses the config (deleted behind the state file's back)
            async with httpx.AsyncClient() as http:
                deleted = await http.delete(f"{registry.url}/v2/{repo}/blobs/{config}")
            assert deleted.status_code == 202
            fixture.add("gamma", make_wheel("gamma", "3.0"))
            offset = registry.log.stat().st_size
            third = await _run(fixture, store, "gamma", journal=journal)
            restored = _config_requests(registry, offset, repo)
            tags = await store.list_tags("gamma")
        finally:
            await store.aclose()
    assert Counter(f.action for f in second.files) == {"present": 1, "pushed": 1}
    assert asked == []
    assert Counter(f.action for f in third.files) == {"present": 2, "pushed": 1}
    assert restored  # stored again, then the manifest went through
    assert {"1.0", "2.0", "3.0"} <= set(tags)
    async with httpx.AsyncClient() as http:
        head = await http.head(f"{registry.url}/v2/{repo}/blobs/{config}")
    assert head.status_code == 200
