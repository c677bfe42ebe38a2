"""Two syncs of one version at once, with different selections, leave the union.

CLI runs, each with its own state file, started together into one layout and
into the real registry, many rounds (it is a race); the tag is read back and
every file's bytes hashed each round, and a rerun of either keeps both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from cli_helpers import cli_env, cli_process, finish, run_cli
from fixture_index import FixtureIndex, make_wheel, serve_index
from registry_server import RegistryServer

from oci_pypi_sync import format as fmt
from oci_pypi_sync.stores.layout import LayoutStore
from oci_pypi_sync.stores.protocols import Store
from oci_pypi_sync.stores.registry import RegistryStore

pytestmark = pytest.mark.registry

ROUNDS = 10
LINUX = "cp312-cp312-manylinux_2_17_x86_64"
WINDOWS = "cp312-cp312-win_amd64"
WRITERS = {"linux": "linux/amd64", "windows": "windows/amd64"}
# Both downloads last about as long, so that the two tag writes come close together.
THROTTLE = 2_000_000.0


@pytest.fixture(scope="module")
def index() -> Iterator[FixtureIndex]:
    fixture = FixtureIndex()
    fixture.add(
        "duo",
        make_wheel("duo", "1.0", tag=LINUX, payload=200 << 10),
        make_wheel("duo", "1.0", tag=WINDOWS, payload=200 << 10),
    )
    fixture.throttle = THROTTLE
    with serve_index(fixture):
        yield fixture


def sync_args(target: str, index: FixtureIndex, platform: str, state: Path) -> list[str]:
    return [
        *("sync", "duo", "--to", target, "--index-url", index.url),
        *("--python", "3.12", "--platform", platform, "--only-binary"),
        *("--state", str(state), "--json", "--no-progress"),
    ]


async def tagged_files(store: Store) -> dict[str, str]:
    """The files duo:1.0 lists, each read down to its bytes: filename -> sha256."""
    manifest = await store.get_manifest("duo", "1.0")
    assert manifest is not None, "duo:1.0 is not tagged"
    files = {}
    for entry in json.loads(manifest.body)["manifests"]:
        child = await store.get_manifest("duo", entry["digest"])
        assert child is not None, entry["digest"]
        layer = json.loads(child.body)["layers"][0]
        data = b"".join([chunk async for chunk in store.open_blob("duo", layer["digest"])])
        sha256 = hashlib.sha256(data).hexdigest()
        assert layer["digest"] == f"sha256:{sha256}"
        assert entry["annotations"][fmt.A_SHA256] == sha256
        files[entry["annotations"][fmt.A_FILENAME]] = sha256
    return files


def open_store(kind: str, where: Path, registry: RegistryServer, prefix: str) -> Store:
    if kind == "layout":
        return LayoutStore(where / "mirror", create=False)
    return RegistryStore(registry.host, prefix, plain_http=True)


@pytest.mark.parametrize("kind", ["layout", "registry"])
async def test_two_syncs_of_one_version_at_once_leave_the_union(
    kind: str, index: FixtureIndex, registry: RegistryServer, tmp_path: Path
) -> None:
    env = cli_env(tmp_path / "home")
    expected = {name: f.sha256 for name, f in index.files_by_name().items()}
    for round_ in range(ROUNDS):
        where = tmp_path / f"round-{round_}"
        where.mkdir()
        prefix = f"race-{kind}-{tmp_path.name[-6:].lower().replace('_', '-')}-{round_}"
        target = f"oci:{where / 'mirror'}" if kind == "layout" else f"{registry.host}/{prefix}"
        with ExitStack() as stack:
            started = [
                (
                    stack.enter_context(
                        cli_process(
                            sync_args(target, index, platform, where / f"{name}.sqlite"),
                            env,
                            stdout=where / f"{name}.out",
                            stderr=where / f"{name}.err",
                        )
                    ),
                    name,
                )
                for name, platform in WRITERS.items()
            ]
            results = [
                finish(process, where / f"{name}.out", where / f"{name}.err", timeout=120)
                for process, name in started
            ]
        for result in results:
            assert result.returncode == 0, result.describe()
        store = open_store(kind, where, registry, prefix)
        try:
            assert await tagged_files(store) == expected, f"round {round_}"
        finally:
            await store.aclose()

    # A rerun of one writer, on the last round's target, keeps the other's file.
    again = run_cli(sync_args(target, index, WRITERS["linux"], where / "linux.sqlite"), env)
    assert again.returncode == 0, again.describe()
    store = open_store(kind, where, registry, prefix)
    try:
        assert await tagged_files(store) == expected
    finally:
        await store.aclose()
