"""Real pip and real uv installing from ``oci-pypi serve`` over real sockets on 127.0.0.1.

Small real wheels (with ``Requires-Dist`` and ``Provides-Extra``) are
synced from a fixture index into a layout; the fixture index is then shut
down, and the installers see nothing but the server: their configuration
files are off, and every other host goes through a proxy that does not
exist.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fixture_index import FixtureFile, FixtureIndex, serve_index
from packaging.requirements import Requirement
from serve_thread import serving

from oci_pypi_sync.engine.run import SyncOptions, sync
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.plan.select import SelectionOptions
from oci_pypi_sync.serve import AccessRecord
from oci_pypi_sync.serve.pages import JSON_V1
from oci_pypi_sync.stores.layout import LayoutStore

BIN = Path(sys.executable).parent
UV = BIN / "uv"
_ZIP_TIME = (2024, 1, 1, 0, 0, 0)
# As the index wrote it (no fraction of a second): kept to the character.
BETA_2_UPLOADED = "2025-06-01T12:00:00Z"


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def wheel(
    name: str,
    version: str,
    requires: tuple[str, ...] = (),
    extras: tuple[str, ...] = (),
    yanked: bool | str = False,
) -> FixtureFile:
    """A pure-Python wheel with a module, a RECORD, and its METADATA also served beside it."""
    dist = f"{name}-{version}"
    metadata = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Provides-Extra: {extra}\n" for extra in extras)
        + "".join(f"Requires-Dist: {requirement}\n" for requirement in requires)
    ).encode()
    members = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{dist}.dist-info/METADATA": metadata,
        f"{dist}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: oci-pypi-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in members.items())
    members[f"{dist}.dist-info/RECORD"] = (record + f"{dist}.dist-info/RECORD,,\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in members.items():
            archive.writestr(zipfile.ZipInfo(path, _ZIP_TIME), data)
    return FixtureFile(f"{dist}-py3-none-any.whl", buffer.getvalue(), metadata, yanked=yanked)


def _fixture() -> FixtureIndex:
    index = FixtureIndex()
    index.add("alpha", wheel("alpha", "1.0", requires=("beta>=1.5",)))
    newer = wheel("beta", "2.0")
    newer.upload_time = BETA_2_UPLOADED
    index.add("beta", wheel("beta", "1.0"), newer)
    index.add(
        "gamma",
        wheel("gamma", "1.0", requires=('delta>=1; extra == "fast"',), extras=("fast",)),
    )
    index.add("delta", wheel("delta", "1.0"))
    index.add("yankme", wheel("yankme", "1.0"), wheel("yankme", "2.0", yanked="broken build"))
    return index


@dataclass
class Served:
    """A running server: its simple URL and every request it answered."""

    url: str
    records: list[AccessRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def since(self, mark: int) -> list[AccessRecord]:
        with self.lock:
            return self.records[mark:]

    def mark(self) -> int:
        with self.lock:
            return len(self.records)


class _Collect(logging.Handler):
    def __init__(self, served: Served) -> None:
        super().__init__(logging.INFO)
        self.served = served

    def emit(self, record: logging.LogRecord) -> None:
        access = getattr(record, "access", None)
        if isinstance(access, AccessRecord):
            with self.served.lock:
                self.served.records.append(access)


async def _sync(url: str, layout: Path) -> None:
    options = SyncOptions(selection=SelectionOptions(include_yanked=True))
    names = ("alpha", "beta", "gamma", "delta", "yankme")
    async with IndexClient(url) as client:
        report = await sync([Requirement(n) for n in names], client, LayoutStore(layout), options)
    assert not report.failed, report


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    layout = tmp_path_factory.mktemp("install") / "mirror"
    with serve_index(_fixture()) as index, ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _sync(index.url, layout)).result()
    # The fixture index is gone now: only the mirror is left to install from.
    access = logging.getLogger("oci_pypi_sync.serve.access")
    with serving(LayoutStore(layout, create=False)) as base:
        result = Served(f"{base}/simple/")
        handler = _Collect(result)
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        try:
            yield result
        finally:
            access.removeHandler(handler)


def _env(home: Path) -> dict[str, str]:
    """No inherited pip/uv settings; any host but 127.0.0.1 goes to a proxy that is not there."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "UV_")) and "proxy" not in k.lower()
    }
    dead_proxy = "http://127.0.0.1:9"
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        PIP_CONFIG_FILE="/dev/null",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        UV_NO_CONFIG="1",
        UV_PYTHON_DOWNLOADS="never",
        HTTP_PROXY=dead_proxy,
        HTTPS_PROXY=dead_proxy,
        ALL_PROXY=dead_proxy,
        http_proxy=dead_proxy,
        https_proxy=dead_proxy,
        NO_PROXY="127.0.0.1",
        no_proxy="127.0.0.1",
    )
    return env


def _run(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=600, env=_env(home), cwd=home, check=False
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


def pip_install(served: Served, target: Path, *requirements: str) -> set[str]:
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "--only-binary=:all:",
            "--index-url",
            served.url,
            "--target",
            str(target),
            *requirements,
        ],
        target.parent,
    )
    return installed(target)


def uv_install(served: Served, target: Path, *requirements: str) -> set[str]:
    _run(
        [
            str(UV),
            "pip",
            "install",
            "--no-cache",
            "--python",
            sys.executable,
            "--index-url",
            served.url,
            "--target",
            str(target),
            *requirements,
        ],
        target.parent,
    )
    return installed(target)


def installed(target: Path) -> set[str]:
    return {path.name.removesuffix(".dist-info") for path in target.glob("*.dist-info")}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def test_pip_installs_dependencies_and_extras(served: Served, home: Path) -> None:
    assert pip_install(served, home / "t", "alpha", "gamma[fast]") == {
        "alpha-1.0",
        "beta-2.0",
        "gamma-1.0",
        "delta-1.0",
    }
    assert (home / "t" / "alpha" / "__init__.py").read_text() == "VERSION = '1.0'\n"


def test_pip_skips_a_yanked_version_unless_pinned(served: Served, home: Path) -> None:
    assert pip_install(served, home / "free", "yankme") == {"yankme-1.0"}
    assert pip_install(served, home / "pinned", "yankme==2.0") == {"yankme-2.0"}


def test_uv_installs_dependencies_and_extras(served: Served, home: Path) -> None:
    assert uv_install(served, home / "t", "alpha", "gamma[fast]") == {
        "alpha-1.0",
        "beta-2.0",
        "gamma-1.0",
        "delta-1.0",
    }
    assert (home / "t" / "gamma" / "__init__.py").read_text() == "VERSION = '1.0'\n"


def test_uv_skips_a_yanked_version_unless_pinned(served: Served, home: Path) -> None:
    assert uv_install(served, home / "free", "yankme") == {"yankme-1.0"}
    assert uv_install(served, home / "pinned", "yankme==2.0") == {"yankme-2.0"}


def test_uv_exclude_newer_sees_the_upload_times_of_the_index(served: Served, home: Path) -> None:
    """PEP 700 ``upload-time`` is served as the index wrote it, so cooldowns work."""
    page = httpx.get(served.url + "beta/", headers={"Accept": JSON_V1}).json()
    times = {f["filename"]: f["upload-time"] for f in page["files"]}
    assert times == {
        "beta-1.0-py3-none-any.whl": "2024-01-02T03:04:05.000000Z",
        "beta-2.0-py3-none-any.whl": BETA_2_UPLOADED,
    }
    assert page["versions"] == ["1.0", "2.0"]
    assert uv_install(served, home / "new", "beta") == {"beta-2.0"}
    cooled = ["--exclude-newer", "2025-06-01T11:59:59Z", "beta"]
    assert uv_install(served, home / "cooled", *cooled) == {"beta-1.0"}


def test_uv_resolves_from_metadata_without_downloading_wheels(served: Served, home: Path) -> None:
    mark = served.mark()
    requirements = home / "requirements.in"
    requirements.write_text("alpha\ngamma[fast]\nyankme\n")
    result = _run(
        [
            str(UV),
            "pip",
            "compile",
            "--no-cache",
            "--no-header",
            "--no-annotate",
            "--python",
            sys.executable,
            "--index-url",
            served.url,
            str(requirements),
        ],
        home,
    )
    pins = {line.strip() for line in result.stdout.splitlines() if "==" in line}
    assert pins == {"alpha==1.0", "beta==2.0", "gamma==1.0", "delta==1.0", "yankme==1.0"}
    seen = served.since(mark)
    files = [r for r in seen if r.path.startswith("/files/")]
    metadata = {r.path.rsplit("/", 1)[1] for r in files if r.path.endswith(".metadata")}
    assert metadata == {
        "alpha-1.0-py3-none-any.whl.metadata",
        "beta-2.0-py3-none-any.whl.metadata",
        "gamma-1.0-py3-none-any.whl.metadata",
        "delta-1.0-py3-none-any.whl.metadata",
        "yankme-1.0-py3-none-any.whl.metadata",
    }
    assert all(r.status == 200 for r in files)
    assert [r for r in files if not r.path.endswith(".metadata")] == []  # no wheel fetched
    pages = {r.path for r in seen if r.path.startswith("/simple/")}
    assert pages == {f"/simple/{n}/" for n in ("alpha", "beta", "gamma", "delta", "yankme")}


def test_pip_dry_run_resolves_from_metadata_without_downloading_wheels(
    served: Served, home: Path
) -> None:
    mark = served.mark()
    result = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "--dry-run",
            "--quiet",
            "--report",
            "-",
            "--index-url",
            served.url,
            "alpha",
        ],
        home,
    )
    report = json.loads(result.stdout)
    assert {
        item["metadata"]["name"]: item["metadata"]["version"] for item in report["install"]
    } == {
        "alpha": "1.0",
        "beta": "2.0",
    }
    files = [r.path for r in served.since(mark) if r.path.startswith("/files/")]
    assert sorted(path.rsplit("/", 1)[1] for path in files) == [
        "alpha-1.0-py3-none-any.whl.metadata",
        "beta-2.0-py3-none-any.whl.metadata",
    ]
