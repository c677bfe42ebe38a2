"""Sync into the real registry, read back by independent clients (skopeo, oras-py)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index
from packaging.requirements import Requirement
from registry_server import RegistryServer

from oci_pypi_sync import format as fmt
from oci_pypi_sync.engine import run as sync_module
from oci_pypi_sync.engine.retry import RetryPolicy
from oci_pypi_sync.engine.run import SyncOptions, sync
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.stores.layout import LayoutStore
from oci_pypi_sync.stores.targets import open_store, parse_target

pytestmark = pytest.mark.registry


@pytest.fixture
def index() -> Iterator[FixtureIndex]:
    fixture = FixtureIndex()
    fixture.add(
        "multi-arch",
        make_wheel("multi-arch", "1.0", tag="cp312-cp312-manylinux_2_17_aarch64"),
        make_wheel("multi-arch", "1.0", tag="cp312-cp312-win_amd64"),
        make_wheel("multi-arch", "1.0+cu118", tag="cp312-cp312-manylinux_2_28_x86_64"),
        make_sdist("multi-arch", "1.0", size=3 << 20),
    )
    with serve_index(fixture):
        yield fixture


def skopeo_raw(registry: RegistryServer, reference: str) -> bytes:
    result = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            f"docker://{registry.host}/{reference}",
        ],
        capture_output=True,
        check=True,
        timeout=600,
    )
    return result.stdout


async def test_registry_and_layout_hold_the_same_digests(
    index: FixtureIndex, registry: RegistryServer, tmp_path: Path
) -> None:
    target = parse_target(f"{registry.host}/e2e-a")
    store = open_store(target)
    async with IndexClient(index.url) as client:
        report = await sync([Requirement("multi-arch")], client, store)
    await store.aclose()
    assert not report.failed
    tags = {r.tag: r.digest for r in report.releases}
    assert set(tags) == {"1.0", "1.0-cu118"}

    layout = LayoutStore(tmp_path / "layout")
    async with IndexClient(index.url) as client:
        layout_report = await sync([Requirement("multi-arch")], client, layout)
    assert {r.tag: r.digest for r in layout_report.releases} == tags

    listing = open_store(target)
    assert await listing.list_tags("multi-arch") == ["1.0", "1.0-cu118"]
    assert await listing.list_tags("no-such-project") == []
    assert "multi-arch" in await listing.list_repositories()
    await listing.aclose()
    assert await layout.list_tags("multi-arch") == ["1.0", "1.0-cu118"]
    assert await layout.list_repositories() == ["multi-arch", "oci-pypi.catalog"]

    raw = skopeo_raw(registry, "e2e-a/multi-arch:1.0")
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == tags["1.0"]
    assert raw == layout.blob_path(tags["1.0"]).read_bytes()
    data = json.loads(raw)
    assert data["artifactType"] == fmt.RELEASE_ARTIFACT
    platforms = sorted(
        f"{m['platform']['os']}/{m['platform']['architecture']}"
        for m in data["manifests"]
        if "platform" in m
    )
    assert platforms == ["linux/arm64", "windows/amd64"]


async def test_rerun_against_the_registry_pushes_nothing(
    index: FixtureIndex, registry: RegistryServer
) -> None:
    async def once() -> tuple[int, int]:
        store = open_store(parse_target(f"{registry.host}/e2e-b"))
        async with IndexClient(index.url) as client:
            report = await sync([Requirement("multi-arch==1.0")], client, store)
        await store.aclose()
        return report.count("pushed"), sum(r.action == "pushed" for r in report.releases)

    def downloads() -> int:
        return sum(
            1
            for method, path in index.requests
            if method == "GET" and "/files/" in path and not path.endswith(".metadata")
        )

    # ==1.0 also matches the local version 1.0+cu118 (PEP 440): two releases.
    assert await once() == (4, 2)
    assert downloads() == 4
    assert await once() == (0, 0)
    assert downloads() == 4  # no distribution file is downloaded again


async def test_oras_pulls_the_file_back_byte_for_byte(
    index: FixtureIndex, registry: RegistryServer, tmp_path: Path
) -> None:
    store = open_store(parse_target(f"{registry.host}/e2e-c"))
    async with IndexClient(index.url) as client:
        report = await sync([Requirement("multi-arch==1.0")], client, store)
    await store.aclose()
    index_json = json.loads(skopeo_raw(registry, "e2e-c/multi-arch:1.0"))
    sdist_entry = next(
        m for m in index_json["manifests"] if m["annotations"][fmt.A_FILENAME].endswith(".tar.gz")
    )
    out = tmp_path / "pulled"
    # oras-py pulls a manifest by digest; run it in a subprocess to keep its
    # requests session out of this event loop.
    script = (
        "import sys, oras.client\n"
        "c = oras.client.OrasClient(hostname=sys.argv[1], insecure=True)\n"
        "print('\\n'.join(c.pull(target=sys.argv[2], outdir=sys.argv[3])))\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            registry.host,
            f"{registry.host}/e2e-c/multi-arch@{sdist_entry['digest']}",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "DOCKER_CONFIG": str(tmp_path / "no-docker-config")},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    original = index.files_by_name()["multi_arch-1.0.tar.gz"].data
    assert (out / "multi_arch-1.0.tar.gz").read_bytes() == original
    assert report.count("failed") == 0


async def test_unreachable_registry_is_a_clear_fatal_error(index: FixtureIndex) -> None:
    from oci_pypi_sync.errors import RegistryUnreachableError

    store = open_store(parse_target("127.0.0.1:1/pypi"))
    quick = SyncOptions(retry=RetryPolicy(attempts=3, initial_wait=0.01))
    async with IndexClient(index.url) as client:
        with pytest.raises(RegistryUnreachableError, match=r"127\.0\.0\.1:1"):
            await sync([Requirement("multi-arch==1.0")], client, store, quick)
    await store.aclose()


async def sync_logged(
    registry: RegistryServer, index_url: str, prefix: str, requirements: Iterable[str]
) -> str:
    """A sync of ``requirements`` into the registry under ``prefix``; its access log of it."""
    start = len(registry.log_text())
    store = open_store(parse_target(f"{registry.host}/{prefix}"))
    async with IndexClient(index_url) as client:
        report = await sync([Requirement(r) for r in requirements], client, store)
    await store.aclose()
    assert not report.failed
    return registry.log_text()[start:]


async def test_a_run_of_many_projects_reads_the_catalog_instead_of_each_tag_list(
    registry: RegistryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync_module, "CATALOG_MIN_PROJECTS", 3)
    fixture = FixtureIndex()
    for name in ("cat-a", "cat-b", "cat-c", "cat-d"):
        fixture.add(name, make_wheel(name, "1.0"))
    prefix = f"cat{os.getpid()}"

    async def run(*requirements: str) -> tuple[int, int]:
        log = await sync_logged(registry, fixture.url, prefix, requirements)
        # access-log lines of the project repositories (not the tool's own catalog)
        catalog_reads = len(re.findall(r'"GET /v2/_catalog[?\S]* HTTP', log))
        tag_lists = len(re.findall(rf'"GET /v2/{prefix}/cat-[a-d]/tags/list\S* HTTP', log))
        return catalog_reads, tag_lists

    with serve_index(fixture):
        # new repositories: one catalog read, no tag list
        assert await run("cat-a", "cat-b", "cat-c") == (1, 0)
        # listed projects (cat-a with a new version, cat-b) have their tags read
        # before their indexes are written; the new cat-d does not
        fixture.add("cat-a", make_wheel("cat-a", "2.0"))
        assert await run("cat-a", "cat-b", "cat-d") == (1, 2)
        # below the threshold, no catalog: a tag list per project
        assert await run("cat-c") == (0, 1)
    store = open_store(parse_target(f"{registry.host}/{prefix}"))
    assert await store.list_tags("cat-a") == ["1.0", "2.0"]
    assert await store.list_tags("cat-d") == ["1.0"]
    await store.aclose()
