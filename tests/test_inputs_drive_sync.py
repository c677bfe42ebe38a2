"""requirements.txt, pylock.toml and a config file each drive a whole sync (the real CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index


@pytest.fixture
def index() -> Iterator[FixtureIndex]:
    fixture = FixtureIndex()
    fixture.add(
        "app",
        make_wheel("app", "1.0", tag="cp312-cp312-manylinux_2_17_x86_64"),
        make_wheel("app", "1.0", tag="cp312-cp312-win_amd64"),
        make_wheel("app", "1.0", tag="cp311-cp311-win_amd64"),
        make_sdist("app", "1.0"),
        make_wheel("app", "2.0"),
    )
    fixture.add("winonly", make_wheel("winonly", "0.3"), make_sdist("winonly", "0.3"))
    fixture.add("lib", make_wheel("lib", "5.0"), make_wheel("lib", "5.1"))
    with serve_index(fixture):
        yield fixture


def run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "OCI_PYPI_"))}
    base["XDG_STATE_HOME"] = str(cwd / "state")
    result = subprocess.run(
        [sys.executable, "-m", "oci_pypi_sync", "sync", "--json", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    document: dict[str, object] = json.loads(result.stdout)
    return document


def filenames(report: dict[str, object]) -> list[str]:
    files = report["files"]
    assert isinstance(files, list)
    return sorted(str(f["filename"]) for f in files)


def test_requirements_file_with_markers_and_hashes(index: FixtureIndex, tmp_path: Path) -> None:
    lib_51 = index.files_by_name()["lib-5.1-py3-none-any.whl"]
    (tmp_path / "base.txt").write_text("app==1.0\n")
    (tmp_path / "requirements.txt").write_text(
        "-r base.txt\n"
        "winonly ; sys_platform == 'win32'  # only on windows\n"
        f"lib --hash=sha256:{lib_51.sha256}\n"
    )
    args = ("-r", "requirements.txt", "--index-url", index.url, "--python", "3.12")
    linux = run(tmp_path, *args, "--platform", "linux/amd64", "--to", "oci:linux")
    assert filenames(linux) == [
        "app-1.0-cp312-cp312-manylinux_2_17_x86_64.whl",
        "app-1.0.tar.gz",
        "lib-5.1-py3-none-any.whl",  # the hash admits 5.1 only
    ]
    windows = run(tmp_path, *args, "--platform", "win_amd64", "--to", "oci:windows")
    assert filenames(windows) == [
        "app-1.0-cp312-cp312-win_amd64.whl",
        "app-1.0.tar.gz",
        "lib-5.1-py3-none-any.whl",
        "winonly-0.3-py3-none-any.whl",
        "winonly-0.3.tar.gz",
    ]


def test_pylock_mirrors_exactly_the_files_it_names(index: FixtureIndex, tmp_path: Path) -> None:
    files = index.files_by_name()
    wheel = files["app-1.0-cp312-cp312-win_amd64.whl"]
    lib = files["lib-5.0-py3-none-any.whl"]
    (tmp_path / "pylock.toml").write_text(
        'lock-version = "1.0"\n'
        'created-by = "test"\n\n'
        "[[packages]]\n"
        'name = "app"\nversion = "1.0"\n'
        f'wheels = [{{ name = "{wheel.filename}", '
        f'url = "https://files.index.test/{wheel.filename}", '
        f'hashes = {{ sha256 = "{wheel.sha256}" }} }}]\n\n'
        "[[packages]]\n"
        'name = "lib"\nversion = "5.0"\n'
        f'wheels = [{{ name = "{lib.filename}", url = "https://files.index.test/{lib.filename}", '
        f'hashes = {{ sha256 = "{lib.sha256}" }} }}]\n'
    )
    report = run(tmp_path, "--pylock", "pylock.toml", "--index-url", index.url, "--to", "oci:m")
    assert filenames(report) == [wheel.filename, lib.filename]


def test_config_file_with_environment_and_flag_overrides(
    index: FixtureIndex, tmp_path: Path
) -> None:
    (tmp_path / "mirror.toml").write_text(
        "[sync]\n"
        f'index-url = "{index.url}"\n'
        'to = "oci:from-config"\n'
        'requirements = ["app", "lib==5.0"]\n'
        'python = ["3.11"]\n'
        'platform = ["win_amd64"]\n'
        "latest = 1\n"
        "only-binary = true\n"
    )
    # latest=1 keeps app's newest version with a file for the target: 2.0 (pure wheel).
    report = run(tmp_path, "--config", "mirror.toml")
    assert filenames(report) == ["app-2.0-py3-none-any.whl", "lib-5.0-py3-none-any.whl"]
    assert (tmp_path / "from-config" / "oci-layout").is_file()

    # The environment beats the file; a flag beats the environment.
    env = {"OCI_PYPI_LATEST": "2", "OCI_PYPI_ONLY_BINARY": "0"}
    report = run(tmp_path, "--config", "mirror.toml", "--to", "oci:flagged", env=env)
    assert filenames(report) == [
        "app-1.0-cp311-cp311-win_amd64.whl",
        "app-1.0.tar.gz",
        "app-2.0-py3-none-any.whl",
        "lib-5.0-py3-none-any.whl",
    ]
    assert (tmp_path / "flagged" / "oci-layout").is_file()


def test_an_index_url_in_a_requirements_file_is_the_index_read(
    index: FixtureIndex, tmp_path: Path
) -> None:
    (tmp_path / "requirements.txt").write_text(f"--index-url {index.url}\nlib==5.0\n")
    env = {"PIP_INDEX_URL": "http://127.0.0.1:9/simple/", "PIP_CONFIG_FILE": os.devnull}
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "OCI_PYPI_"))}
    result = subprocess.run(
        [sys.executable, "-m", "oci_pypi_sync", "sync", "-v", "--json", "-r", "requirements.txt"],
        cwd=tmp_path,
        env={**base, **env, "XDG_STATE_HOME": str(tmp_path / "state")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert filenames(json.loads(result.stdout)) == ["lib-5.0-py3-none-any.whl"]
    assert ("GET", "/simple/lib/") in index.requests
    assert f"index {index.url} (from requirements.txt:1)" in result.stderr


def test_an_extra_index_url_in_a_requirements_file_stops_the_sync(
    index: FixtureIndex, tmp_path: Path
) -> None:
    (tmp_path / "requirements.txt").write_text(f"--extra-index-url {index.url}\nlib==5.0\n--pre\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "OCI_PYPI_"))}
    result = subprocess.run(
        [sys.executable, "-m", "oci_pypi_sync", "sync", "-r", "requirements.txt",
         "--index-url", index.url],
        cwd=tmp_path,
        env={**base, "XDG_STATE_HOME": str(tmp_path / "state")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: requirements.txt:1: --extra-index-url is not supported")
    assert index.requests == []
    assert not (tmp_path / "oci-pypi-mirror").exists()
