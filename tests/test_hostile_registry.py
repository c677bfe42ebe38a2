"""A hostile registry: manifests and listings bounded, foreign links not followed, blobs raw.

The registry is a recording server on 127.0.0.1 in front of the real
Distribution registry: it forwards what a test does not override, and
records every request, so each test asserts what was sent where.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index
from hostile_server import RecordingServer, Reply, Seen, file_entry, forward, project_page
from registry_server import RegistryServer

from oci_pypi_sync.errors import LimitExceededError, RegistryLimitError
from oci_pypi_sync.limits import MAX_MANIFEST_BYTES
from oci_pypi_sync.stores import registry as registry_module
from oci_pypi_sync.stores.credentials import CredentialStore
from oci_pypi_sync.stores.registry import RegistryStore

MiB = 1024 * 1024


def oci_pypi(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "OCI_PYPI_"))}
    env.update(XDG_STATE_HOME=str(cwd / "state-home"), NO_PROXY="127.0.0.1", HOME=str(cwd))
    return subprocess.run(
        [sys.executable, "-m", "oci_pypi_sync", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def mirrored(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``tool`` 1.0 synced into the real registry; the prefix it is under."""
    fixture = FixtureIndex()
    fixture.add("tool", make_wheel("tool", "1.0"), make_sdist("tool", "1.0"))
    cwd = tmp_path_factory.mktemp("hostile-registry")
    with serve_index(fixture):
        result = oci_pypi(
            "sync", "tool", "--to", f"{registry.host}/hostile", "--index-url", fixture.url, cwd=cwd
        )
    assert result.returncode == 0, result.stderr
    return "hostile"


def hostile(registry: RegistryServer, override: dict[str, Reply] | None = None) -> RecordingServer:
    """A registry in front of the real one; ``override`` answers some paths itself."""
    server: RecordingServer

    async def handle(seen: Seen) -> Reply:
        if override and seen.path in override:
            return override[seen.path]
        return await forward(seen, registry.url, origin=server.origin)

    server = RecordingServer(handle)
    return server


@pytest.fixture
async def store_for() -> AsyncIterator[list[RegistryStore]]:
    opened: list[RegistryStore] = []
    yield opened
    for store in opened:
        await store.aclose()


def open_store(server: RecordingServer, prefix: str, opened: list[RegistryStore]) -> RegistryStore:
    store = RegistryStore(server.host, prefix, plain_http=True, credentials=CredentialStore.empty())
    opened.append(store)
    return store


# --- manifests ------------------------------------------------------------------------------


@pytest.mark.parametrize("with_length", [True, False])
async def test_a_manifest_over_4_mib_is_refused_before_the_digest_check(
    registry: RegistryServer, mirrored: str, store_for: list[RegistryStore], with_length: bool
) -> None:
    size = MAX_MANIFEST_BYTES + MiB
    block = b" " * MiB

    def body() -> Iterator[bytes]:
        yield b'{"schemaVersion": 2, "x": "'
        for _ in range(size // MiB):
            yield block
        yield b'"}'

    headers = [("Content-Type", "application/vnd.oci.image.index.v1+json")]
    if with_length:
        headers.append(("Content-Length", str(size + 29)))
    path = f"/v2/{mirrored}/tool/manifests/1.0"
    with hostile(registry, {path: Reply(200, headers, body())}) as server:
        store = open_store(server, mirrored, store_for)
        with pytest.raises(RegistryLimitError) as caught:
            await store.get_manifest("tool", "1.0")
    assert f"manifest {mirrored}/tool:1.0 exceeds 4,194,304 bytes (MAX_MANIFEST_BYTES)" in str(
        caught.value
    )


async def test_a_manifest_within_the_bound_is_read_through_the_proxy(
    registry: RegistryServer, mirrored: str, store_for: list[RegistryStore]
) -> None:
    with hostile(registry) as server:
        store = open_store(server, mirrored, store_for)
        found = await store.get_manifest("tool", "1.0")
    assert found is not None
    assert json.loads(found.body)["mediaType"] == "application/vnd.oci.image.index.v1+json"


# --- listings ---------------------------------------------------------------------------------


def tags_reply(tags: list[str], link: str | None) -> Reply:
    headers = [("Content-Type", "application/json")]
    if link is not None:
        headers.append(("Link", f'<{link}>; rel="next"'))
    return Reply(200, headers, json.dumps({"name": "x", "tags": tags}).encode())


async def test_a_tag_list_that_links_itself_ends(
    registry: RegistryServer, mirrored: str, store_for: list[RegistryStore]
) -> None:
    path = f"/v2/{mirrored}/tool/tags/list"
    again = tags_reply(["1.0", "2.0"], f"{path}?n=1000&last=1.0")
    with hostile(registry, {path: again}) as server:
        store = open_store(server, mirrored, store_for)
        tags = await store.list_tags("tool")
        asked = server.requests_to(path)
    assert tags == ["1.0", "2.0"]
    assert [s.query for s in asked] == ["n=1000", "n=1000&last=1.0"]


async def test_a_link_to_another_origin_is_not_followed(
    registry: RegistryServer, mirrored: str, store_for: list[RegistryStore]
) -> None:
    with RecordingServer(lambda seen: tags_reply(["9.9"], None)) as elsewhere:
        path = f"/v2/{mirrored}/tool/tags/list"
        foreign = tags_reply(["1.0"], f"{elsewhere.origin}{path}?last=1.0")
        with hostile(registry, {path: foreign}) as server:
            store = open_store(server, mirrored, store_for)
            tags = await store.list_tags("tool")
        assert elsewhere.seen == []
    assert tags == ["1.0"]


async def test_a_catalog_that_never_ends_stops_at_the_page_bound(
    mirrored: str, store_for: list[RegistryStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each page links a new one. The bound is lowered for the test's sake (``nox -s bounds``
    runs the real one): reading 10,000 pages here would take minutes."""
    monkeypatch.setattr(registry_module, "MAX_LISTING_PAGES", 40)

    def endless(seen: Seen) -> Reply:
        page = int(parse_qs(seen.query).get("last", ["0"])[0])
        names = [f"{mirrored}/p{page}"]
        link = f"/v2/_catalog?n=1000&last={page + 1}"
        headers = [("Content-Type", "application/json"), ("Link", f'<{link}>; rel="next"')]
        return Reply(200, headers, json.dumps({"repositories": names}).encode())

    with RecordingServer(endless) as server:
        store = open_store(server, mirrored, store_for)
        with pytest.raises(RegistryLimitError, match=r"40 pages \(MAX_LISTING_PAGES\)"):
            await store.list_repositories()
        assert len(server.seen) == 40


def test_verify_and_ls_end_on_a_catalog_that_links_itself(
    registry: RegistryServer, mirrored: str, tmp_path: Path
) -> None:
    catalog = Reply(
        200,
        [
            ("Content-Type", "application/json"),
            ("Link", '</v2/_catalog?n=1000&last=a>; rel="next"'),
        ],
        json.dumps({"repositories": [f"{mirrored}/tool"]}).encode(),
    )
    tags = tags_reply(["1.0"], f"/v2/{mirrored}/tool/tags/list?n=1000&last=0")
    overrides = {"/v2/_catalog": catalog, f"/v2/{mirrored}/tool/tags/list": tags}
    with hostile(registry, overrides) as server:
        listed = oci_pypi(
            "ls", "tool", "--json", "--from", f"{server.host}/{mirrored}", cwd=tmp_path
        )
        checked = oci_pypi("verify", f"{server.host}/{mirrored}", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [r["version"] for r in json.loads(listed.stdout)] == ["1.0"]
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["ok"] is True


# --- blobs are the bytes stored ------------------------------------------------------------------


def test_a_blob_redirected_to_storage_that_sends_content_encoding_keeps_its_bytes(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """Storage serving a .tar.gz with ``Content-Encoding: gzip``: the blob is its raw bytes."""
    raw = gzip.compress(b"an sdist, gzip-compressed as .tar.gz files are" * 200)
    digest = hashlib.sha256(raw).hexdigest()
    filename = "tool-1.0.tar.gz"

    def index(seen: Seen) -> Reply:
        if seen.path == "/simple/tool/":
            return project_page("tool", [file_entry(filename, f"/files/{filename}", raw)])
        return Reply(200, [], raw) if seen.path == f"/files/{filename}" else Reply(404)

    with RecordingServer(index) as source:
        synced = oci_pypi(
            "sync", "tool", "--to", f"{registry.host}/raw", "--index-url",
            f"{source.origin}/simple/", cwd=tmp_path,
        )  # fmt: skip
    assert synced.returncode == 0, synced.stderr

    def storage(seen: Seen) -> Reply:
        headers = [("Content-Type", "application/x-tar"), ("Content-Encoding", "gzip")]
        return Reply(200, headers, raw)

    with RecordingServer(storage) as bucket:
        signed = f"{bucket.origin}/bucket/{digest}?X-Amz-Signature=SIGSECRET"
        redirect = Reply(307, [("Location", signed)])
        with hostile(registry, {f"/v2/raw/tool/blobs/sha256:{digest}": redirect}) as server:
            copied = oci_pypi("copy", f"{server.host}/raw", "oci:out", "-vv", cwd=tmp_path)
        fetched = list(bucket.seen)
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "out" / "blobs" / "sha256" / digest).read_bytes() == raw
    assert fetched
    assert all(s.headers.get("accept-encoding") == "identity" for s in fetched)
    assert all(s.authorization is None for s in fetched)
    assert "SIGSECRET" not in copied.stderr


# --- answers read whole ---------------------------------------------------------------------


def _blob() -> tuple[str, bytes]:
    data = b"a small blob"
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def _endless_body() -> Iterator[bytes]:
    block = b"x" * MiB
    for _ in range(40):
        yield block


@pytest.mark.parametrize("where", ["upload answer", "token answer"])
async def test_an_answer_read_whole_is_bounded(where: str, store_for: list[RegistryStore]) -> None:
    """An answer to an upload, or a token service's answer, of 40 MB: refused at the bound."""

    def handle(seen: Seen) -> Reply:
        if seen.path == "/token":
            return Reply(200, [("Content-Type", "application/json")], _endless_body())
        if where == "token answer" and seen.authorization is None:
            realm = f'Bearer realm="http://{seen.headers["host"]}/token",service="s"'
            return Reply(401, [("WWW-Authenticate", realm)])
        if seen.method == "POST":
            return Reply(202, [("Location", "/v2/pfx/x/blobs/uploads/u")], _endless_body())
        return Reply(404)

    digest, data = _blob()
    with RecordingServer(handle) as server:
        store = open_store(server, "pfx", store_for)
        with pytest.raises(LimitExceededError, match=r"\(MAX_BUFFERED_BYTES\)"):
            await store.put_blob_bytes("x", digest, data)
