"""A hostile index: every input bounded, files kept as served, credentials on every ranged read.

The index is a recording server on 127.0.0.1 (tests/hostile_server.py):
each test asserts what the client sent where, and what the target holds.
Memory is not measured here (``nox -s bounds`` does that); these tests
check that each bound holds with a clear error.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixture_index import make_sdist, make_wheel
from hostile_server import (
    RecordingServer,
    Reply,
    Seen,
    file_entry,
    project_page,
    ranged,
)

from oci_pypi_sync.errors import IndexLimitError, InvalidPageError
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.index.records import DistributionFile
from oci_pypi_sync.limits import MAX_CORE_METADATA_BYTES, MAX_JSON_DEPTH, MAX_PAGE_BYTES

MiB = 1024 * 1024
JSON = "application/vnd.pypi.simple.v1+json"


def oci_pypi(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "OCI_PYPI_"))}
    env.update(XDG_STATE_HOME=str(cwd / "state-home"), NO_PROXY="127.0.0.1")
    return subprocess.run(
        [sys.executable, "-m", "oci_pypi_sync", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def gzip_of_zeros(size: int) -> bytes:
    """``size`` zero bytes, gzip-compressed without ever holding them."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as packed:
        block = bytes(MiB)
        for _ in range(size // MiB):
            packed.write(block)
        packed.write(bytes(size % MiB))
    return out.getvalue()


def sha256_of_zeros(size: int, prefix: bytes = b"") -> str:
    digest = hashlib.sha256(prefix)
    block = bytes(MiB)
    for _ in range(size // MiB):
        digest.update(block)
    digest.update(bytes(size % MiB))
    return digest.hexdigest()


def bomb_wheel(name: str, version: str, inflated: int) -> tuple[bytes, bytes]:
    """A wheel whose METADATA (a real header, then zeros) inflates to ``inflated`` bytes.

    Returns the wheel and the METADATA header (the zeros follow it).
    """
    header = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n".encode()
    dist = f"{name}-{version}.dist-info"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo(f"{dist}/METADATA")
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as member:
            member.write(header)
            left = inflated - len(header)
            while left > 0:
                member.write(bytes(min(MiB, left)))
                left -= MiB
        archive.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n")
        archive.writestr(f"{dist}/RECORD", "")
    return buffer.getvalue(), header


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    return tmp_path


# --- pages ----------------------------------------------------------------------------


async def _page_error(reply: Reply) -> Exception:
    with RecordingServer(lambda seen: reply) as server:
        async with IndexClient(f"{server.origin}/simple/") as client:
            with pytest.raises(Exception) as caught:
                await client.get_project_page("tool")
    return caught.value


async def test_a_gzip_bomb_page_stops_at_the_bound() -> None:
    bomb = gzip_of_zeros(MAX_PAGE_BYTES + 16 * MiB)
    assert len(bomb) < MiB
    error = await _page_error(
        Reply(200, [("Content-Type", JSON), ("Content-Encoding", "gzip")], bomb)
    )
    assert isinstance(error, IndexLimitError)
    assert "the page of 'tool'" in str(error)
    assert "exceeds 67,108,864 bytes (MAX_PAGE_BYTES)" in str(error)


async def test_a_page_bigger_than_the_bound_is_refused() -> None:
    def body() -> Iterator[bytes]:
        block = b" " * MiB
        for _ in range(MAX_PAGE_BYTES // MiB + 2):
            yield block

    error = await _page_error(Reply(200, [("Content-Type", JSON)], body()))
    assert isinstance(error, IndexLimitError)
    assert "(MAX_PAGE_BYTES)" in str(error)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 200_000])
async def test_a_deeply_nested_page_is_refused(depth: int) -> None:
    nested = "[" * depth + "]" * depth
    document = f'{{"meta": {{"api-version": "1.1"}}, "name": "tool", "files": [], "x": {nested}}}'
    error = await _page_error(Reply(200, [("Content-Type", JSON)], document.encode()))
    assert isinstance(error, InvalidPageError)
    assert f"nests deeper than {MAX_JSON_DEPTH} levels" in str(error)


async def test_a_corrupt_gzip_page_is_an_index_error() -> None:
    error = await _page_error(
        Reply(200, [("Content-Type", JSON), ("Content-Encoding", "gzip")], b"not gzip at all")
    )
    assert "does not decode as gzip" in str(error)


async def test_a_gzip_page_within_the_bound_is_read() -> None:
    sdist = make_sdist("tool", "1.0")
    page = json.dumps(
        {
            "meta": {"api-version": "1.1"},
            "name": "tool",
            "files": [file_entry(sdist.filename, "/files/x.tar.gz", sdist.data)],
        }
    ).encode()
    reply = Reply(200, [("Content-Type", JSON), ("Content-Encoding", "gzip")], gzip.compress(page))
    with RecordingServer(lambda seen: reply) as server:
        async with IndexClient(f"{server.origin}/simple/") as client:
            found = await client.get_project_page("tool")
    assert [f.filename for f in found.files] == [sdist.filename]


# --- files are kept as served ------------------------------------------------------------


def test_a_tar_gz_sent_with_content_encoding_gzip_keeps_its_bytes(tmp_path: Path) -> None:
    sdist = make_sdist("tool", "1.0")
    raw = gzip.compress(b"a tarball, compressed: its own bytes are the file" * 100)

    def handle(seen: Seen) -> Reply:
        if seen.path == "/simple/tool/":
            entry = file_entry(sdist.filename, f"/files/{sdist.filename}", raw)
            return project_page("tool", [entry])
        if seen.path == f"/files/{sdist.filename}":
            # a misconfigured server: the file's own gzip declared as an encoding
            headers = [("Content-Type", "application/x-tar"), ("Content-Encoding", "gzip")]
            return Reply(200, headers, raw)
        return Reply(404)

    with RecordingServer(handle) as server:
        result = oci_pypi(
            "sync", "tool", "--to", "oci:m", "--index-url", f"{server.origin}/simple/", cwd=tmp_path
        )
        (download,) = server.requests_to("/files/")
    assert result.returncode == 0, result.stderr
    assert download.headers["accept-encoding"] == "identity"
    blob = tmp_path / "m" / "blobs" / "sha256" / hashlib.sha256(raw).hexdigest()
    assert blob.read_bytes() == raw


# --- core metadata and wheels -----------------------------------------------------------------


def test_a_small_wheel_with_a_metadata_bomb_fails_alone(tmp_path: Path) -> None:
    """A wheel under the in-memory size whose METADATA inflates past the bound, and a .metadata
    served as a gzip bomb: the file fails with the bound named, the other file syncs."""
    inflated = MAX_CORE_METADATA_BYTES * 2
    wheel, header = bomb_wheel("bomb", "1.0", inflated)
    assert len(wheel) < MiB
    metadata_sha256 = sha256_of_zeros(inflated - len(header), header)
    metadata_gzip = gzip.compress(header) + gzip_of_zeros(inflated - len(header))
    sdist = make_sdist("bomb", "1.0")
    filename = "bomb-1.0-py3-none-any.whl"

    def handle(seen: Seen) -> Reply:
        if seen.path == "/simple/bomb/":
            entries = [
                file_entry(
                    filename,
                    f"/files/{filename}",
                    wheel,
                    **{"core-metadata": {"sha256": metadata_sha256}},
                ),
                file_entry(sdist.filename, f"/files/{sdist.filename}", sdist.data),
            ]
            return project_page("bomb", entries)
        if seen.path == f"/files/{filename}":
            return Reply(200, [("Content-Type", "application/zip")], wheel)
        if seen.path == f"/files/{filename}.metadata":
            return Reply(200, [("Content-Encoding", "gzip")], metadata_gzip)
        if seen.path == f"/files/{sdist.filename}":
            return Reply(200, [], sdist.data)
        return Reply(404)

    with RecordingServer(handle) as server:
        result = oci_pypi(
            "sync", "bomb", "--json", "--retries", "0", "--to", "oci:m",
            "--index-url", f"{server.origin}/simple/", cwd=tmp_path,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    files = {f["filename"]: f for f in json.loads(result.stdout)["files"]}
    assert files[sdist.filename]["action"] == "pushed"
    assert files[filename]["action"] == "failed"
    assert "(MAX_CORE_METADATA_BYTES)" in files[filename]["error"]


@pytest.mark.parametrize(
    ("inflated", "bound"),
    [
        (MAX_CORE_METADATA_BYTES * 2, "MAX_CORE_METADATA_BYTES"),
        (2 * MiB, "MAX_METADATA_RATIO"),  # zeros: far more than 100 times their deflated size
    ],
)
async def test_a_wheel_metadata_bomb_read_by_ranges_is_refused(inflated: int, bound: str) -> None:
    wheel, _ = bomb_wheel("bomb", "1.0", inflated)
    filename = "bomb-1.0-py3-none-any.whl"
    with RecordingServer(lambda seen: ranged(seen, wheel)) as server:
        async with IndexClient(f"{server.origin}/simple/") as client:
            file = DistributionFile(filename=filename, url=f"{server.origin}/files/{filename}")
            with pytest.raises(IndexLimitError, match=rf"\({bound}\)"):
                await client.get_wheel_metadata(file)
        assert all(s.headers.get("range") for s in server.seen)


# --- credentials on every request to the index's origin ---------------------------------------


def test_with_deps_sends_the_index_password_on_ranged_reads_and_nowhere_else(
    tmp_path: Path,
) -> None:
    """The index wants a password for everything; the dependency's files live on another host."""
    app = make_wheel("app", "1.0", requires=("dep>=1",))
    dep = make_wheel("dep", "2.0")
    expected = "Basic " + base64.b64encode(b"me:s3cret").decode()

    def cdn(seen: Seen) -> Reply:
        if seen.path == f"/cdn/{dep.filename}":
            return ranged(seen, dep.data)
        return Reply(404)

    with RecordingServer(cdn) as files:

        def index(seen: Seen) -> Reply:
            if seen.headers.get("authorization") != expected:
                return Reply(401, [("WWW-Authenticate", 'Basic realm="index"')])
            if seen.path == "/simple/app/":
                # no core-metadata: the resolver reads the wheel's METADATA with ranges
                return project_page(
                    "app", [file_entry(app.filename, f"/files/{app.filename}", app.data)]
                )
            if seen.path == "/simple/dep/":
                url = f"{files.origin}/cdn/{dep.filename}"
                return project_page("dep", [file_entry(dep.filename, url, dep.data)])
            if seen.path == f"/files/{app.filename}":
                return ranged(seen, app.data)
            return Reply(404)

        with RecordingServer(index) as server:
            result = oci_pypi(
                "sync", "app", "--with-deps", "--json", "--to", "oci:m",
                "--index-url", f"http://me:s3cret@127.0.0.1:{server.port}/simple/", cwd=tmp_path,
            )  # fmt: skip
            to_index = list(server.seen)
        to_files = list(files.seen)
    assert result.returncode == 0, result.stderr
    assert sorted(f["filename"] for f in json.loads(result.stdout)["files"]) == [
        app.filename,
        dep.filename,
    ]
    ranges = [s for s in to_index if s.headers.get("range")]
    assert ranges, "the resolver read app's METADATA with range requests"
    assert all(s.authorization == expected for s in to_index)
    assert to_files
    assert all(s.authorization is None for s in to_files)


@pytest.mark.parametrize("wrapped", [True, False])
async def test_a_deflate_page_is_read_zlib_wrapped_or_raw(wrapped: bool) -> None:
    page = json.dumps({"meta": {"api-version": "1.1"}, "name": "tool", "files": []}).encode()
    packer = zlib.compressobj(wbits=zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
    body = packer.compress(page) + packer.flush()
    reply = Reply(200, [("Content-Type", JSON), ("Content-Encoding", "deflate")], body)
    with RecordingServer(lambda seen: reply) as server:
        async with IndexClient(f"{server.origin}/simple/") as client:
            found = await client.get_project_page("tool")
        (request,) = server.seen
    assert found.name == "tool"
    assert request.headers["accept-encoding"] == "gzip, deflate"


async def test_an_encoding_not_asked_for_is_an_index_error() -> None:
    error = await _page_error(
        Reply(200, [("Content-Type", JSON), ("Content-Encoding", "br")], b"?")
    )
    assert "content encoding 'br' is not one this tool asked for" in str(error)
