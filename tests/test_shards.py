"""Shards: N concurrent ``--shard K/N`` syncs write exactly what one unsharded sync writes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import cli_env, cli_process, finish, repositories, run_cli, tag_digests
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index
from registry_server import RegistryServer

from oci_pypi_sync.ops.catalog import CATALOG_REPOSITORY, read_catalog
from oci_pypi_sync.plan.shard import Shard, parse_shard, shard_of
from oci_pypi_sync.stores.targets import open_store, parse_target

PROJECTS = [
    "aster",
    "bluebell",
    "clover",
    "daisy",
    "fern",
    "heather",
    "iris",
    "lily",
    "moss",
    "poppy",
    "sage",
    "thistle",
]
# shard_of(name, 3) for PROJECTS, computed once: every shard gets some.
SHARDS_OF_3 = [0, 1, 0, 0, 1, 2, 1, 1, 1, 1, 2, 2]


# --- pure ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "of3", "of4", "of16"),
    [
        ("numpy", 2, 2, 10),
        ("Django", 2, 2, 2),
        ("zope.interface", 1, 0, 4),
        ("typing_extensions", 0, 0, 4),
        ("six", 2, 2, 6),
        ("requests", 2, 2, 14),
    ],
)
def test_shard_of_is_stable(name: str, of3: int, of4: int, of16: int) -> None:
    assert (shard_of(name, 3), shard_of(name, 4), shard_of(name, 16)) == (of3, of4, of16)


def test_shard_of_uses_the_normalized_name() -> None:
    for spelling in ["Zope.Interface", "zope_interface", "ZOPE-interface", "zope--interface"]:
        assert shard_of(spelling, 4) == shard_of("zope.interface", 4) == 0
    assert Shard(0, 4).owns("Typing_Extensions")
    assert not Shard(1, 4).owns("typing-extensions")


def test_fixture_projects_fall_in_every_shard() -> None:
    assert [shard_of(p, 3) for p in PROJECTS] == SHARDS_OF_3
    assert set(SHARDS_OF_3) == {0, 1, 2}


def test_shard_of_is_uniform_enough() -> None:
    counts = Counter(shard_of(f"project-{i}", 4) for i in range(1000))
    assert set(counts) == {0, 1, 2, 3}
    assert all(200 <= n <= 300 for n in counts.values()), counts
    assert shard_of("anything", 1) == 0


def test_parse_shard() -> None:
    assert parse_shard("0/3") == Shard(0, 3)
    assert parse_shard(" 2/3 ") == Shard(2, 3)
    assert str(parse_shard("1/4")) == "1/4"


# --- the CLI against a registry ----------------------------------------------------------


@pytest.fixture(scope="module")
def index() -> Iterator[FixtureIndex]:
    fixture = FixtureIndex()
    for i, project in enumerate(PROJECTS):
        fixture.add(
            project,
            make_wheel(project, "1.0", payload=64 << 10),
            make_sdist(project, "1.0", size=(100 + 20 * i) << 10),
        )
        if i % 3 == 0:
            fixture.add(project, make_wheel(project, "2.0", payload=32 << 10))
    with serve_index(fixture) as served:
        yield served


def sync_args(registry: RegistryServer, index: FixtureIndex, prefix: str, state: Path) -> list[str]:
    return [
        "sync",
        *PROJECTS,
        "--to",
        f"{registry.host}/{prefix}",
        "--index-url",
        index.url,
        "--state",
        str(state),
        "--json",
    ]


def file_keys(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [
        (f["project"], f["version"], f["filename"], f["sha256"])
        for f in report["files"]
        if f["action"] == "pushed"
    ]


@pytest.mark.registry
async def test_three_concurrent_shards_equal_one_unsharded_run(
    registry: RegistryServer, index: FixtureIndex, tmp_path: Path
) -> None:
    env = cli_env(tmp_path / "home")
    whole = run_cli(sync_args(registry, index, "whole", tmp_path / "whole.sqlite"), env)
    assert whole.returncode == 0, whole.describe()
    whole_report = whole.json()
    assert len(file_keys(whole_report)) == len(index.files_by_name()) == 28

    # The three shards run at once, each with its own state file, into one prefix.
    index.throttle = 2_000_000.0  # long enough that the three overlap
    reports: list[dict[str, Any]] = []
    try:
        with (
            cli_process(
                [*sync_args(registry, index, "sharded", tmp_path / "s0.sqlite"), "--shard", "0/3"],
                env,
                stdout=tmp_path / "s0.out",
                stderr=tmp_path / "s0.err",
            ) as p0,
            cli_process(
                [*sync_args(registry, index, "sharded", tmp_path / "s1.sqlite"), "--shard", "1/3"],
                env,
                stdout=tmp_path / "s1.out",
                stderr=tmp_path / "s1.err",
            ) as p1,
            cli_process(
                [*sync_args(registry, index, "sharded", tmp_path / "s2.sqlite"), "--shard", "2/3"],
                env,
                stdout=tmp_path / "s2.out",
                stderr=tmp_path / "s2.err",
            ) as p2,
        ):
            assert [p.poll() for p in (p0, p1, p2)] == [None, None, None]
            for k, process in enumerate((p0, p1, p2)):
                result = finish(process, tmp_path / f"s{k}.out", tmp_path / f"s{k}.err")
                assert result.returncode == 0, result.describe()
                reports.append(result.json())
    finally:
        index.throttle = None

    # Each project was handled by exactly the shard shard_of names, and by no other.
    for k, report in enumerate(reports):
        owned = {p for p, s in zip(PROJECTS, SHARDS_OF_3, strict=True) if s == k}
        assert {f["project"] for f in report["files"]} == owned
        assert {r["project"] for r in report["releases"]} == owned
        assert report["totals"]["projects"] == len(owned)
        assert report["ok"] is True
    shard_files = [key for report in reports for key in file_keys(report)]
    assert len(shard_files) == len(set(shard_files))  # disjoint
    assert sorted(shard_files) == sorted(file_keys(whole_report))  # union is the whole
    shard_releases = {
        (r["project"], r["tag"]): r["digest"] for report in reports for r in report["releases"]
    }
    assert sum(len(report["releases"]) for report in reports) == len(shard_releases)
    assert shard_releases == {
        (r["project"], r["tag"]): r["digest"] for r in whole_report["releases"]
    }

    # The registry: same repositories, same tags, same digests, tag by tag.
    project_repositories = {
        prefix: [r for r in repositories(registry.url, prefix) if r != CATALOG_REPOSITORY]
        for prefix in ("sharded", "whole")
    }
    assert project_repositories["sharded"] == project_repositories["whole"] == PROJECTS
    sharded = tag_digests(registry.url, "sharded")
    unsharded = tag_digests(registry.url, "whole")
    assert len(unsharded) == 16
    for key, digest in unsharded.items():
        assert sharded.get(key) == digest, key
    assert sharded == unsharded == shard_releases

    # The catalog: the shards wrote concurrently, and none of them lost another's projects.
    catalogs = {}
    for prefix in ("sharded", "whole"):
        store = open_store(parse_target(f"{registry.host}/{prefix}"))
        try:
            catalogs[prefix] = (
                await read_catalog(store),
                await read_catalog(store, exact=True),
            )
        finally:
            await store.aclose()
    latest, exact = catalogs["sharded"]
    assert latest is not None
    assert exact is not None
    assert sorted(latest.projects) == sorted(exact.projects) == PROJECTS
    whole_latest = catalogs["whole"][0]
    assert whole_latest is not None
    assert latest.to_json() == whole_latest.to_json()
    assert {
        (project, release.tag): release.digest
        for project in latest.projects
        for release in latest.releases(project)
    } == unsharded


@pytest.mark.registry
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("3/3", "'3/3': K must be between 0 and N-1"),
        ("x", "'x' is not K/N"),
        ("1/0", "'1/0'"),
        ("-1/3", "'-1/3' is not K/N"),
    ],
)
def test_a_bad_shard_is_a_usage_error_naming_it(
    value: str, message: str, registry: RegistryServer, index: FixtureIndex, tmp_path: Path
) -> None:
    requests = len(index.requests)
    state = tmp_path / "state.sqlite"
    result = run_cli(
        [*sync_args(registry, index, "bad-shard", state), "--shard", value],
        cli_env(tmp_path / "home"),
    )
    assert result.returncode == 2, result.describe()
    assert message in result.stderr
    assert result.stdout == ""
    assert not state.exists()
    assert len(index.requests) == requests  # refused before any request
    assert repositories(registry.url, "bad-shard") == []
