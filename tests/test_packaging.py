"""The distributions: the wheel and sdist build offline and hold what a user installs.

Built with ``python -m build --no-isolation`` so no network is needed: the
build backend (hatchling) must be installed, as the ``test`` extra does.
``nox -s package`` goes further: it installs the wheel with pipx and uv.
"""

from __future__ import annotations

import configparser
import email.parser
import importlib.util
import subprocess
import sys
import tarfile
import zipfile
from email.message import Message
from pathlib import Path

import pytest

import oci_pypi_sync

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT = 300
HOME = "https://github.com/oci-pypi-sync/oci-pypi-sync"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("hatchling") is None or importlib.util.find_spec("build") is None,
    reason="building offline needs the build backend (hatchling) and build installed: "
    "pip install -e '.[test]'",
)


def _build(kind: str, outdir: Path) -> Path:
    result = subprocess.run(
        [sys.executable, "-m", "build", f"--{kind}", "--no-isolation", "--outdir", str(outdir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    pattern = "*.whl" if kind == "wheel" else "*.tar.gz"
    (built,) = outdir.glob(pattern)
    return built


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build("wheel", tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build("sdist", tmp_path_factory.mktemp("sdist"))


def _dist_info(names: list[str]) -> str:
    (directory,) = {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}
    return directory


def _metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(f"{_dist_info(archive.namelist())}/METADATA").decode("utf-8")
    return email.parser.Parser().parsestr(text)


def test_wheel_is_named_for_the_version_in_init(wheel: Path) -> None:
    assert wheel.name == f"oci_pypi_sync-{oci_pypi_sync.__version__}-py3-none-any.whl"


def test_wheel_ships_the_package_typed_and_licensed(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert archive.read("oci_pypi_sync/py.typed") == b""
    assert "oci_pypi_sync/__init__.py" in names
    assert "oci_pypi_sync/cli/__init__.py" in names
    assert "oci_pypi_sync/stores/registry.py" in names
    assert "oci_pypi_sync/serve/__init__.py" in names
    assert not [n for n in names if n.startswith(("tests/", "docs/", "benchmarks/"))]
    info = _dist_info(names)
    licenses = [n for n in names if n.startswith(f"{info}/") and n.endswith("/LICENSE")]
    assert len(licenses) == 1
    with zipfile.ZipFile(wheel) as archive:
        assert b"Apache License" in archive.read(licenses[0])[:200]


def test_wheel_metadata_is_complete(wheel: Path) -> None:
    metadata = _metadata(wheel)
    assert metadata["Name"] == "oci-pypi-sync"
    assert metadata["Version"] == oci_pypi_sync.__version__
    assert metadata["Requires-Python"] == ">=3.11"
    assert "Apache-2.0" in (metadata["License-Expression"] or metadata["License"] or "")
    assert metadata["Summary"].startswith("Mirror Python packages")
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert "oci-pypi sync" in metadata.get_payload()
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL") or [])
    assert urls == {
        "Homepage": HOME,
        "Documentation": "https://oci-pypi-sync.github.io/oci-pypi-sync/",
        "Changelog": f"{HOME}/blob/main/CHANGELOG.md",
        "Issues": f"{HOME}/issues",
        "Source": HOME,
    }
    classifiers = metadata.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers
    assert "Programming Language :: Python :: 3.11" in classifiers
    requires = {
        r.split(">", 1)[0].split("[", 1)[0].split(";", 1)[0].strip()
        for r in metadata.get_all("Requires-Dist") or []
    }
    assert {"aiohttp", "click", "packaging", "resolvelib", "starlette", "uvicorn"} <= requires


def test_wheel_declares_the_oci_pypi_command(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(f"{_dist_info(archive.namelist())}/entry_points.txt").decode()
    entry_points = configparser.ConfigParser()
    entry_points.read_string(text)
    assert dict(entry_points["console_scripts"]) == {"oci-pypi": "oci_pypi_sync.cli:main"}


def test_the_entry_point_prints_the_version() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from oci_pypi_sync.cli import main; main()", "--version"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"oci-pypi, version {oci_pypi_sync.__version__}"


def test_sdist_holds_the_sources_tests_docs_and_license(sdist: Path) -> None:
    prefix = f"oci_pypi_sync-{oci_pypi_sync.__version__}"
    assert sdist.name == f"{prefix}.tar.gz"
    with tarfile.open(sdist) as archive:
        names = set(archive.getnames())
    for member in (
        "pyproject.toml",
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "mkdocs.yml",
        "noxfile.py",
        "oci_pypi_sync/py.typed",
        "tests/test_packaging.py",
        "docs/format.md",
        "docs/recipes/files/mirror.toml",
    ):
        assert f"{prefix}/{member}" in names, member
