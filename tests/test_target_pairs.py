"""Target environments as exact pairs (``--target``) next to the cross product, run as a user
would: the CLI into a layout, the layout read back."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import cli_env, run_cli
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index

from oci_pypi_sync import format as fmt
from oci_pypi_sync.config import ConfigError, load_config, merge_settings
from oci_pypi_sync.plan.environments import TargetEnvironment
from oci_pypi_sync.stores.layout import LayoutStore

WHEELS = {
    "cp312-cp312-manylinux_2_28_x86_64": "3.12 on Linux",
    "cp312-cp312-win_amd64": "3.12 on Windows",
    "cp311-cp311-manylinux_2_28_x86_64": "3.11 on Linux",
    "cp311-cp311-win_amd64": "3.11 on Windows",
}


@pytest.fixture
def index() -> Iterator[FixtureIndex]:
    fixture = FixtureIndex()
    fixture.add("native", *(make_wheel("native", "1.0", tag=tag) for tag in WHEELS))
    fixture.add("native", make_sdist("native", "1.0"))
    with serve_index(fixture):
        yield fixture


def mirrored(layout: Path) -> dict[str, str]:
    """Filename to sha256 of the bytes the layout holds for native 1.0."""
    store = LayoutStore(layout)
    found: dict[str, str] = {}

    async def read() -> None:
        manifest = await store.get_manifest("native", "1.0")
        assert manifest is not None
        _, entries = fmt.parse_release_index(manifest.body)
        for entry in entries:
            child = await store.get_manifest("native", entry.digest)
            assert child is not None
            layer = json.loads(child.body)["layers"][0]["digest"]
            data = store.blob_path(layer).read_bytes()
            found[entry.annotations[fmt.A_FILENAME]] = hashlib.sha256(data).hexdigest()

    asyncio.run(read())
    return found


def sync(index: FixtureIndex, home: Path, *args: str) -> dict[str, str]:
    layout = home / "mirror"
    result = run_cli(
        ["sync", "native", "--to", f"oci:{layout}", "-i", index.url, "--json", *args],
        cli_env(home),
    )
    assert result.returncode == 0, result.describe()
    files = mirrored(layout)
    originals = index.files_by_name()
    assert all(hashlib.sha256(originals[n].data).hexdigest() == d for n, d in files.items())
    return files


def wheel_tags(files: dict[str, str]) -> list[str]:
    return sorted(WHEELS[name.split("-", 2)[2].removesuffix(".whl")] for name in files)


def test_pairs_mirror_exactly_the_machines_named(index: FixtureIndex, tmp_path: Path) -> None:
    files = sync(
        index,
        tmp_path / "pairs",
        "--only-binary",
        "--target",
        "3.12/manylinux_2_28_x86_64",
        "--target",
        "3.11/windows/amd64",
    )
    assert wheel_tags(files) == ["3.11 on Windows", "3.12 on Linux"]


def test_the_cross_product_stays_available(index: FixtureIndex, tmp_path: Path) -> None:
    files = sync(
        index,
        tmp_path / "cross",
        "--only-binary",
        *("--python", "3.12", "--python", "3.11"),
        *("--platform", "linux/amd64", "--platform", "windows/amd64"),
    )
    assert wheel_tags(files) == [
        "3.11 on Linux",
        "3.11 on Windows",
        "3.12 on Linux",
        "3.12 on Windows",
    ]


def test_pairs_from_a_config_file_and_the_environment(index: FixtureIndex, tmp_path: Path) -> None:
    config = tmp_path / "mirror.toml"
    config.write_text(
        "[sync]\nonly-binary = true\n"
        "[[sync.target]]\npython = '3.12'\nplatform = 'linux/amd64'\n"
        "[[sync.target]]\npython = '3.11'\nplatform = 'win_amd64'\n"
    )
    files = sync(index, tmp_path / "file", "--config", str(config))
    assert wheel_tags(files) == ["3.11 on Windows", "3.12 on Linux"]

    home = tmp_path / "env"
    env = cli_env(home) | {"OCI_PYPI_TARGET": "3.11/linux/amd64, 3.12/windows/amd64"}
    layout = home / "mirror"
    result = run_cli(
        ["sync", "native", "--only-binary", "--to", f"oci:{layout}", "-i", index.url], env
    )
    assert result.returncode == 0, result.describe()
    assert wheel_tags(mirrored(layout)) == ["3.11 on Linux", "3.12 on Windows"]


def test_a_bad_pair_is_one_usage_error_naming_it(index: FixtureIndex, tmp_path: Path) -> None:
    result = run_cli(
        ["sync", "native", "-i", index.url, "--dry-run", "--target", "3.12"], cli_env(tmp_path)
    )
    assert result.returncode == 2, result.describe()
    assert "--target: target '3.12' is not PYTHON/PLATFORM" in result.stderr
    assert "Traceback" not in result.stderr
    assert index.requests == []


def test_the_file_takes_tables_and_strings(tmp_path: Path) -> None:
    path = tmp_path / "mirror.toml"
    path.write_text(
        "[sync]\ntarget = [{ python = '3.12', platform = 'linux/arm64' }, '3.11/darwin/arm64']\n"
    )
    config = load_config(path)
    assert config.targets == ("3.12/linux/arm64", "3.11/darwin/arm64")
    assert merge_settings({}, {}, config).environments() == (
        TargetEnvironment((3, 11), "macosx_14_0_arm64"),
        TargetEnvironment((3, 12), "manylinux_2_28_aarch64"),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("target = [{ python = '3.12' }]", "each table needs python and platform"),
        ("target = [{ python = '3.12', platform = 'x', abi = 'cp312' }]", "unknown key 'abi'"),
        ("target = [3]", "got an array holding an integer"),
        ("target = '3.12/linux/amd64'", "expected an array of tables"),
        ("target = ['3.12/nowhere']", "platform 'nowhere' is not a wheel platform tag"),
    ],
)
def test_bad_pairs_in_the_file_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mirror.toml"
    path.write_text(f"[sync]\n{text}\n")
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    assert "[sync] target" in str(caught.value)


def test_targets_alternating_on_one_state_file_keep_each_other_unchanged(
    index: FixtureIndex, tmp_path: Path
) -> None:
    layout = tmp_path / "mirror"
    state = tmp_path / "state.sqlite"
    linux = ["--target", "3.12/manylinux_2_28_x86_64"]
    windows = ["--target", "3.11/windows/amd64"]

    def run(target: list[str]) -> dict[str, Any]:
        args = ["sync", "native", "--only-binary", "--to", f"oci:{layout}", "--json"]
        result = run_cli(
            [*args, "--state", str(state), "-i", index.url, *target], cli_env(tmp_path)
        )
        assert result.returncode == 0, result.describe()
        report: dict[str, Any] = result.json()
        return report

    assert run(linux)["totals"]["pushed"] == 1
    assert run(windows)["totals"]["pushed"] == 1
    for target in (linux, windows, linux):
        again = run(target)
        assert again["totals"]["pushed"] == 0
        assert again["totals"]["projects_unchanged"] == 1  # no target read at all
    assert wheel_tags(mirrored(layout)) == ["3.11 on Windows", "3.12 on Linux"]
    # A page that changes ends what the other selection knew: it is checked again.
    index.add("native", make_wheel("native", "1.0", tag="cp313-cp313-win_amd64"))
    assert run(linux)["totals"]["projects_unchanged"] == 0
    assert run(windows)["totals"]["projects_unchanged"] == 0
    assert run(windows)["totals"]["projects_unchanged"] == 1
