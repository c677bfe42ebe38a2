"""The fault proxy itself: faithful pass-through to the real registry, and each fault kind."""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fault_proxy import Fault, FaultProxy, Rule
from fixture_index import FixtureFile, FixtureIndex, serve_index
from registry_server import RegistryServer, running_registry

from oci_pypi_sync.stores.registry import RegistryStore, upload_url

BLOB = bytes(range(256)) * 4096 * 3  # 3 MiB
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
FILE = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(8192))  # 256 KiB


@pytest.fixture(scope="module")
def index() -> Iterator[FixtureIndex]:
    fixture = FixtureIndex()
    fixture.add("proxied", FixtureFile("proxied-1.0.tar.gz", FILE))
    with serve_index(fixture):
        yield fixture


@pytest.fixture
def index_proxy(index: FixtureIndex) -> Iterator[FaultProxy]:
    with FaultProxy(index.url) as proxy:
        yield proxy


FILE_PATH = "/files/proxied-1.0.tar.gz"


async def _chunks(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


# --- pass-through -------------------------------------------------------------------


@pytest.mark.registry
async def test_blob_upload_passes_through_and_reads_back(registry: RegistryServer) -> None:
    with FaultProxy(registry.url) as proxy:
        async with RegistryStore(proxy.host, "proxied", plain_http=True) as store:
            await store.put_blob("a", BLOB_DIGEST, len(BLOB), _chunks(BLOB))
            # size unknown: a chunked request body
            await store.put_blob("b", BLOB_DIGEST, None, _chunks(BLOB))
            assert await store.has_blob("a", BLOB_DIGEST)
        puts = proxy.seen("PUT", r"/v2/proxied/./blobs/uploads/")
        assert [r.status for r in puts] == [201, 201]
        assert all(r.fault is None for r in proxy.records)
        # the upload session's absolute Location pointed back at the proxy
        assert [r.method for r in proxy.seen(path="/blobs/")] == [
            "POST",
            "PUT",
            "POST",
            "PUT",
            "HEAD",
        ]
    async with RegistryStore(registry.host, "proxied", plain_http=True) as direct:
        for repo in ("a", "b"):
            data = b"".join([chunk async for chunk in direct.open_blob(repo, BLOB_DIGEST)])
            assert hashlib.sha256(data).hexdigest() == BLOB_DIGEST.removeprefix("sha256:")
            assert data == BLOB


@pytest.mark.registry
def test_headers_pass_through(registry: RegistryServer) -> None:
    with FaultProxy(registry.url) as proxy, httpx.Client(base_url=proxy.url) as client:
        opened = client.post("/v2/proxied/headers/blobs/uploads/")
        assert opened.status_code == 202
        location = opened.headers["Location"]
        assert location.startswith(f"{proxy.url}/v2/proxied/headers/blobs/uploads/")
        chunk = client.patch(
            location,
            content=BLOB[:1000],
            headers={"Content-Type": "application/octet-stream", "Content-Range": "0-999"},
        )
        assert chunk.status_code == 202
        assert chunk.headers["Range"] == "0-999"
        location = chunk.headers["Location"]
        assert location.startswith(proxy.url)
        done = client.put(
            upload_url(location, "", "sha256:" + hashlib.sha256(BLOB[:1000]).hexdigest()),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert done.status_code == 201
        digest = done.headers["Docker-Content-Digest"]
        assert digest == "sha256:" + hashlib.sha256(BLOB[:1000]).hexdigest()
        ranged = client.get(f"/v2/proxied/headers/blobs/{digest}", headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206
        assert ranged.headers["Content-Range"] == "bytes 10-19/1000"
        assert ranged.content == BLOB[10:20]
        head = client.head(f"/v2/proxied/headers/blobs/{digest}")
        assert head.status_code == 200
        assert head.headers["Content-Length"] == "1000"
        assert head.content == b""
        deleted = client.delete(f"/v2/proxied/headers/blobs/{digest}")
        assert deleted.status_code == 202
        assert client.head(f"/v2/proxied/headers/blobs/{digest}").status_code == 404
    assert [r.method for r in proxy.records] == [
        "POST",
        "PATCH",
        "PUT",
        "GET",
        "HEAD",
        "DELETE",
        "HEAD",
    ]


@pytest.mark.registry
def test_auth_challenge_passes_through(tmp_path: Path) -> None:
    with (
        running_registry(tmp_path / "auth", htpasswd={"alice": "s3cret"}) as secured,
        FaultProxy(secured.url) as proxy,
    ):
        anonymous = httpx.get(f"{proxy.url}/v2/", timeout=5)
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="oci-pypi-test"'
        signed_in = httpx.get(f"{proxy.url}/v2/", auth=("alice", "s3cret"), timeout=5)
        assert signed_in.status_code == 200
    assert [r.status for r in proxy.records] == [401, 200]


@pytest.mark.registry
def test_skopeo_reads_a_manifest_through_the_proxy(registry: RegistryServer) -> None:
    config = b"{}"
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = (
        '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
        '"config":{"mediaType":"application/vnd.oci.empty.v1+json",'
        f'"digest":"{config_digest}","size":2}},"layers":[]}}'
    ).encode()
    with FaultProxy(registry.url) as proxy:
        with httpx.Client(base_url=proxy.url) as client:
            opened = client.post("/v2/proxied/skopeo/blobs/uploads/")
            stored = client.put(
                upload_url(opened.headers["Location"], "", config_digest),
                content=config,
                headers={"Content-Type": "application/octet-stream"},
            )
            assert stored.status_code == 201
            tagged = client.put(
                "/v2/proxied/skopeo/manifests/v1",
                content=manifest,
                headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
            )
            assert tagged.status_code == 201
        raw = subprocess.run(
            [
                "skopeo",
                "inspect",
                "--raw",
                "--tls-verify=false",
                f"docker://{proxy.host}/proxied/skopeo:v1",
            ],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    assert raw == manifest
    assert proxy.seen("GET", "/manifests/v1")[-1].status == 200


# --- faults seen by a plain client ----------------------------------------------------


def test_pass_through_of_a_file(index_proxy: FaultProxy) -> None:
    response = httpx.get(index_proxy.url + FILE_PATH, timeout=5)
    assert response.status_code == 200
    assert response.content == FILE
    assert index_proxy.records[-1].status == 200
    assert index_proxy.records[-1].fault is None


def test_reset_before_any_response(index_proxy: FaultProxy) -> None:
    index_proxy.add(Rule(Fault.reset(), "GET", "proxied-1.0"))
    with httpx.Client(timeout=5) as client:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            client.get(index_proxy.url + FILE_PATH)
        assert client.get(index_proxy.url + FILE_PATH).content == FILE
    assert [(r.status, r.fault) for r in index_proxy.records] == [(None, "reset"), (200, None)]


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors(index_proxy: FaultProxy, status: int) -> None:
    index_proxy.add(Rule(Fault.error(status), "GET", r"\.tar\.gz$", times=2))
    with httpx.Client(timeout=5) as client:
        statuses = [client.get(index_proxy.url + FILE_PATH).status_code for _ in range(3)]
    assert statuses == [status, status, 200]
    assert [r.fault for r in index_proxy.records] == [f"status {status}"] * 2 + [None]


def test_too_many_requests_with_retry_after(index_proxy: FaultProxy) -> None:
    index_proxy.add(Rule(Fault.too_many(retry_after=7), "GET"))
    with httpx.Client(timeout=5) as client:
        first = client.get(index_proxy.url + FILE_PATH)
        second = client.get(index_proxy.url + FILE_PATH)
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "7"
    assert second.status_code == 200
    assert second.content == FILE


def test_head_gets_an_error_status_without_a_body(index_proxy: FaultProxy) -> None:
    index_proxy.add(Rule(Fault.unavailable(retry_after=2), "HEAD"))
    with httpx.Client(timeout=5) as client:
        first = client.head(index_proxy.url + FILE_PATH)
        second = client.head(index_proxy.url + FILE_PATH)
    assert (first.status_code, first.headers["Retry-After"], first.content) == (503, "2", b"")
    assert (second.status_code, second.headers["Content-Length"]) == (200, str(len(FILE)))


def _read_into(response: httpx.Response, received: bytearray) -> None:
    for chunk in response.iter_raw():
        received += chunk


def test_truncated_body(index_proxy: FaultProxy) -> None:
    index_proxy.add(Rule(Fault.truncate(), "GET", "proxied"))
    received = bytearray()
    with (
        httpx.Client(timeout=5) as client,
        client.stream("GET", index_proxy.url + FILE_PATH) as response,
    ):
        assert response.headers["Content-Length"] == str(len(FILE))
        with pytest.raises(httpx.RemoteProtocolError):
            _read_into(response, received)
    assert bytes(received) == FILE[: len(FILE) // 2]
    assert index_proxy.records[-1] == index_proxy.faulted()[-1]
    assert index_proxy.records[-1].fault == "truncate"


def test_stall_then_close(index_proxy: FaultProxy) -> None:
    index_proxy.add(Rule(Fault.stall(0.5), "GET"))
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(index_proxy.url + FILE_PATH, timeout=5)
    assert index_proxy.records[-1].fault == "stall 0.5s then close"


def test_stall_longer_than_the_client_timeout(index_proxy: FaultProxy) -> None:
    index_proxy.add(Rule(Fault.stall(2, then="continue"), "GET"))
    # The response would come whole after the stall: a timeout shows the client
    # gave up while the proxy was still holding it back.
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(index_proxy.url + FILE_PATH, timeout=0.3)


def test_stall_then_continue(index_proxy: FaultProxy) -> None:
    index_proxy.add(Rule(Fault.stall(0.4, then="continue"), "GET"))
    response = httpx.get(index_proxy.url + FILE_PATH, timeout=5)
    assert response.content == FILE
    assert index_proxy.records[-1].fault == "stall 0.4s then continue"


def test_stall_in_the_middle_of_the_body(index_proxy: FaultProxy) -> None:
    index_proxy.add(Rule(Fault.stall(2, then="close", after_bytes=1000), "GET"))
    received = bytearray()
    with (
        httpx.Client(timeout=httpx.Timeout(5, read=0.3)) as client,
        client.stream("GET", index_proxy.url + FILE_PATH) as response,
    ):
        assert response.status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            _read_into(response, received)
    assert bytes(received) == FILE[:1000]


@pytest.mark.registry
def test_reset_in_the_middle_of_an_upload(registry: RegistryServer) -> None:
    rule = Rule(Fault.reset_upload(), "PUT", "/blobs/uploads/")
    with FaultProxy(registry.url, [rule]) as proxy, httpx.Client(timeout=10) as client:
        opened = client.post(f"{proxy.url}/v2/proxied/cut/blobs/uploads/")
        with pytest.raises((httpx.WriteError, httpx.ReadError, httpx.RemoteProtocolError)):
            client.put(
                upload_url(opened.headers["Location"], "", BLOB_DIGEST),
                content=BLOB,
                headers={"Content-Type": "application/octet-stream"},
            )
        assert client.head(f"{proxy.url}/v2/proxied/cut/blobs/{BLOB_DIGEST}").status_code == 404
        # a fresh session goes through
        opened = client.post(f"{proxy.url}/v2/proxied/cut/blobs/uploads/")
        done = client.put(
            upload_url(opened.headers["Location"], "", BLOB_DIGEST),
            content=BLOB,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert done.status_code == 201
    assert [(r.method, r.status, r.fault) for r in proxy.records] == [
        ("POST", 202, None),
        ("PUT", None, "reset_upload"),
        ("HEAD", 404, None),
        ("POST", 202, None),
        ("PUT", 201, None),
    ]


@pytest.mark.registry
def test_a_fault_the_client_did_not_let_act_stays_for_the_next_request(
    registry: RegistryServer,
) -> None:
    def abandoned() -> Iterator[bytes]:
        yield BLOB[:1000]
        raise RuntimeError("the source of the body failed")

    rule = Rule(Fault.reset_upload(), "PUT", "/blobs/uploads/")
    with FaultProxy(registry.url, [rule]) as proxy, httpx.Client(timeout=10) as client:
        url = f"{proxy.url}/v2/proxied/abandoned/blobs/uploads/"
        location = client.post(url).headers["Location"]
        with pytest.raises(RuntimeError, match="source of the body"):
            client.put(
                upload_url(location, "", BLOB_DIGEST),
                content=abandoned(),
                headers={"Content-Length": str(len(BLOB))},
            )
        location = client.post(url).headers["Location"]
        with pytest.raises((httpx.WriteError, httpx.ReadError, httpx.RemoteProtocolError)):
            client.put(upload_url(location, "", BLOB_DIGEST), content=BLOB)
        for _ in range(50):  # the abandoned request's thread notices the client left
            if proxy.seen("PUT")[0].status is None and rule.injected == 1:
                break
            time.sleep(0.02)
    assert [(r.method, r.status, r.fault) for r in proxy.records] == [
        ("POST", 202, None),
        ("PUT", None, None),
        ("POST", 202, None),
        ("PUT", None, "reset_upload"),
    ]
    assert rule.injected == 1


@pytest.mark.registry
def test_reset_after_the_upstream_took_the_request(registry: RegistryServer) -> None:
    """The request takes effect upstream; only the answer is lost."""
    rule = Rule(Fault.reset(forward=True), "PUT")
    with FaultProxy(registry.url, [rule]) as proxy, httpx.Client(timeout=10) as client:
        opened = client.post(f"{proxy.url}/v2/proxied/lost/blobs/uploads/")
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            client.put(
                upload_url(opened.headers["Location"], "", BLOB_DIGEST),
                content=BLOB,
                headers={"Content-Type": "application/octet-stream"},
            )
        assert client.head(f"{proxy.url}/v2/proxied/lost/blobs/{BLOB_DIGEST}").status_code == 200
    assert [r.status for r in proxy.records] == [202, None, 200]


# --- bounds -------------------------------------------------------------------------


def test_counts_are_bounded_and_rules_are_matched_by_method_and_path(
    index_proxy: FaultProxy,
) -> None:
    index_proxy.add(Rule(Fault.error(500), "HEAD", "proxied", times=5))
    index_proxy.add(Rule(Fault.error(503), "GET", r"^/simple/", times=1))
    with httpx.Client(timeout=5) as client:
        file_statuses = [client.get(index_proxy.url + FILE_PATH).status_code for _ in range(3)]
        page_statuses = [
            client.get(index_proxy.url + "/simple/proxied/").status_code for _ in range(2)
        ]
    assert file_statuses == [200, 200, 200]
    assert page_statuses == [503, 200]
    assert len(index_proxy.faulted()) == 1


def _seeded_pattern(index_proxy: FaultProxy, seed: int) -> list[int]:
    index_proxy.clear()
    index_proxy.add(Rule(Fault.error(500), "GET", probability=0.5, seed=seed, times=4))
    with httpx.Client(timeout=5) as client:
        return [client.get(index_proxy.url + FILE_PATH).status_code for _ in range(16)]


def test_probability_is_seeded_and_bounded(index_proxy: FaultProxy) -> None:
    first = _seeded_pattern(index_proxy, seed=7)
    again = _seeded_pattern(index_proxy, seed=7)
    other = _seeded_pattern(index_proxy, seed=8)
    assert first == again
    assert first != other
    assert first.count(500) == 4
    assert other.count(500) == 4
    assert first[-4:] == [200] * 4


def test_upstream_must_be_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("http://192.0.2.1:80")
