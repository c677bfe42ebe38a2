"""A crafted packed layout (a tar carried across an air gap) cannot write outside its staging."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index

from oci_pypi_sync.errors import LayoutError
from oci_pypi_sync.stores.layout import LayoutStore, blob_hex

ESCAPE = "../" + "v" * 61  # 64 characters, the length of a hex digest
PRECIOUS = b"precious, and outside the staging directory\n"


@pytest.fixture
def index() -> Iterator[FixtureIndex]:
    fixture = FixtureIndex()
    fixture.add("tool", make_wheel("tool", "1.0"), make_sdist("tool", "1.0"))
    with serve_index(fixture):
        yield fixture


def oci_pypi(
    *args: str, cwd: Path, index: FixtureIndex | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "OCI_PYPI_"))}
    env["XDG_STATE_HOME"] = str(cwd / "state-home")
    if index is not None:
        env["OCI_PYPI_INDEX_URL"] = index.url
    return subprocess.run(
        [sys.executable, "-m", "oci_pypi_sync", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def evil_tar(path: Path, member: str) -> Path:
    """A packed layout that is valid but for one member named ``member``."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        _add(archive, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json"}
        _add(archive, "index.json", json.dumps({**index, "manifests": []}).encode())
        _add(archive, member, b"attacker's bytes")
    return path


@pytest.mark.parametrize(
    "member",
    [
        f"blobs/sha256/{ESCAPE}",
        f"./blobs/sha256/{ESCAPE}",
        "blobs/sha256/../../../outside",
        "/etc/oci-pypi-test-absolute",
    ],
)
@pytest.mark.parametrize("command", ["copy", "verify"])
def test_a_member_leaving_the_staging_directory_is_refused(
    index: FixtureIndex, tmp_path: Path, member: str, command: str
) -> None:
    victim = tmp_path / ("v" * 61 + ".partial")  # where the escape would open and truncate
    victim.write_bytes(PRECIOUS)
    evil = evil_tar(tmp_path / "evil.tar", member)
    before = evil.read_bytes()
    if command == "copy":
        assert (
            oci_pypi("sync", "tool", "--to", "oci:src", cwd=tmp_path, index=index).returncode == 0
        )
        result = oci_pypi("copy", "oci:src", "oci:evil.tar", cwd=tmp_path)
    else:
        result = oci_pypi("verify", "--repair", "oci:evil.tar", cwd=tmp_path, index=index)
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: evil.tar: member ")
    assert "points outside the layout; refusing this tar" in line
    assert victim.read_bytes() == PRECIOUS
    assert evil.read_bytes() == before
    assert not (tmp_path / "outside").exists()
    staging = tmp_path / "evil.tar.staging"
    assert not staging.exists() or not any((staging / "blobs").rglob("*"))


def test_reading_a_crafted_tar_is_refused_too(tmp_path: Path) -> None:
    evil_tar(tmp_path / "evil.tar", f"blobs/sha256/{ESCAPE}")
    result = oci_pypi("copy", "oci:evil.tar", "oci:out", cwd=tmp_path)
    assert result.returncode != 0
    assert "points outside the layout" in result.stderr
    assert not (tmp_path / "out" / "blobs").exists()


def test_members_that_are_not_digests_are_not_unpacked(index: FixtureIndex, tmp_path: Path) -> None:
    """A name under blobs/sha256/ that is not 64 lower-case hex digits is never a file name."""
    assert oci_pypi("sync", "tool", "--to", "oci:src", cwd=tmp_path, index=index).returncode == 0
    evil = evil_tar(tmp_path / "odd.tar", "blobs/sha256/" + "A" * 64)
    result = oci_pypi("copy", "oci:src", f"oci:{evil.name}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with tarfile.open(evil) as archive:
        names = archive.getnames()
    assert "blobs/sha256/" + "A" * 64 not in names
    assert len([n for n in names if n.startswith("blobs/sha256/")]) >= 4  # the copied blobs


@pytest.mark.parametrize(
    "digest",
    [
        f"sha256:{ESCAPE}",
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 63 + "/",
        "sha256:" + "a" * 63 + "\0",
        "sha512:" + "a" * 128,
        "a" * 64,
    ],
)
def test_blob_names_follow_the_digest_grammar(tmp_path: Path, digest: str) -> None:
    with pytest.raises(LayoutError, match="malformed digest"):
        blob_hex(digest)
    store = LayoutStore(tmp_path / "layout")
    with pytest.raises(LayoutError):
        store.blob_path(digest)
    assert blob_hex("sha256:" + "a" * 64) == "a" * 64
