"""What the mirror stores for a file is what the file is: its bytes never replaced unseen,
its core metadata only when it provably describes it. CLI runs, targets read back."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import cli_env, run_cli
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index
from registry_server import RegistryServer

from oci_pypi_sync import format as fmt
from oci_pypi_sync.stores.layout import LayoutStore
from oci_pypi_sync.stores.protocols import Store
from oci_pypi_sync.stores.registry import RegistryStore

pytestmark = pytest.mark.registry


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def entries(store: Store, repo: str, tag: str) -> dict[str, dict[str, Any]]:
    """The version index's entries by filename, read back from the target."""
    manifest = await store.get_manifest(repo, tag)
    assert manifest is not None, f"{repo}:{tag} is not tagged"
    listed = json.loads(manifest.body)["manifests"]
    return {entry["annotations"][fmt.A_FILENAME]: entry for entry in listed}


async def blob(store: Store, repo: str, digest: str) -> bytes:
    data = b"".join([chunk async for chunk in store.open_blob(repo, digest)])
    assert "sha256:" + sha256(data) == digest
    return data


async def layers(store: Store, repo: str, manifest_digest: str) -> list[dict[str, Any]]:
    manifest = await store.get_manifest(repo, manifest_digest)
    assert manifest is not None
    found: list[dict[str, Any]] = json.loads(manifest.body)["layers"]
    return found


# --- upstream immutability ----------------------------------------------------------


@pytest.fixture
def changing() -> Iterator[FixtureIndex]:
    fixture = FixtureIndex()
    fixture.add("steady", make_wheel("steady", "1.0"), make_sdist("steady", "1.0", size=5000))
    with serve_index(fixture):
        yield fixture


@pytest.mark.parametrize("kind", ["layout", "registry"])
async def test_a_file_replaced_upstream_is_refused_until_accepted(
    kind: str, changing: FixtureIndex, registry: RegistryServer, tmp_path: Path
) -> None:
    env = cli_env(tmp_path / "home")
    if kind == "layout":
        target = f"oci:{tmp_path / 'mirror'}"
        store: Store = LayoutStore(tmp_path / "mirror")
    else:
        target = f"{registry.host}/replaced"
        store = RegistryStore(registry.host, "replaced", plain_http=True)
    args = ["sync", "steady", "--to", target, "--index-url", changing.url, "--json"]
    try:
        first = run_cli(args, env)
        assert first.returncode == 0, first.describe()
        sdist = changing.files_by_name()["steady-1.0.tar.gz"]
        old_bytes, old_sha = sdist.data, sdist.sha256
        # The index now serves other bytes under the same filename.
        sdist.data = b"replaced " + old_bytes[9:]
        new_sha = sdist.sha256
        assert new_sha != old_sha

        for _ in range(2):  # refused on every run until someone decides
            refused = run_cli(args, env)
            assert refused.returncode == 1, refused.describe()
            report = refused.json()
            assert report["ok"] is False
            (file,) = [f for f in report["files"] if f["filename"] == "steady-1.0.tar.gz"]
            assert file["action"] == "replaced-upstream"
            assert (file["sha256"], file["mirrored_sha256"]) == (new_sha, old_sha)
            assert report["totals"]["replaced_upstream"] == 1
            assert "steady-1.0.tar.gz" in refused.stderr
            listed = await entries(store, "steady", "1.0")
            assert listed["steady-1.0.tar.gz"]["annotations"][fmt.A_SHA256] == old_sha
            assert await blob(store, "steady", "sha256:" + old_sha) == old_bytes
            assert not await store.has_blob("steady", "sha256:" + new_sha)

        accepted = run_cli([*args, "--accept-replaced"], env)
        assert accepted.returncode == 0, accepted.describe()
        (file,) = [f for f in accepted.json()["files"] if f["filename"] == "steady-1.0.tar.gz"]
        assert file["action"] == "pushed"
        assert old_sha in file["note"]
        listed = await entries(store, "steady", "1.0")
        assert listed["steady-1.0.tar.gz"]["annotations"][fmt.A_SHA256] == new_sha
        assert set(listed) == {"steady-1.0.tar.gz", "steady-1.0-py3-none-any.whl"}
        assert await blob(store, "steady", "sha256:" + new_sha) == sdist.data
    finally:
        await store.aclose()


# --- core metadata that matches the file ------------------------------------------------


def _metadata(name: str, version: str, *requires: str) -> bytes:
    lines = [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"]
    lines += [f"Requires-Dist: {r}\n" for r in requires]
    return "".join(lines).encode()


@pytest.fixture
def metadata_index() -> Iterator[FixtureIndex]:
    fixture = FixtureIndex()
    # The index serves a .metadata for app without advertising it, and that
    # file declares a dependency the wheel itself does not.
    app = make_wheel("app", "1.0", requires=("lib",))
    app.metadata = _metadata("app", "1.0", "lib", "evil")
    app.advertise_metadata = False
    # tool's unadvertised .metadata is the wheel's own METADATA: it may be stored.
    tool = make_wheel("tool", "1.0")
    tool.advertise_metadata = False
    # named's advertised metadata (hash and all) names another project.
    named = make_wheel("named", "1.0")
    named.metadata = _metadata("other", "1.0")
    fixture.add("app", app)
    fixture.add("tool", tool)
    named_sdist = make_sdist("named", "1.0")
    named_sdist.metadata = named.metadata
    fixture.add("named", named, named_sdist)
    fixture.add("lib", make_wheel("lib", "2.0"))
    fixture.add("evil", make_wheel("evil", "6.6.6"))
    with serve_index(fixture):
        yield fixture


async def test_metadata_is_stored_only_when_it_describes_the_file(
    metadata_index: FixtureIndex, tmp_path: Path
) -> None:
    env = cli_env(tmp_path / "home")
    mirror = tmp_path / "mirror"
    result = run_cli(
        [
            *("sync", "app", "tool", "named", "--with-deps", "--to", f"oci:{mirror}"),
            *("--index-url", metadata_index.url, "--json"),
        ],
        env,
    )
    assert result.returncode == 0, result.describe()
    report = result.json()
    by_name = {f["filename"]: f for f in report["files"]}
    store = LayoutStore(mirror)

    # The undeclared dependency is not mirrored: the closure comes from the wheel itself.
    assert {f["project"] for f in report["files"]} == {"app", "tool", "named", "lib"}
    assert await store.list_tags("evil") == []
    assert await store.list_tags("lib") == ["2.0"]

    app = by_name["app-1.0-py3-none-any.whl"]
    assert "differs from the wheel's own METADATA" in app["note"]
    (entry,) = (await entries(store, "app", "1.0")).values()
    assert fmt.A_METADATA_SHA256 not in entry["annotations"]
    assert len(await layers(store, "app", entry["digest"])) == 1  # the file, no metadata

    tool = by_name["tool-1.0-py3-none-any.whl"]
    assert "note" not in tool
    (entry,) = (await entries(store, "tool", "1.0")).values()
    _, metadata_layer = await layers(store, "tool", entry["digest"])
    stored = await blob(store, "tool", metadata_layer["digest"])
    assert stored == metadata_index.files_by_name()["tool-1.0-py3-none-any.whl"].metadata

    for filename in ("named-1.0-py3-none-any.whl", "named-1.0.tar.gz"):
        assert "names other 1.0, not named 1.0" in by_name[filename]["note"]
    for entry in (await entries(store, "named", "1.0")).values():
        assert fmt.A_METADATA_SHA256 not in entry["annotations"]
        assert len(await layers(store, "named", entry["digest"])) == 1
    assert "mirrored without core metadata" in result.stderr
