"""``oci-pypi serve`` never completes a response with bytes that fail their digest.

Real wheels are synced from a fixture index into a layout, a packed layout
and a registry of the test's own; then two bytes of a blob are flipped
where each keeps it (the layout's blob file, the tar, the registry's
storage directory) and the file is fetched over real sockets from the
server, by httpx and by pip. A damaged local blob is a 502 before any byte;
a damaged registry blob is a transfer cut short before its last byte; pip
fails instead of installing. Intact files, whole and in ranges, still come
back byte for byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import require_registry
from fixture_index import FixtureFile, FixtureIndex, serve_index
from packaging.requirements import Requirement
from registry_server import RegistryServer, running_registry
from serve_thread import serving as serve_in_thread
from test_serve_install import _env, installed, wheel

from oci_pypi_sync.engine.run import SyncOptions, sync
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.stores.layout import LayoutStore
from oci_pypi_sync.stores.protocols import Store
from oci_pypi_sync.stores.tarball import pack_layout
from oci_pypi_sync.stores.targets import open_store, parse_target

IMMUTABLE = "public, max-age=31536000, immutable"
PREFIX = "integrity"


@dataclass(frozen=True)
class Mirror:
    """The files synced, and where the layout, the tar and the registry hold them."""

    files: dict[str, FixtureFile]
    layout: Path
    tar: Path
    registry: RegistryServer


def _files() -> list[FixtureFile]:
    # Distinct bytes per file, so flipping one blob touches one file only.
    return [wheel("sound", "1.0"), wheel("damaged", "1.0"), wheel("damaged", "2.0")]


async def _sync(url: str, store: Store) -> None:
    async with IndexClient(url) as client:
        report = await sync(
            [Requirement("sound"), Requirement("damaged")], client, store, SyncOptions()
        )
    await store.aclose()
    assert not report.failed, report


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    require_registry()
    root = tmp_path_factory.mktemp("integrity")
    index = FixtureIndex()
    for file in _files():
        index.add(file.filename.split("-")[0], file)
    with (
        running_registry(root / "registry") as registry,
        serve_index(index),
        ThreadPoolExecutor(1) as pool,
    ):
        layout = root / "layout"
        pool.submit(asyncio.run, _sync(index.url, LayoutStore(layout))).result()
        target = open_store(parse_target(f"{registry.host}/{PREFIX}"))
        pool.submit(asyncio.run, _sync(index.url, target)).result()
        tar = root / "mirror.tar"
        pack_layout(layout, tar)
        yield Mirror(index.files_by_name(), layout, tar, registry)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def flip_two_bytes(path: Path, offset: int = 0) -> None:
    """Change two bytes in place (same inode), the way a disk or a hand damages a file."""
    with path.open("r+b") as handle:
        handle.seek(offset + 40)
        pair = handle.read(2)
        handle.seek(offset + 40)
        handle.write(bytes(b ^ 0xFF for b in pair))


def registry_blob(registry: RegistryServer, digest: str) -> Path:
    hexdigest = digest.removeprefix("sha256:")
    return (
        registry.root / f"storage/docker/registry/v2/blobs/sha256/{hexdigest[:2]}/{hexdigest}/data"
    )


def tar_offset(tar: Path, digest: str) -> int:
    import tarfile

    with tarfile.open(tar) as archive:
        member = archive.getmember(f"blobs/sha256/{digest.removeprefix('sha256:')}")
        return member.offset_data


@contextmanager
def serving(store: Store) -> Iterator[str]:
    """``oci-pypi serve`` over ``store`` on 127.0.0.1, in a thread; yields the base URL."""
    with serve_in_thread(store, log_level="critical") as base:
        yield base


def file_url(base: str, filename: str, data: bytes) -> str:
    project = filename.split("-")[0]
    return f"{base}/files/{project}/{sha256(data)}/{filename}"


@dataclass(frozen=True)
class Fetched:
    """What a client got: status, headers, the bytes received, and whether the body was complete."""

    status: int
    headers: httpx.Headers
    body: bytes
    complete: bool


def fetch(url: str, headers: dict[str, str] | None = None) -> Fetched:
    """GET over a fresh connection, keeping whatever arrived if the transfer breaks."""
    received = bytearray()
    with httpx.Client(timeout=30) as client, client.stream("GET", url, headers=headers) as response:
        try:
            for chunk in response.iter_raw():
                received += chunk
        except httpx.TransportError:
            return Fetched(response.status_code, response.headers, bytes(received), False)
    return Fetched(response.status_code, response.headers, bytes(received), True)


def pip_install(base: str, target: Path, requirement: str) -> subprocess.CompletedProcess[str]:
    target.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--no-cache-dir", "--only-binary=:all:"),
            *("--retries", "0", "--timeout", "20", "--no-deps"),
            *("--index-url", f"{base}/simple/", "--target", str(target), requirement),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(target.parent),
        cwd=target.parent,
        check=False,
    )


def assert_intact_ranges(base: str, file: FixtureFile) -> None:
    url = file_url(base, file.filename, file.data)
    size = len(file.data)
    for header, (start, stop) in {
        "bytes=0-9": (0, 10),
        "bytes=100-": (100, size),
        "bytes=-22": (size - 22, size),
    }.items():
        got = fetch(url, {"Range": header})
        assert (got.status, got.complete) == (206, True), header
        assert got.body == file.data[start:stop], header
        assert got.headers["content-range"] == f"bytes {start}-{stop - 1}/{size}"


def test_a_damaged_layout_blob_is_a_502_and_pip_does_not_install_it(
    mirror: Mirror, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    subprocess.run(["cp", "-a", str(mirror.layout), str(layout)], check=True)
    sound = mirror.files["sound-1.0-py3-none-any.whl"]
    damaged = mirror.files["damaged-2.0-py3-none-any.whl"]
    blob = layout / "blobs" / "sha256" / sha256(damaged.data)
    with serving(LayoutStore(layout, create=False)) as base:
        url = file_url(base, damaged.filename, damaged.data)
        first = fetch(url)  # intact: verified, then served as immutable
        assert (first.status, first.complete, first.body) == (200, True, damaged.data)
        assert first.headers["cache-control"] == IMMUTABLE

        flip_two_bytes(blob)  # the same file, changed: hashed again
        for headers in (None, {"Range": "bytes=0-99"}, {"Range": "bytes=-10"}):
            got = fetch(url, headers)
            assert got.status == 502, headers
            assert "damaged bytes" in got.body.decode()
            assert "verify --repair" in got.body.decode()
            assert got.headers.get("cache-control") != IMMUTABLE
            assert damaged.data[:40] not in got.body

        ok = fetch(file_url(base, sound.filename, sound.data))
        assert (ok.status, ok.body, ok.headers["cache-control"]) == (200, sound.data, IMMUTABLE)
        assert_intact_ranges(base, sound)

        failed = pip_install(base, tmp_path / "pip" / "t", "damaged==2.0")
        assert failed.returncode != 0, failed.stdout
        assert "502" in failed.stdout + failed.stderr
        assert installed(tmp_path / "pip" / "t") == set()
        assert pip_install(base, tmp_path / "pip" / "ok", "sound").returncode == 0
        assert installed(tmp_path / "pip" / "ok") == {"sound-1.0"}

        flip_two_bytes(blob)  # mended: served again
        mended = fetch(url)
        assert (mended.status, mended.body) == (200, damaged.data)


def test_a_damaged_blob_in_a_packed_layout_is_a_502(mirror: Mirror, tmp_path: Path) -> None:
    tar = tmp_path / "mirror.tar"
    tar.write_bytes(mirror.tar.read_bytes())
    sound = mirror.files["sound-1.0-py3-none-any.whl"]
    damaged = mirror.files["damaged-1.0-py3-none-any.whl"]
    flip_two_bytes(tar, tar_offset(tar, "sha256:" + sha256(damaged.data)))
    with serving(open_store(parse_target(f"oci:{tar}"), create=False)) as base:
        got = fetch(file_url(base, damaged.filename, damaged.data))
        assert got.status == 502
        assert "damaged bytes" in got.body.decode()
        ok = fetch(file_url(base, sound.filename, sound.data))
        assert (ok.status, ok.body, ok.headers["cache-control"]) == (200, sound.data, IMMUTABLE)
        assert_intact_ranges(base, sound)


@pytest.mark.registry
def test_a_damaged_registry_blob_is_cut_short_and_pip_does_not_install_it(
    mirror: Mirror, tmp_path: Path
) -> None:
    sound = mirror.files["sound-1.0-py3-none-any.whl"]
    damaged = mirror.files["damaged-1.0-py3-none-any.whl"]
    data_file = registry_blob(mirror.registry, "sha256:" + sha256(damaged.data))
    original = data_file.read_bytes()
    flip_two_bytes(data_file)
    try:
        store = open_store(parse_target(f"{mirror.registry.host}/{PREFIX}"), create=False)
        with serving(store) as base:
            url = file_url(base, damaged.filename, damaged.data)
            for headers in (None, {"Range": "bytes=0-99"}, {"Range": "bytes=-10"}):
                got = fetch(url, headers)
                # Headers went out before the last chunk; the last chunk never does.
                assert got.status in (200, 206), headers
                assert not got.complete, headers
                assert len(got.body) < int(got.headers["content-length"]), headers
                assert got.headers["cache-control"] == "no-cache"

            first = fetch(file_url(base, sound.filename, sound.data))
            assert (first.status, first.complete, first.body) == (200, True, sound.data)
            assert first.headers["cache-control"] == "no-cache"  # checked only as it streamed
            again = fetch(file_url(base, sound.filename, sound.data))
            assert (again.body, again.headers["cache-control"]) == (sound.data, IMMUTABLE)
            assert_intact_ranges(base, sound)

            failed = pip_install(base, tmp_path / "pip" / "t", "damaged==1.0")
            assert failed.returncode != 0, failed.stdout
            assert installed(tmp_path / "pip" / "t") == set()
            assert pip_install(base, tmp_path / "pip" / "ok", "sound").returncode == 0
            assert installed(tmp_path / "pip" / "ok") == {"sound-1.0"}
    finally:
        data_file.write_bytes(original)


def test_the_registry_storage_layout_is_what_the_test_flips(mirror: Mirror) -> None:
    """The path the registry test damages really is the blob the registry serves."""
    damaged = mirror.files["damaged-1.0-py3-none-any.whl"]
    digest = "sha256:" + sha256(damaged.data)
    assert registry_blob(mirror.registry, digest).read_bytes() == damaged.data
    response = httpx.get(f"{mirror.registry.url}/v2/{PREFIX}/damaged/blobs/{digest}", timeout=10)
    assert response.content == damaged.data
    manifests = json.loads(
        httpx.get(
            f"{mirror.registry.url}/v2/{PREFIX}/damaged/manifests/1.0",
            headers={"Accept": "application/vnd.oci.image.index.v1+json"},
            timeout=10,
        ).content
    )["manifests"]
    assert len(manifests) == 1
    assert os.path.getsize(registry_blob(mirror.registry, digest)) == len(damaged.data)
