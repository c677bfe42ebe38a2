"""Format 2 read by the clients people use: the ORAS CLI, oras-py, skopeo and umoci.

Every registry test runs against Distribution 2.8.2 and v3. The ORAS CLI and
Distribution v3 are found on ``PATH`` (CI adds ``../shared/bin``); skopeo and
umoci come from Debian. A test whose tool is missing is skipped with the
reason. Files a client writes are compared with the index's entries:
filenames, sha256 of the file, sha256 of its core metadata.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import oras.client
import pytest
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index
from packaging.requirements import Requirement
from registry_server import RegistryServer
from test_format1_migration import format1_layout

from oci_pypi_sync import format as fmt
from oci_pypi_sync.engine.run import sync
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.ops.copy import copy
from oci_pypi_sync.ops.listing import list_releases
from oci_pypi_sync.ops.verify import repair, verify
from oci_pypi_sync.serve.view import MirrorView
from oci_pypi_sync.stores.layout import LayoutStore
from oci_pypi_sync.stores.protocols import Store
from oci_pypi_sync.stores.registry import RegistryStore

pytestmark = pytest.mark.registry

ORAS = shutil.which("oras")
needs_oras = pytest.mark.skipif(
    ORAS is None, reason="the ORAS CLI (oras) is not on PATH; CI adds ../shared/bin"
)
needs_skopeo = pytest.mark.skipif(
    shutil.which("skopeo") is None, reason="skopeo is not installed: apt-get install -y skopeo"
)
needs_umoci = pytest.mark.skipif(
    shutil.which("umoci") is None, reason="umoci is not installed: apt-get install -y umoci"
)

PURE = "alpha-1.0-py3-none-any.whl"
LINUX = "alpha-1.0-cp312-cp312-manylinux_2_17_x86_64.whl"
MACOS = "alpha-1.0-cp312-cp312-macosx_11_0_universal2.whl"
WINDOWS = "alpha-1.0-cp312-cp312-win32.whl"
SDIST = "alpha-1.0.tar.gz"
NO_INDEX = "http://127.0.0.1:9/simple/"


@dataclass(frozen=True)
class File:
    """What the index says of one file: its sha256, and its core metadata's."""

    name: str
    sha256: str
    metadata_sha256: str | None
    manifest: str


@dataclass(frozen=True)
class Mirror:
    layout: Path
    files: dict[str, dict[str, File]]  # tag "alpha:1.0" -> filename -> File
    digests: dict[str, str]  # "alpha:1.0" -> index digest


def _read_files(layout: LayoutStore) -> tuple[dict[str, dict[str, File]], dict[str, str]]:
    files: dict[str, dict[str, File]] = {}
    digests: dict[str, str] = {}
    for (repo, tag), entry in layout.tags().items():
        if "." in repo:
            continue
        digests[f"{repo}:{tag}"] = entry["digest"]
        _, entries = fmt.parse_release_index(layout.blob_path(entry["digest"]).read_bytes())
        files[f"{repo}:{tag}"] = {
            e.annotations[fmt.A_FILENAME]: File(
                e.annotations[fmt.A_FILENAME],
                e.annotations[fmt.A_SHA256],
                e.annotations.get(fmt.A_METADATA_SHA256),
                e.digest,
            )
            for e in entries
        }
    return files, digests


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Mirror:
    """A layout synced in format 2: a release with wheels for three OSes, and a pure one."""
    fixture = FixtureIndex()
    fixture.add(
        "alpha",
        make_wheel("alpha", "1.0"),
        make_wheel("alpha", "1.0", tag="cp312-cp312-manylinux_2_17_x86_64"),
        make_wheel("alpha", "1.0", tag="cp312-cp312-macosx_11_0_universal2"),
        make_wheel("alpha", "1.0", tag="cp312-cp312-win32"),
        make_sdist("alpha", "1.0"),
    )
    fixture.add("beta", make_wheel("beta", "0.1", requires=("alpha>=1",)))
    path = tmp_path_factory.mktemp("interop") / "layout"

    async def build() -> LayoutStore:
        layout = LayoutStore(path)
        async with IndexClient(served.url) as client:
            report = await sync([Requirement("alpha"), Requirement("beta")], client, layout)
        assert not report.failed
        return layout

    with serve_index(fixture) as served:
        layout = asyncio.run(build())
    files, digests = _read_files(layout)
    return Mirror(path, files, digests)


def tool_env(home: Path) -> dict[str, str]:
    """No proxies and an empty home: the tools read no configuration of the caller's."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    }
    env.update(HOME=str(home), DOCKER_CONFIG=str(home / "docker"), NO_PROXY="127.0.0.1")
    return env


def run_tool(
    args: list[str], home: Path, *, ok: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        args,
        env=tool_env(home),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if ok:
        assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done


def pulled(directory: Path) -> dict[str, str]:
    """Every file a client wrote, by name, with its sha256."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in directory.rglob("*")
        if p.is_file()
    }


def expected(files: dict[str, File], names: set[str] | None = None) -> dict[str, str]:
    """The files of the index (and their ``.metadata`` layers) as a client should write them."""
    out = {}
    for file in files.values():
        if names is not None and file.name not in names:
            continue
        out[file.name] = file.sha256
        if file.metadata_sha256:
            out[file.name + ".metadata"] = file.metadata_sha256
    return out


async def push(mirror: Mirror, server: RegistryServer, prefix: str) -> RegistryStore:
    store = RegistryStore(server.host, prefix, plain_http=True)
    report = await copy(LayoutStore(mirror.layout, create=False), store)
    assert not report.failed
    return store


async def tag_digests(store: Store, repos: tuple[str, ...] = ("alpha", "beta")) -> dict[str, str]:
    out = {}
    for repo in repos:
        for tag in await store.list_tags(repo):
            manifest = await store.get_manifest(repo, tag)
            assert manifest is not None
            out[f"{repo}:{tag}"] = manifest.digest
    return out


# --- pulling from a registry ------------------------------------------------------------


@needs_oras
async def test_oras_pull_writes_every_file_of_a_version_once(
    mirror: Mirror, any_registry: RegistryServer, tmp_path: Path
) -> None:
    prefix = f"pull-{any_registry.implementation}"
    await (await push(mirror, any_registry, prefix)).aclose()
    base = f"{any_registry.host}/{prefix}"
    assert ORAS is not None
    out = tmp_path / "tag"
    run_tool([ORAS, "pull", "--plain-http", f"{base}/alpha:1.0", "-o", str(out)], tmp_path)
    assert pulled(out) == expected(mirror.files["alpha:1.0"])

    for platform, name in [
        ("linux/amd64", LINUX),
        ("darwin/arm64", MACOS),
        ("darwin/amd64", MACOS),
        ("windows/386", WINDOWS),
    ]:
        out = tmp_path / platform.replace("/", "-")
        run_tool(
            [
                ORAS,
                "pull",
                "--plain-http",
                "--platform",
                platform,
                f"{base}/alpha:1.0",
                "-o",
                str(out),
            ],
            tmp_path,
        )
        assert pulled(out) == expected(mirror.files["alpha:1.0"], {name}), platform

    # an entry without a platform (sdist, pure wheel) is never chosen by --platform
    refused = run_tool(
        [
            ORAS,
            "pull",
            "--plain-http",
            "--platform",
            "linux/amd64",
            f"{base}/beta:0.1",
            "-o",
            str(tmp_path / "none"),
        ],
        tmp_path,
        ok=False,
    )
    assert refused.returncode != 0
    assert "no matching manifest" in refused.stderr

    sdist = mirror.files["alpha:1.0"][SDIST]
    out = tmp_path / "digest"
    run_tool(
        [ORAS, "pull", "--plain-http", f"{base}/alpha@{sdist.manifest}", "-o", str(out)],
        tmp_path,
    )
    assert pulled(out) == {SDIST: sdist.sha256}


async def test_oras_py_pulls_each_file_by_digest(
    mirror: Mirror, any_registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # oras-py reads ~/.docker/config.json
    prefix = f"oraspy-{any_registry.implementation}"
    await (await push(mirror, any_registry, prefix)).aclose()
    client = oras.client.OrasClient(hostname=any_registry.host, insecure=True)
    base = f"{any_registry.host}/{prefix}"
    files = mirror.files["alpha:1.0"]
    for file in files.values():
        out = tmp_path / file.name
        written = client.pull(target=f"{base}/alpha@{file.manifest}", outdir=str(out))
        assert sorted(Path(w).name for w in written) == sorted(expected(files, {file.name}))
        assert pulled(out) == expected(files, {file.name})
    # oras-py 0.2 reads only an image manifest's layers: a version tag (an index) gives nothing
    assert client.pull(target=f"{base}/alpha:1.0", outdir=str(tmp_path / "tag")) == []


# --- a layout ---------------------------------------------------------------------------


@needs_oras
def test_oras_reads_a_layout_by_its_ref_names(mirror: Mirror, tmp_path: Path) -> None:
    assert ORAS is not None
    listed = run_tool([ORAS, "repo", "tags", "--oci-layout", str(mirror.layout)], tmp_path)
    assert set(listed.stdout.split()) >= {"alpha/1.0", "beta/0.1"}
    out = tmp_path / "tag"
    run_tool([ORAS, "pull", "--oci-layout", f"{mirror.layout}:alpha/1.0", "-o", str(out)], tmp_path)
    assert pulled(out) == expected(mirror.files["alpha:1.0"])
    out = tmp_path / "linux"
    run_tool(
        [
            ORAS,
            "pull",
            "--oci-layout",
            f"{mirror.layout}:alpha/1.0",
            "--platform",
            "linux/amd64",
            "-o",
            str(out),
        ],
        tmp_path,
    )
    assert pulled(out) == expected(mirror.files["alpha:1.0"], {LINUX})
    # A digest index.json does not list resolves as an untyped blob: oras writes no file
    # (docs/format.md says so; pull the version's ref, with --platform, instead).
    sdist = mirror.files["alpha:1.0"][SDIST]
    out = tmp_path / "digest"
    done = run_tool(
        [ORAS, "pull", "--oci-layout", f"{mirror.layout}@{sdist.manifest}", "-o", str(out)],
        tmp_path,
    )
    assert "application/octet-stream" in done.stdout
    assert pulled(out) == {}


@needs_oras
async def test_one_version_copied_out_of_a_layout_with_oras_keeps_its_digest(
    mirror: Mirror, any_registry: RegistryServer, tmp_path: Path
) -> None:
    assert ORAS is not None
    target = f"{any_registry.host}/layout-oras-{any_registry.implementation}/alpha:1.0"
    run_tool(
        [ORAS, "cp", "--to-plain-http", "--from-oci-layout", f"{mirror.layout}:alpha/1.0", target],
        tmp_path,
    )
    store = RegistryStore(
        any_registry.host, f"layout-oras-{any_registry.implementation}", plain_http=True
    )
    try:
        assert await tag_digests(store, ("alpha",)) == {"alpha:1.0": mirror.digests["alpha:1.0"]}
        report = await verify(store)
        assert report.findings == ()
    finally:
        await store.aclose()


@needs_skopeo
async def test_one_version_copied_out_of_a_layout_with_skopeo_is_repaired_to_its_digest(
    mirror: Mirror, any_registry: RegistryServer, tmp_path: Path
) -> None:
    prefix = f"layout-skopeo-{any_registry.implementation}"
    run_tool(
        [
            "skopeo",
            "copy",
            "--all",
            "--dest-tls-verify=false",
            f"oci:{mirror.layout}:alpha/1.0",
            f"docker://{any_registry.host}/{prefix}/alpha:1.0",
        ],
        tmp_path,
    )
    store = RegistryStore(any_registry.host, prefix, plain_http=True)
    try:
        await _reencoded_then_repaired(store, mirror, ("alpha",))
    finally:
        await store.aclose()


@needs_umoci
def test_umoci_lists_the_layout_refs(mirror: Mirror, tmp_path: Path) -> None:
    """umoci can list our refs; it cannot stat or unpack an artifact (docs/format.md)."""
    listed = run_tool(["umoci", "ls", "--layout", str(mirror.layout)], tmp_path)
    assert {"alpha/1.0", "beta/0.1"} <= set(listed.stdout.split())


@needs_skopeo
@needs_umoci
async def test_a_legacy_version_is_addressable_in_a_migrated_layout(tmp_path: Path) -> None:
    """Format 1's ``_...`` fallback broke the ref-name grammar; ``legacy-...`` does not."""
    layout = format1_layout(tmp_path / "layout")
    async with IndexClient(NO_INDEX) as client:
        assert (await repair(layout, await verify(layout), client)).ok
    tag = fmt.version_tag("0.1dev-r1234")
    digest = layout.tags()[("gamma", tag)]["digest"]
    raw = run_tool(
        ["skopeo", "inspect", "--raw", f"oci:{layout.path}:gamma/{tag}"], tmp_path
    ).stdout.encode()
    assert fmt.sha256_digest(raw) == digest
    listed = run_tool(["umoci", "ls", "--layout", str(layout.path)], tmp_path)
    assert f"gamma/{tag}" in listed.stdout.split()


# --- round trips ----------------------------------------------------------------------


async def _reencoded_then_repaired(
    store: Store, mirror: Mirror, repos: tuple[str, ...] = ("alpha", "beta")
) -> None:
    """skopeo 1.9 re-encodes each version index: a warning; repair gives the bytes back."""
    original = {k: v for k, v in mirror.digests.items() if k.split(":")[0] in repos}
    copied = await tag_digests(store, repos)
    assert set(copied) == set(original)
    assert all(copied[tag] != original[tag] for tag in original)
    report = await verify(store)
    assert report.ok, report.findings
    assert {(f.kind, f.repository, f.tag) for f in report.findings} == {
        ("re-encoded", *tag.split(":")) for tag in original
    }
    assert all("content intact" in f.detail for f in report.findings)
    async with IndexClient(NO_INDEX) as client:
        repaired = await repair(store, report, client)
    assert repaired.ok, repaired.unrepaired
    assert (await verify(store)).findings == ()
    assert await tag_digests(store, repos) == original


@needs_skopeo
async def test_skopeo_copy_all_round_trip(
    mirror: Mirror, any_registry: RegistryServer, tmp_path: Path
) -> None:
    prefix = f"skopeo-{any_registry.implementation}"
    source = await push(mirror, any_registry, prefix)
    await source.aclose()
    # registry -> registry
    for repo, tag in (("alpha", "1.0"), ("beta", "0.1")):
        run_tool(
            [
                "skopeo",
                "copy",
                "--all",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                f"docker://{any_registry.host}/{prefix}/{repo}:{tag}",
                f"docker://{any_registry.host}/{prefix}-copy/{repo}:{tag}",
            ],
            tmp_path,
        )
    store = RegistryStore(any_registry.host, f"{prefix}-copy", plain_http=True)
    try:
        await _reencoded_then_repaired(store, mirror)
    finally:
        await store.aclose()
    # registry -> layout, addressed by our ref names
    layout_path = tmp_path / "skopeo-layout"
    for repo, tag in (("alpha", "1.0"), ("beta", "0.1")):
        run_tool(
            [
                "skopeo",
                "copy",
                "--all",
                "--src-tls-verify=false",
                f"docker://{any_registry.host}/{prefix}/{repo}:{tag}",
                f"oci:{layout_path}:{repo}/{tag}",
            ],
            tmp_path,
        )
    await _reencoded_then_repaired(LayoutStore(layout_path, create=False), mirror)


@needs_oras
async def test_oras_cp_round_trip_keeps_every_byte(
    mirror: Mirror, any_registry: RegistryServer, tmp_path: Path
) -> None:
    assert ORAS is not None
    prefix = f"orascp-{any_registry.implementation}"
    await (await push(mirror, any_registry, prefix)).aclose()
    layout_path = tmp_path / "oras-layout"
    for ref in ("alpha:1.0", "beta:0.1"):
        repo, tag = ref.split(":")
        run_tool(
            [
                ORAS,
                "cp",
                "-r",
                "--from-plain-http",
                f"{any_registry.host}/{prefix}/{ref}",
                "--to-oci-layout",
                f"{layout_path}:{repo}/{tag}",
            ],
            tmp_path,
        )
        run_tool(
            [
                ORAS,
                "cp",
                "-r",
                "--to-plain-http",
                "--from-oci-layout",
                f"{layout_path}:{repo}/{tag}",
                f"{any_registry.host}/{prefix}-back/{ref}",
            ],
            tmp_path,
        )
    # oras adds an untagged index.json entry per child manifest: readers skip them
    index = json.loads((layout_path / "index.json").read_bytes())
    assert any(fmt.REF_NAME not in (e.get("annotations") or {}) for e in index["manifests"])
    layout = LayoutStore(layout_path, create=False)
    assert await tag_digests(layout) == mirror.digests
    assert (await verify(layout)).findings == ()
    assert [r.version for r in await list_releases(layout, "alpha")] == ["1.0"]
    back = RegistryStore(any_registry.host, f"{prefix}-back", plain_http=True)
    try:
        assert await tag_digests(back) == mirror.digests
        assert (await verify(back)).findings == ()
    finally:
        await back.aclose()


# --- referrers ------------------------------------------------------------------------------


@needs_oras
async def test_referrers_fallback_tags_are_ignored_by_readers_and_carried_by_copy(
    mirror: Mirror, any_registry: RegistryServer, tmp_path: Path
) -> None:
    assert ORAS is not None
    prefix = f"referrers-{any_registry.implementation}"
    store = await push(mirror, any_registry, prefix)
    try:
        note = tmp_path / "note.txt"
        note.write_text("signed\n")
        run_tool(
            [
                ORAS,
                "attach",
                "--plain-http",
                "--artifact-type",
                "application/x-test",
                f"{any_registry.host}/{prefix}/alpha:1.0",
                note.name,
            ],
            tmp_path,
            cwd=tmp_path,
        )
        fallback = "sha256-" + mirror.digests["alpha:1.0"].removeprefix("sha256:")
        assert fmt.is_referrers_tag(fallback)
        assert sorted(await store.list_tags("alpha")) == sorted(["1.0", fallback])

        assert [r.tag for r in await list_releases(store, "alpha")] == ["1.0"]
        project = await MirrorView(store).project("alpha")
        assert project is not None
        assert project.versions == ("1.0",)
        report = await verify(store)
        assert report.findings == ()  # checked for structure only, not as a version

        # copy carries it as opaque content, byte for byte, so discovery works on the copy
        copied = RegistryStore(any_registry.host, f"{prefix}-copy", plain_http=True)
        try:
            result = await copy(store, copied)
            assert not result.failed
            assert await tag_digests(copied, ("alpha",)) == await tag_digests(store, ("alpha",))
            discovered = run_tool(
                [
                    ORAS,
                    "discover",
                    "--plain-http",
                    "--format",
                    "json",
                    f"{any_registry.host}/{prefix}-copy/alpha:1.0",
                ],
                tmp_path,
            )
            found = json.loads(discovered.stdout)
            referrers = found.get("referrers") or found.get("manifests") or []
            assert [r["artifactType"] for r in referrers] == ["application/x-test"]
            assert (await verify(copied)).findings == ()
        finally:
            await copied.aclose()
    finally:
        await store.aclose()
