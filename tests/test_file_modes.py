"""Files honour the umask (a layout synced by one user is readable by another); state is private."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index
from registry_server import RegistryServer


@pytest.fixture
def index() -> Iterator[FixtureIndex]:
    fixture = FixtureIndex()
    fixture.add("tool", make_wheel("tool", "1.0"), make_sdist("tool", "1.0"))
    with serve_index(fixture):
        yield fixture


def oci_pypi(*args: str, cwd: Path, index: FixtureIndex, umask: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "OCI_PYPI_"))}
    env.update(XDG_STATE_HOME=str(cwd / "state-home"), OCI_PYPI_INDEX_URL=index.url)
    result = subprocess.run(
        [sys.executable, "-m", "oci_pypi_sync", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        umask=umask,
    )
    assert result.returncode == 0, result.stderr


def modes(root: Path) -> dict[str, int]:
    """Every entry under ``root`` with its permission bits, hidden files included."""
    return {
        str(path.relative_to(root)): stat.S_IMODE(path.stat().st_mode)
        for path in [root, *root.rglob("*")]
    }


@pytest.mark.parametrize(
    ("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)]
)
def test_a_layout_and_a_tar_get_the_umasks_modes_and_the_state_file_0600(
    index: FixtureIndex, tmp_path: Path, umask: int, file_mode: int, dir_mode: int
) -> None:
    oci_pypi("sync", "tool", "--to", "oci:mirror", cwd=tmp_path, index=index, umask=umask)
    oci_pypi("copy", "oci:mirror", "oci:carry.tar", cwd=tmp_path, index=index, umask=umask)

    state = ".oci-pypi-state.sqlite"
    layout = modes(tmp_path / "mirror")
    private = {name for name in layout if name.startswith(state) and not name.endswith(".lock")}
    assert state in private
    assert {layout[name] for name in private} == {0o600}
    files = {name: mode for name, mode in layout.items() if (tmp_path / "mirror" / name).is_file()}
    blobs = [name for name in files if name.startswith("blobs/sha256/")]
    assert len(blobs) >= 5
    others = {name: mode for name, mode in files.items() if mode != file_mode}
    assert others == dict.fromkeys(private, 0o600)
    dirs = {mode for name, mode in layout.items() if (tmp_path / "mirror" / name).is_dir()}
    assert dirs == {dir_mode}
    assert stat.S_IMODE((tmp_path / "carry.tar").stat().st_mode) == file_mode


def test_a_registry_targets_state_directory_follows_the_umask(
    index: FixtureIndex, registry: RegistryServer, tmp_path: Path
) -> None:
    oci_pypi(
        "sync", "tool", "--to", f"{registry.host}/modes", cwd=tmp_path, index=index, umask=0o022
    )
    home = tmp_path / "state-home" / "oci-pypi"
    assert stat.S_IMODE(home.stat().st_mode) == 0o755
    (state,) = home.glob("*.sqlite")
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
