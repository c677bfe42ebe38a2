"""verify and copy of a whole registry mirror: repositories from its catalog, tag lists a bounded
number at once, and a seeded sample checked deeply."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import cli_env, run_cli
from fault_proxy import Fault, FaultProxy, Rule
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index
from packaging.requirements import Requirement
from registry_server import RegistryServer
from test_copy import tag_digests
from test_serve_integrity import registry_blob

from oci_pypi_sync import format as fmt
from oci_pypi_sync.engine.run import sync
from oci_pypi_sync.format.leases import is_lease_tag
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.ops.catalog import CATALOG_REPOSITORY, IDENTITY_TAG
from oci_pypi_sync.ops.copy import copy
from oci_pypi_sync.ops.verify import sampled, verify
from oci_pypi_sync.ops.walk import Listed, each_tag_list, mirror_repositories
from oci_pypi_sync.stores.layout import LayoutStore
from oci_pypi_sync.stores.registry import RegistryStore

pytestmark = pytest.mark.registry

ALWAYS = 1_000_000
PROJECTS = 8


def refuse_catalog() -> Rule:
    """``/v2/_catalog`` answered as hosted registries that do not list repositories answer it."""
    body = json.dumps(
        {"errors": [{"code": "DENIED", "message": "catalog listing is not enabled"}]}
    ).encode()
    return Rule(Fault.answer(403, body), "GET", r"^/v2/_catalog", times=ALWAYS)


def wide_index(stem: str) -> FixtureIndex:
    """``PROJECTS`` projects of two versions each (their bytes differ from every other test's)."""
    fixture = FixtureIndex()
    for i in range(PROJECTS):
        name = f"{stem}-{i}"
        fixture.add(name, make_wheel(name, "1.0"), make_sdist(name, "1.0", size=600))
        fixture.add(name, make_sdist(name, "2.0", size=700))
    return fixture


@pytest.fixture
def index(request: pytest.FixtureRequest) -> Iterator[FixtureIndex]:
    stem = hashlib.sha256(request.node.name.encode()).hexdigest()[:8]
    with serve_index(wide_index(f"w{stem}")) as served:
        yield served


async def mirror_in_registry(index: FixtureIndex, registry: RegistryServer, prefix: str) -> None:
    """Every project of ``index`` synced into the registry under ``prefix`` (with its catalog)."""
    store = RegistryStore(registry.host, prefix, plain_http=True)
    try:
        async with IndexClient(index.url) as client:
            report = await sync([Requirement(p) for p in index.projects], client, store)
        assert not report.failed
    finally:
        await store.aclose()


async def registry_tags(registry: RegistryServer, prefix: str) -> dict[str, str]:
    """``repository:tag`` -> digest, through ``/v2/_catalog`` (the test's registry allows it).

    The writers' leases included: verify checks them as every tag.
    """
    store = RegistryStore(registry.host, prefix, plain_http=True)
    try:
        return await tag_digests(store, leases=True)
    finally:
        await store.aclose()


def manifest_reads(proxy: FaultProxy, prefix: str, since: int) -> set[tuple[str, str]]:
    """The project tags (not digests) whose manifests were read through the proxy."""
    pattern = re.compile(rf"^/v2/{prefix}/([^/]+)/manifests/([^/?]+)$")
    reads = set()
    for record in proxy.seen()[since:]:
        found = pattern.match(record.path)
        if found and found[1] != CATALOG_REPOSITORY and not found[2].startswith("sha256:"):
            reads.add((found[1], found[2]))
    return reads


async def test_verify_and_copy_take_the_repositories_from_the_catalog(
    index: FixtureIndex, registry: RegistryServer, tmp_path: Path
) -> None:
    prefix = "walk-catalog"
    await mirror_in_registry(index, registry, prefix)
    expected = await registry_tags(registry, prefix)
    repositories = {key.split(":")[0] for key in expected}
    assert len(repositories) == PROJECTS + 1  # and the catalog's

    with FaultProxy(registry.url, [refuse_catalog()]) as proxy:
        store = RegistryStore(proxy.host, prefix, plain_http=True)
        try:
            assert await mirror_repositories(store) == sorted(repositories)
            report = await verify(store, jobs=4)
            assert report.ok, report.findings
            assert report.tags_listed == report.tags_checked == len(expected)
            assert report.sample is None
            listed = {
                record.path.removeprefix(f"/v2/{prefix}/").removesuffix("/tags/list")
                for record in proxy.seen("GET", "/tags/list")
            }
            assert listed == repositories

            out = LayoutStore(tmp_path / "copy")
            copied = await copy(store, out, jobs=4)
            await out.aclose()
        finally:
            await store.aclose()
        assert proxy.seen(path="_catalog") == []

    assert not copied.failed, copied.tags
    assert not copied.repository_errors
    identity = f"{CATALOG_REPOSITORY}:{IDENTITY_TAG}"
    wanted = {  # each target has its own identity and writers' leases: not copied
        key: digest
        for key, digest in expected.items()
        if key != identity and not is_lease_tag(key.removeprefix(f"{CATALOG_REPOSITORY}:"))
    }
    assert f"{CATALOG_REPOSITORY}:writer-0" in expected.keys() - wanted.keys()
    assert copied.count("copied") == len(wanted)
    assert await tag_digests(out) == wanted
    # Every blob of every tag is in the layout with its bytes (a layout's verify hashes each).
    copy_checked = await verify(out)
    assert copy_checked.ok, copy_checked.findings
    assert copy_checked.blobs_checked >= 3 * PROJECTS


async def test_a_registry_without_catalog_nor_listing_is_refused_with_the_reason(
    index: FixtureIndex, registry: RegistryServer, tmp_path: Path
) -> None:
    prefix = "walk-nocatalog"
    await mirror_in_registry(index, registry, prefix)
    env = cli_env(tmp_path / "home")
    with FaultProxy(registry.url, [refuse_catalog()]) as proxy:
        base = ["--plain-http", f"{proxy.host}/{prefix}"]
        # With the catalog gone the repositories can only come from /v2/_catalog, refused here.
        proxy.add(Rule(Fault.error(404), "GET", rf"/{CATALOG_REPOSITORY}/", times=ALWAYS))
        result = run_cli(["verify", *base], env)
    assert result.returncode == 3, result.describe()
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: "), line
    assert "refused repository list _catalog" in line, line
    assert "Traceback" not in result.stderr


async def test_tag_lists_are_read_a_bounded_number_at_once(registry: RegistryServer) -> None:
    prefix = "walk-lists"
    names = [f"repo-{i}" for i in range(10)]
    config = fmt.empty_config()
    direct = RegistryStore(registry.host, prefix, plain_http=True)
    try:
        for i, name in enumerate(names):
            await direct.put_blob_bytes(name, config.descriptor.digest, config.data)
            manifest = fmt.canonical_json(
                {
                    "schemaVersion": 2,
                    "mediaType": fmt.OCI_MANIFEST,
                    "artifactType": "application/vnd.test.walk",
                    "config": config.descriptor.to_json(),
                    "layers": [],
                    "annotations": {"n": str(i)},
                }
            )
            for tag in ("one", f"two-{i}"):
                await direct.put_manifest(name, tag, fmt.OCI_MANIFEST, manifest)
    finally:
        await direct.aclose()

    jobs = 4
    failing = names[7]
    with FaultProxy(
        registry.url, [Rule(Fault.error(400), "GET", rf"/{failing}/tags/list", times=ALWAYS)]
    ) as proxy:
        store = RegistryStore(proxy.host, prefix, plain_http=True)
        entered = 0
        all_in = asyncio.Event()
        release = asyncio.Event()
        got: list[Listed] = []

        async def on_listed(item: Listed) -> None:
            nonlocal entered
            entered += 1
            if entered == jobs:
                all_in.set()
            await release.wait()  # the consumer sets the pace: its readers wait
            got.append(item)

        try:
            walk = asyncio.create_task(each_tag_list(store, names, on_listed, jobs=jobs))
            # Read one after another, the second list would never be asked for.
            await asyncio.wait_for(all_in.wait(), 120)
            # Every reader waits on the consumer: jobs lists were read at once, and no more.
            assert len(proxy.seen("GET", "/tags/list")) == jobs
            release.set()
            await asyncio.wait_for(walk, 120)
        finally:
            await store.aclose()
        assert len(proxy.seen("GET", "/tags/list")) == len(names)

    by_name = {item.repository: item for item in got}
    assert sorted(by_name) == sorted(names)
    assert by_name[failing].error is not None
    assert by_name[failing].tags == ()
    assert {name: sorted(item.tags) for name, item in by_name.items() if name != failing} == {
        name: ["one", f"two-{i}"] for i, name in enumerate(names) if name != failing
    }


async def test_a_seeded_sample_checks_the_same_tags_deeply(
    index: FixtureIndex, registry: RegistryServer, tmp_path: Path
) -> None:
    prefix = "walk-sample"
    await mirror_in_registry(index, registry, prefix)
    expected = await registry_tags(registry, prefix)
    versions = {tuple(key.split(":")) for key in expected if not key.startswith(CATALOG_REPOSITORY)}
    assert len(versions) == 2 * PROJECTS

    with FaultProxy(registry.url, [refuse_catalog()]) as proxy:
        store = RegistryStore(proxy.host, prefix, plain_http=True)
        try:
            draws = []
            for seed in (7, 7, 8):
                since = len(proxy.seen())
                report = await verify(store, sample=0.5, seed=seed, jobs=3)
                assert report.ok, report.findings
                assert (report.sample, report.deep) == (0.5, True)
                assert report.tags_listed == len(expected)
                draws.append((manifest_reads(proxy, prefix, since), report.tags_checked))
            (first, checked), (again, checked_again), (other, _) = draws
            assert first == again
            assert checked == checked_again
            assert first == {(r, t) for r, t in versions if sampled(7, r, t, 0.5)}
            assert 0 < len(first) < len(versions)
            assert other != first

            # Bytes changed on the registry's disk: a HEAD per blob cannot see it, a sample
            # of the whole mirror reads every blob back and finds it.
            project = next(iter(index.projects))
            [sdist] = [f for f in index.projects[project] if f.filename.endswith("-2.0.tar.gz")]
            path = registry_blob(registry, fmt.sha256_digest(sdist.data))
            data = bytearray(path.read_bytes())
            data[100] ^= 0xFF
            path.write_bytes(bytes(data))
            assert (await verify(store)).ok
            whole = await verify(store, sample=1.0, seed=3)
        finally:
            await store.aclose()
    assert whole.tags_checked == whole.tags_listed == len(expected)
    assert [(f.kind, f.repository, f.tag, f.role, f.title) for f in whole.findings] == [
        ("digest-mismatch", project, "2.0", "file", sdist.filename)
    ]

    env = cli_env(tmp_path / "home")
    target = [f"{registry.host}/{prefix}", "--plain-http"]
    shown = run_cli(["verify", *target, "--sample", "1", "--seed", "3", "--json"], env)
    assert shown.returncode == 1, shown.describe()
    document = shown.json()
    assert (document["sample"], document["seed"]) == (1.0, 3)
    assert document["tags_checked"] == document["tags_listed"] == len(expected)
    assert [f["kind"] for f in document["findings"]] == ["digest-mismatch"]
    text = run_cli(["verify", *target, "--sample", "0.5", "--seed", "7"], env)
    # The damaged version fails the spot check exactly when the seed draws it.
    assert text.returncode == (1 if (project, "2.0") in first else 0), text.describe()
    assert f"{checked} tags (a sample of 0.5 of {len(expected)}, --seed 7)" in text.stderr
    unseeded = run_cli(["verify", *target, "--seed", "7"], env)
    assert unseeded.returncode == 2
    assert "--seed goes with --sample" in unseeded.stderr
