"""RegistryStore against a real Distribution registry, read back with skopeo and oras-py."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import oras.client
import pytest
from registry_server import RegistryServer, free_port
from scripted_server import answering

from oci_pypi_sync.errors import (
    AuthenticationError,
    DigestMismatchError,
    RegistryError,
    RegistryUnreachableError,
    SizeMismatchError,
)
from oci_pypi_sync.stores import registry as registry_module
from oci_pypi_sync.stores.credentials import CredentialStore
from oci_pypi_sync.stores.http import HttpClient
from oci_pypi_sync.stores.protocols import Store
from oci_pypi_sync.stores.registry import (
    RegistryStore,
    UploadRestartError,
    describe_failure,
    parse_error_body,
    repository_name,
    upload_url,
)

pytestmark = pytest.mark.registry

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
WHEEL = "application/vnd.pypi.wheel.v1+zip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_body(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


async def chunked(data: bytes, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


def as_store(store: RegistryStore) -> Store:
    """Type-checked by mypy: RegistryStore implements the Store protocol."""
    return store


@pytest.fixture
def prefix() -> str:
    """A fresh prefix per test, so tests sharing the registry never see each other."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def store(registry: RegistryServer, prefix: str) -> AsyncIterator[RegistryStore]:
    async with RegistryStore(
        registry.host, prefix, plain_http=True, credentials=CredentialStore.empty()
    ) as opened:
        yield opened


# --- pure helpers ------------------------------------------------------------------


def test_repository_name_joins_prefix() -> None:
    assert repository_name("pypi", "six") == "pypi/six"
    assert repository_name("/mirror/pypi/", "six") == "mirror/pypi/six"
    assert repository_name("", "six") == "six"


def test_upload_url_resolves_and_appends_digest() -> None:
    base = "http://127.0.0.1:5000/v2/pypi/six/blobs/uploads/"
    assert upload_url(base, "/v2/pypi/six/blobs/uploads/u1?_state=ab%3D") == (
        "http://127.0.0.1:5000/v2/pypi/six/blobs/uploads/u1?_state=ab%3D"
    )
    assert upload_url(base, "u2", "sha256:ab") == (
        "http://127.0.0.1:5000/v2/pypi/six/blobs/uploads/u2?digest=sha256%3Aab"
    )
    assert upload_url(base, "/up?_state=x", "sha256:ab") == (
        "http://127.0.0.1:5000/up?_state=x&digest=sha256%3Aab"
    )
    assert upload_url(base, "https://storage.test/u3", None) == "https://storage.test/u3"
    assert upload_url(f"{base}u4?_state=x", "", "sha256:ab") == (
        "http://127.0.0.1:5000/v2/pypi/six/blobs/uploads/u4?_state=x&digest=sha256%3Aab"
    )


def test_parse_error_body() -> None:
    body = b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown","detail":{}}]}'
    assert parse_error_body(body) == ("BLOB_UNKNOWN", "blob unknown")
    assert parse_error_body(b"<html>bad gateway</html>") == (None, None)
    assert parse_error_body(b'{"errors":[]}') == (None, None)


def test_describe_failure_messages() -> None:
    body = b'{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry"}]}'
    error = describe_failure("127.0.0.1:5000", "manifest", "pypi/six:1.17.0", 400, body)
    assert type(error) is RegistryError
    assert str(error) == (
        "registry 127.0.0.1:5000 refused manifest pypi/six:1.17.0: "
        "MANIFEST_BLOB_UNKNOWN (blob unknown to registry)"
    )
    assert (error.status, error.code) == (400, "MANIFEST_BLOB_UNKNOWN")
    plain = describe_failure("h:1", "blob", "a@sha256:0", 502, b"", reason="Bad Gateway")
    assert str(plain) == "registry h:1 refused blob a@sha256:0: HTTP 502 Bad Gateway"
    denied = describe_failure("h:1", "blob", "a@sha256:0", 401, b"", has_credentials=True)
    assert isinstance(denied, AuthenticationError)
    assert denied.code == "UNAUTHORIZED"
    assert "credentials configured for it were not accepted" in str(denied)


# --- blobs --------------------------------------------------------------------------


async def test_streamed_blob_push_head_and_read_back(store: RegistryStore) -> None:
    data = make_body(5 * 1024 * 1024 + 123)
    digest = sha256(data)
    assert await store.has_blob("six", digest) is False
    await store.put_blob("six", digest, len(data), chunked(data))
    assert await store.has_blob("six", digest) is True
    assert await store.has_blob("other", digest) is False
    pieces = [piece async for piece in store.open_blob("six", digest)]
    assert b"".join(pieces) == data
    assert store.chunked_uploads is False


async def test_unknown_size_streams_chunked(store: RegistryStore) -> None:
    data = make_body(1_500_000, seed=11)
    digest = sha256(data)
    await as_store(store).put_blob("six", digest, None, chunked(data))
    assert b"".join([c async for c in store.open_blob("six", digest)]) == data
    wrong = sha256(b"else")
    with pytest.raises(DigestMismatchError):
        await store.put_blob("six", wrong, None, chunked(data))
    assert await store.has_blob("six", wrong) is False


async def test_wrong_digest_is_refused_and_nothing_is_stored(store: RegistryStore) -> None:
    data = make_body(300_000, seed=1)
    claimed = sha256(b"something else")
    with pytest.raises(DigestMismatchError) as caught:
        await store.put_blob("six", claimed, len(data), chunked(data))
    assert caught.value.expected == claimed
    assert caught.value.actual == sha256(data)
    assert f"/six@{claimed}" in str(caught.value)
    assert await store.has_blob("six", claimed) is False
    assert await store.has_blob("six", sha256(data)) is False


async def test_wrong_size_is_refused_and_nothing_is_stored(store: RegistryStore) -> None:
    data = make_body(200_000, seed=2)
    digest = sha256(data)
    with pytest.raises(SizeMismatchError) as short:
        await store.put_blob("six", digest, len(data) + 10, chunked(data))
    assert (short.value.expected, short.value.actual) == (len(data) + 10, len(data))
    with pytest.raises(SizeMismatchError) as long:
        await store.put_blob("six", digest, len(data) - 10, chunked(data))
    assert long.value.expected == len(data) - 10
    assert await store.has_blob("six", digest) is False


async def test_registry_digest_check_maps_to_digest_mismatch(
    store: RegistryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With our own check bypassed, the registry's DIGEST_INVALID still stops the blob."""

    async def unchecked(
        chunks: AsyncIterator[bytes], digest: str, size: int | None, what: str
    ) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            yield chunk

    monkeypatch.setattr(registry_module, "verified_stream", unchecked)
    data = make_body(100_000, seed=3)
    claimed = sha256(b"not these bytes")
    with pytest.raises(DigestMismatchError) as caught:
        await store.put_blob("six", claimed, len(data), chunked(data))
    assert "checked by registry" in str(caught.value)
    assert await store.has_blob("six", claimed) is False


async def test_put_blob_bytes_verifies_locally(store: RegistryStore) -> None:
    with pytest.raises(DigestMismatchError):
        await store.put_blob_bytes("six", sha256(b"a"), b"b")
    await store.put_blob_bytes("six", EMPTY_DIGEST, b"{}")
    assert await store.has_blob("six", EMPTY_DIGEST) is True
    assert b"".join([c async for c in store.open_blob("six", EMPTY_DIGEST)]) == b"{}"


async def test_mount_across_repositories(store: RegistryStore) -> None:
    data = make_body(70_000, seed=4)
    digest = sha256(data)
    await store.put_blob_bytes("six", digest, data)
    assert await store.mount_blob("copy", digest, "six") is True
    assert await store.has_blob("copy", digest) is True
    missing = sha256(b"never pushed")
    assert await store.mount_blob("copy", missing, "six") is False
    assert await store.has_blob("copy", missing) is False


async def test_open_missing_blob_raises(store: RegistryStore) -> None:
    missing = sha256(b"nothing")
    with pytest.raises(RegistryError) as caught:
        async for _ in store.open_blob("six", missing):
            pass
    assert caught.value.status == 404
    assert caught.value.code == "BLOB_UNKNOWN"
    assert f"/six@{missing}" in str(caught.value)


# --- request-size caps: chunked uploads ----------------------------------------------


class CappingProxy:
    """Forwards to the real registry but answers 413 to any body over ``limit`` bytes.

    A loopback server of its own in front of the registry; the ``Host`` header
    is passed on, so the registry's upload locations point back at the proxy.
    """

    def __init__(self, upstream: str, limit: int) -> None:
        self.limit = limit
        self.calls: list[tuple[str, int]] = []
        self._upstream_url = upstream
        self._upstream = httpx.AsyncClient()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        length = int(request.headers.get("Content-Length") or 0)
        self.calls.append((request.method, length))
        if length > self.limit:
            return httpx.Response(413, text="request entity too large")
        target = f"{self._upstream_url}{request.url.raw_path.decode()}"
        upstream = await self._upstream.request(
            request.method, target, headers=request.headers, content=request.content
        )
        return httpx.Response(
            upstream.status_code, headers=upstream.headers, content=upstream.content
        )


@pytest.fixture
async def capped(
    registry: RegistryServer, prefix: str
) -> AsyncIterator[tuple[RegistryStore, CappingProxy]]:
    proxy = CappingProxy(registry.url, limit=256 * 1024)
    async with (
        answering(proxy) as server,
        RegistryStore(
            server.url.removeprefix("http://"),
            prefix,
            plain_http=True,
            credentials=CredentialStore.empty(),
            chunk_size=200 * 1024,
        ) as opened,
    ):
        yield opened, proxy
    await proxy._upstream.aclose()


async def test_413_falls_back_to_chunks_with_a_fresh_stream(
    capped: tuple[RegistryStore, CappingProxy],
) -> None:
    store, proxy = capped
    data = make_body(1_000_000, seed=5)
    digest = sha256(data)
    await store.put_blob(
        "six", digest, len(data), chunked(data), reopen=lambda: chunked(data, 50_000)
    )
    assert store.chunked_uploads is True
    patches = [length for method, length in proxy.calls if method == "PATCH"]
    assert patches == [200 * 1024] * 4 + [len(data) - 4 * 200 * 1024]
    assert b"".join([c async for c in store.open_blob("six", digest)]) == data


async def test_413_without_reopen_asks_for_a_retry(
    capped: tuple[RegistryStore, CappingProxy],
) -> None:
    store, proxy = capped
    data = make_body(600_000, seed=6)
    digest = sha256(data)
    with pytest.raises(UploadRestartError) as caught:
        await store.put_blob("six", digest, len(data), chunked(data))
    assert caught.value.status == 413
    assert await store.has_blob("six", digest) is False
    await store.put_blob("six", digest, len(data), chunked(data))
    assert await store.has_blob("six", digest) is True
    assert sum(1 for method, _ in proxy.calls if method == "PATCH") == 3


async def test_put_blob_bytes_falls_back_to_chunks_on_413(
    capped: tuple[RegistryStore, CappingProxy],
) -> None:
    store, proxy = capped
    data = make_body(300_000, seed=10)
    await as_store(store).put_blob_bytes("six", sha256(data), data)
    assert store.chunked_uploads is True
    assert [(m, n) for m, n in proxy.calls if m in ("PUT", "PATCH")] == [
        ("PUT", len(data)),
        ("PATCH", 200 * 1024),
        ("PATCH", len(data) - 200 * 1024),
        ("PUT", 0),
    ]
    assert await store.has_blob("six", sha256(data)) is True


async def test_chunked_upload_with_wrong_digest_is_not_committed(
    capped: tuple[RegistryStore, CappingProxy],
) -> None:
    store, _ = capped
    store.chunked_uploads = True
    data = make_body(500_000, seed=8)
    claimed = sha256(b"other")
    with pytest.raises(DigestMismatchError):
        await store.put_blob("six", claimed, len(data), chunked(data))
    assert await store.has_blob("six", claimed) is False
    assert await store.has_blob("six", sha256(data)) is False


# --- manifests -------------------------------------------------------------------------


def artifact_manifest(layer: bytes, title: str) -> bytes:
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": "application/vnd.pypi.distribution.v1",
        "config": {"mediaType": EMPTY, "digest": EMPTY_DIGEST, "size": 2},
        "layers": [
            {
                "mediaType": WHEEL,
                "digest": sha256(layer),
                "size": len(layer),
                "annotations": {"org.opencontainers.image.title": title},
            }
        ],
    }
    return json.dumps(manifest, separators=(",", ":")).encode()


def artifact_index(manifest: bytes) -> bytes:
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [
            {
                "mediaType": MANIFEST,
                "digest": sha256(manifest),
                "size": len(manifest),
                "artifactType": "application/vnd.pypi.distribution.v1",
                "platform": {"os": "linux", "architecture": "amd64"},
            }
        ],
        "annotations": {"org.opencontainers.image.version": "1.17.0"},
    }
    return json.dumps(index, indent=1).encode()


def skopeo_raw(host: str, reference: str) -> bytes:
    done = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{host}/{reference}"],
        capture_output=True,
        check=True,
        timeout=600,
    )
    return done.stdout


@pytest.fixture
def oras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """oras-py reads ~/.docker/config.json: give it an empty home."""
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


async def test_manifest_and_index_round_trip(
    store: RegistryStore, registry: RegistryServer, prefix: str, oras_home: Path
) -> None:
    layer = make_body(400_000, seed=9)
    title = "six-1.17.0-py2.py3-none-any.whl"
    await store.put_blob("six", sha256(layer), len(layer), chunked(layer))
    await store.put_blob_bytes("six", EMPTY_DIGEST, b"{}")
    manifest = artifact_manifest(layer, title)
    index = artifact_index(manifest)

    assert await store.put_manifest("six", sha256(manifest), MANIFEST, manifest) == sha256(manifest)
    assert await store.has_manifest("six", sha256(manifest)) is True
    assert await store.put_manifest("six", "1.17.0", INDEX, index) == sha256(index)
    assert await store.put_manifest("six", "wheel", MANIFEST, manifest) == sha256(manifest)

    by_tag = await store.get_manifest("six", "1.17.0")
    assert by_tag is not None
    assert (by_tag.media_type, by_tag.digest, by_tag.body) == (INDEX, sha256(index), index)
    by_digest = await store.get_manifest("six", sha256(manifest))
    assert by_digest is not None
    assert (by_digest.media_type, by_digest.body) == (MANIFEST, manifest)
    assert await store.get_manifest("six", "2.0") is None
    assert await store.has_manifest("six", sha256(b"no such manifest")) is False

    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is not installed: apt-get update && apt-get install -y skopeo")
    assert skopeo_raw(registry.host, f"{prefix}/six:1.17.0") == index
    assert skopeo_raw(registry.host, f"{prefix}/six@{sha256(manifest)}") == manifest

    client = oras.client.OrasClient(hostname=registry.host, insecure=True)
    outdir = oras_home / "pulled"
    files = client.pull(target=f"{registry.host}/{prefix}/six:wheel", outdir=str(outdir))
    assert [Path(f).name for f in files] == [title]
    assert (outdir / title).read_bytes() == layer


async def test_index_before_its_child_is_refused(store: RegistryStore, prefix: str) -> None:
    layer = b"payload"
    manifest = artifact_manifest(layer, "a.whl")
    with pytest.raises(RegistryError) as caught:
        await store.put_manifest("six", "1.0", INDEX, artifact_index(manifest))
    assert caught.value.status == 400
    assert caught.value.code == "MANIFEST_BLOB_UNKNOWN"
    assert str(caught.value).startswith(
        f"registry {store.host} refused manifest {prefix}/six:1.0: MANIFEST_BLOB_UNKNOWN"
    )
    assert await store.get_manifest("six", "1.0") is None


async def test_manifest_reference_digest_is_checked_before_sending(store: RegistryStore) -> None:
    body = b'{"schemaVersion":2}'
    with pytest.raises(DigestMismatchError):
        await store.put_manifest("six", sha256(b"other"), MANIFEST, body)


async def test_unreachable_registry() -> None:
    host = f"127.0.0.1:{free_port()}"
    async with RegistryStore(
        host, "pypi", plain_http=True, credentials=CredentialStore.empty()
    ) as store:
        with pytest.raises(RegistryUnreachableError) as caught:
            await store.has_blob("six", sha256(b""))
    assert str(caught.value) == f"cannot reach registry {host}: connection refused"
    assert store.display_name == f"{host}/pypi"


async def test_shared_client_is_left_open(registry: RegistryServer) -> None:
    client = HttpClient()
    async with RegistryStore(
        registry.host, "", plain_http=True, credentials=CredentialStore.empty(), http=client
    ) as store:
        assert store.display_name == registry.host
        assert await store.has_blob("six", sha256(b"x")) is False
    # still usable: its owner closes it
    assert (await client.request("GET", f"{registry.url}/v2/")).status_code == 200
    await client.aclose()


async def test_repositories_within_a_page_budget(
    store: RegistryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "_CATALOG_PAGE", 2)
    for name in ("r1", "r2", "r3"):
        await store.put_blob_bytes(name, EMPTY_DIGEST, b"{}")
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.empty.v1+json",
                    "digest": EMPTY_DIGEST,
                    "size": 2,
                },
                "layers": [],
            }
        ).encode()
        await store.put_manifest(name, "1", "application/vnd.oci.image.manifest.v1+json", manifest)
    everything = await store.list_repositories()
    assert {"r1", "r2", "r3"} <= set(everything)
    listed = await store.repositories_within(10_000)  # every page, at 2 per page
    assert listed is not None
    assert {"r1", "r2", "r3"} <= listed
    assert await store.repositories_within(1) is None
