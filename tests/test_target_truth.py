"""The target is the truth, the state file a cache bound to it: a deleted or replaced target,
a catalog changed by another writer, content lost behind the state's back. CLI runs, the
target read back every time."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_helpers import cli_env, run_cli
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index
from registry_server import RegistryServer

from oci_pypi_sync import format as fmt
from oci_pypi_sync.ops.catalog import CATALOG_REPOSITORY, IDENTITY_TAG
from oci_pypi_sync.stores.layout import LayoutStore
from oci_pypi_sync.stores.protocols import Store
from oci_pypi_sync.stores.registry import RegistryStore
from oci_pypi_sync.stores.tarball import open_tar_store

pytestmark = pytest.mark.registry

PROJECTS = ("kept", "other")


@pytest.fixture
def index() -> Iterator[FixtureIndex]:
    fixture = FixtureIndex()
    for project in PROJECTS:
        fixture.add(
            project,
            make_wheel(project, "1.0", payload=20_000),
            make_sdist(project, "1.0", size=30_000),
        )
    with serve_index(fixture):
        yield fixture


def sync_args(target: str, index: FixtureIndex, *more: str) -> list[str]:
    return ["sync", *PROJECTS, "--to", target, "--index-url", index.url, "--json", *more]


def actions(result: Any) -> dict[str, str]:
    return {f["filename"]: f["action"] for f in result.json()["files"]}


async def mirrored(store: Store, index: FixtureIndex) -> dict[str, str]:
    """Every file the target's version indexes list, its bytes read back and hashed."""
    found = {}
    for project in PROJECTS:
        manifest = await store.get_manifest(project, "1.0")
        assert manifest is not None, f"{project}:1.0 is not tagged"
        for entry in json.loads(manifest.body)["manifests"]:
            child = await store.get_manifest(project, entry["digest"])
            assert child is not None
            layer = json.loads(child.body)["layers"][0]
            data = b"".join([c async for c in store.open_blob(project, layer["digest"])])
            assert "sha256:" + hashlib.sha256(data).hexdigest() == layer["digest"]
            found[entry["annotations"][fmt.A_FILENAME]] = hashlib.sha256(data).hexdigest()
    assert found == {name: f.sha256 for name, f in index.files_by_name().items()}
    return found


def registry_requests(registry: RegistryServer, since: int) -> list[str]:
    text = registry.log_text()[since:]
    return re.findall(r'"(?:GET|HEAD|POST|PUT|PATCH|DELETE) (/v2/\S*) HTTP', text)


# --- a target deleted or replaced ---------------------------------------------------------


@pytest.mark.parametrize("packed", [True, False], ids=["tar", "directory"])
async def test_a_deleted_target_is_mirrored_again_never_called_present(
    packed: bool, index: FixtureIndex, tmp_path: Path
) -> None:
    env = cli_env(tmp_path / "home")
    path = tmp_path / ("mirror.tar" if packed else "mirror")
    state = tmp_path / "state.sqlite"
    args = sync_args(f"oci:{path}", index, "--state", str(state))
    first = run_cli(args, env)
    assert first.returncode == 0, first.describe()
    assert set(actions(first).values()) == {"pushed"}
    if packed:
        path.unlink()
    else:
        shutil.rmtree(path)

    again = run_cli(args, env)
    assert again.returncode == 0, again.describe()
    # The state file said everything was there; the target said otherwise.
    assert set(actions(again).values()) == {"pushed"}
    assert "read from the target again" in again.stderr
    store = open_tar_store(path, writable=False) if packed else LayoutStore(path, create=False)
    await mirrored(store, index)
    verified = run_cli(["verify", f"oci:{path}", "--json"], env)
    assert verified.returncode == 0, verified.describe()
    assert verified.json()["tags_checked"] >= len(PROJECTS)

    third = run_cli(args, env)  # bound to the new target now: nothing to do
    assert set(actions(third).values()) == {"unchanged"}


# --- content lost behind the state file's back ---------------------------------------------


def _target(kind: str, registry: RegistryServer, tmp_path: Path, name: str) -> tuple[str, Store]:
    if kind == "layout":
        return f"oci:{tmp_path / name}", LayoutStore(tmp_path / name)
    return f"{registry.host}/{name}", RegistryStore(registry.host, name, plain_http=True)


async def _lose(kind: str, what: str, store: Store, registry: RegistryServer, name: str) -> str:
    """Delete the wheel of ``kept`` 1.0's manifest or bytes behind the tool's back."""
    manifest = await store.get_manifest("kept", "1.0")
    assert manifest is not None
    entry = next(
        e
        for e in json.loads(manifest.body)["manifests"]
        if e["annotations"][fmt.A_FILENAME].endswith(".whl")
    )
    child = await store.get_manifest("kept", entry["digest"])
    assert child is not None
    digest = (
        entry["digest"] if what == "manifest" else json.loads(child.body)["layers"][0]["digest"]
    )
    if isinstance(store, LayoutStore):
        store.blob_path(digest).unlink()
    else:
        kind_path = "manifests" if what == "manifest" else "blobs"
        response = httpx.delete(f"{registry.url}/v2/{name}/kept/{kind_path}/{digest}", timeout=10)
        assert response.status_code == 202, response.text
    return str(entry["annotations"][fmt.A_FILENAME])


@pytest.mark.parametrize("what", ["manifest", "blob"])
@pytest.mark.parametrize("kind", ["layout", "registry"])
async def test_lost_content_is_never_reported_present_and_recheck_or_repair_mends_it(
    kind: str, what: str, index: FixtureIndex, registry: RegistryServer, tmp_path: Path
) -> None:
    env = cli_env(tmp_path / "home")
    name = f"lost-{kind}-{what}-{tmp_path.name[-6:]}".lower().replace("_", "-")
    target, store = _target(kind, registry, tmp_path, name)
    state = ["--state", str(tmp_path / "state.sqlite")]
    try:
        first = run_cli(sync_args(target, index, *state), env)
        assert first.returncode == 0, first.describe()
        lost = await _lose(kind, what, store, registry, name)

        # The state file is bound to this target and nothing changed upstream: the
        # run trusts it, and says so: unchanged (the state's word), never present.
        trusted = run_cli(sync_args(target, index, *state), env)
        assert trusted.returncode == 0, trusted.describe()
        assert set(actions(trusted).values()) == {"unchanged"}
        found = run_cli(["verify", target, "--json"], env)
        assert found.returncode == 1, found.describe()

        # --recheck asks the target: the lost part is written again.
        rechecked = run_cli(sync_args(target, index, *state, "--recheck"), env)
        assert rechecked.returncode == 0, rechecked.describe()
        checked = actions(rechecked)
        assert checked[lost] == ("pushed" if what == "blob" else "present")
        assert "written again" in (
            next(f for f in rechecked.json()["files"] if f["filename"] == lost).get("note") or ""
        )
        assert {a for f, a in checked.items() if f != lost} == {"present"}
        await mirrored(store, index)
        sound = run_cli(["verify", target, "--json"], env)
        assert sound.returncode == 0, sound.describe()

        # The same loss again, mended by verify --repair this time.
        await _lose(kind, what, store, registry, name)
        repaired = run_cli(["verify", target, "--repair", "--index-url", index.url, "--json"], env)
        assert repaired.returncode == 0, repaired.describe()
        assert repaired.json()["repaired"]
        await mirrored(store, index)
    finally:
        await store.aclose()


# --- another writer changed the catalog -------------------------------------------------


async def test_projects_another_writer_changed_are_read_again_the_others_trusted(
    registry: RegistryServer, tmp_path: Path
) -> None:
    fixture = FixtureIndex()
    fixture.add(
        "both",
        make_wheel("both", "1.0", tag="cp312-cp312-manylinux_2_17_x86_64"),
        make_wheel("both", "1.0", tag="cp312-cp312-win_amd64"),
    )
    fixture.add("solo", make_wheel("solo", "1.0"))
    env = cli_env(tmp_path / "home")
    target = f"{registry.host}/shared-{tmp_path.name[-6:]}".lower().replace("_", "-")

    def sync_as(who: str, platform: str, *projects: str) -> Any:
        args = [
            *("sync", *projects, "--to", target, "--index-url", fixture.url, "--json"),
            *("--python", "3.12", "--platform", platform, "--only-binary"),
            *("--state", str(tmp_path / f"{who}.sqlite")),
        ]
        result = run_cli(args, env)
        assert result.returncode == 0, result.describe()
        return result

    with serve_index(fixture):
        sync_as("a", "linux/amd64", "both", "solo")
        sync_as("b", "windows/amd64", "both")  # the same version, another file
        again = sync_as("a", "linux/amd64", "both", "solo")
        by_project = {f["project"]: f["action"] for f in again.json()["files"]}
        # 'both' changed behind a's state (its catalog entry moved): read from the
        # target again; 'solo' did not: the state's word is kept.
        assert by_project == {"both": "present", "solo": "unchanged"}
        since = len(registry.log_text())
        quiet = sync_as("a", "linux/amd64", "both", "solo")
        assert {f["action"] for f in quiet.json()["files"]} == {"unchanged"}
        # One look at the target's identity and one at its catalog, nothing per project.
        asked = registry_requests(registry, since)
        assert sorted(asked) == sorted(
            [
                f"/v2/{target.split('/', 1)[1]}/{CATALOG_REPOSITORY}/manifests/{IDENTITY_TAG}",
                f"/v2/{target.split('/', 1)[1]}/{CATALOG_REPOSITORY}/manifests/latest",
            ]
        )
    store = RegistryStore(registry.host, target.split("/", 1)[1], plain_http=True)
    try:
        manifest = await store.get_manifest("both", "1.0")
        assert manifest is not None
        files = {e["annotations"][fmt.A_FILENAME] for e in json.loads(manifest.body)["manifests"]}
        assert files == set(fixture.files_by_name()) - {"solo-1.0-py3-none-any.whl"}
    finally:
        await store.aclose()
